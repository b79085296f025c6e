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
    ``sleep_seconds`` inside the transaction; the checker answers ``check_answer``."""

    key = models.CharField(max_length=64, unique=True)
    fail_times = models.PositiveIntegerField(default=0)
    sleep_seconds = models.FloatField(default=0)
    check_answer = models.CharField(max_length=16, blank=True, default="")


class Attempt(models.Model):
    """Every handler start, committed outside the handler's transaction (so even attempts
    that were rolled back or killed are seen)."""

    key = models.CharField(max_length=64)
    consumer_group = models.CharField(max_length=64)
    pid = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)
