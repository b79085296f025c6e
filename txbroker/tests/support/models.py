from django.db import models


class LocalRecord(models.Model):
    """What a test producer's local transaction writes; the checker looks for it."""

    key = models.CharField(max_length=64, unique=True)


class Effect(models.Model):
    """One row per (key, consumer group); ``count`` > 1 would be a doubled effect."""

    key = models.CharField(max_length=64)
    consumer_group = models.CharField(max_length=64)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "consumer_group"], name="support_effect_once")]


class Plan(models.Model):
    """How a test handler behaves for a key: fail its first ``fail_times`` attempts, sleep
    ``sleep_seconds`` inside the transaction (first attempt), lock the ``Shared`` row named
    ``shared_lock`` first, or kill its worker on every attempt (``kill_worker``).

    The checker answers ``check_answer``: COMMIT, ROLLBACK or UNKNOWN; RAISE raises; BLOCK
    blocks for a minute; LOCK takes this plan's row lock (as the payments checker takes
    the order's) and then answers from the local record; SLEEP notes its start and sleeps
    ``sleep_seconds`` inside its transaction, then answers from the local record."""

    key = models.CharField(max_length=64, unique=True)
    fail_times = models.PositiveIntegerField(default=0)
    sleep_seconds = models.FloatField(default=0)
    check_answer = models.CharField(max_length=16, blank=True, default="")
    kill_worker = models.BooleanField(default=False)
    shared_lock = models.CharField(max_length=64, blank=True, default="")


class Shared(models.Model):
    """A row several handlers update (a balance, say): its row lock serializes them."""

    name = models.CharField(max_length=64, unique=True)
    hits = models.PositiveIntegerField(default=0)


class Attempt(models.Model):
    """Every handler start, committed outside the handler's transaction (so even attempts
    that were rolled back or killed are seen)."""

    key = models.CharField(max_length=64)
    consumer_group = models.CharField(max_length=64)
    pid = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)
