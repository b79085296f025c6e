"""The broker's tables: messages, their keys, their deliveries, and their trace.

State moves are never written here as ``save()`` calls: each is one conditional UPDATE in
the module that owns it (``transitions.py`` for messages, ``delivery.py`` for deliveries).
Every time that is compared (due, claim and check times) is the database's clock
(``txbroker.dbtime``): the columns default to it and the querysets compare with it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from txbroker.ids import new_msg_id


class LocalTransactionState(models.TextChoices):
    COMMIT = "COMMIT", "commit"
    ROLLBACK = "ROLLBACK", "rollback"
    UNKNOWN = "UNKNOWN", "unknown"


class MessageQuerySet(models.QuerySet):
    def half(self) -> MessageQuerySet:
        return self.filter(state=Message.State.HALF)

    def due_for_check(self) -> MessageQuerySet:
        """HALF messages whose next check time has come by the database's clock (served by a
        partial index)."""
        return self.filter(state=Message.State.HALF, next_check_at__lte=Now())

    def with_key(self, key: str) -> MessageQuerySet:
        return self.filter(key_rows__key=key)


class Message(models.Model):
    class State(models.TextChoices):
        HALF = "HALF", "half (prepared)"
        COMMITTED = "COMMITTED", "committed"
        ROLLED_BACK = "ROLLED_BACK", "rolled back"
        DISCARDED = "DISCARDED", "discarded (checks exhausted)"

    # 64: the ids RocketMQ clients give their messages (34 hex digits) fit, as txbroker's (32).
    msg_id = models.CharField(max_length=64, primary_key=True, default=new_msg_id, editable=False)
    topic = models.CharField(max_length=255)
    tag = models.CharField(max_length=255, blank=True, default="")
    # Business keys, as given; ``MessageKey`` rows index them for lookup.
    keys = models.JSONField(default=list, blank=True)
    body = models.JSONField(default=dict, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    producer_group = models.CharField(max_length=255)
    state = models.CharField(max_length=16, choices=State.choices, default=State.HALF)
    check_times = models.PositiveIntegerField(default=0)
    # When the next check-back is due; only meaningful while HALF. While a check pass holds
    # the message, it is the end of that pass's lease (see txbroker.checkback).
    next_check_at = models.DateTimeField(null=True, blank=True)
    # The lease of the check pass holding the message; its answer counts only while it holds.
    check_token = models.CharField(max_length=32, blank=True, default="", db_default="")
    created_at = models.DateTimeField(db_default=Now())
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Ordered messages (RocketMQ 5's message group): within each consumer group, the
    # deliveries of one message group run one at a time, in commit order ('' = unordered).
    message_group = models.CharField(max_length=255, blank=True, default="", db_default="")
    # Delayed messages: no delivery is due before this (database time; None = at once).
    deliver_at = models.DateTimeField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-msg_id"]
        indexes = [
            models.Index(
                fields=["next_check_at"],
                name="txb_msg_half_due",
                condition=Q(state="HALF"),
            ),
            models.Index(fields=["topic", "-created_at"], name="txb_msg_topic_created"),
            models.Index(fields=["-created_at", "-msg_id"], name="txb_msg_created"),
            models.Index(fields=["state", "-created_at"], name="txb_msg_state_created"),
            models.Index(fields=["producer_group", "-created_at"], name="txb_msg_group_created"),
            models.Index(
                fields=["message_group", "-created_at"],
                name="txb_msg_mgroup_created",
                condition=~Q(message_group=""),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["HALF", "COMMITTED", "ROLLED_BACK", "DISCARDED"]),
                name="txb_msg_state_valid",
            ),
            models.CheckConstraint(
                condition=Q(state="HALF", resolved_at__isnull=True) | ~Q(state="HALF"),
                name="txb_msg_half_unresolved",
            ),
        ]
        permissions = [
            ("replay_message", "Can replay messages to consumer groups"),
            ("resolve_message", "Can commit or roll back a HALF message by hand"),
            ("resume_message", "Can resume checking of DISCARDED messages"),
            ("recall_message", "Can recall a delayed message before it is delivered"),
            ("skip_delivery", "Can skip a DEAD delivery that blocks its message group"),
        ]

    def __str__(self) -> str:
        return f"{self.msg_id} {self.topic}:{self.tag} [{self.state}]"


class MessageKey(models.Model):
    """One row per business key of a message, so finding messages by key uses an index."""

    # No index of its own (nor its varchar_pattern_ops twin): the unique (message, key)
    # index serves lookups by message. Every insert pays for each index (see the bench).
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="key_rows", db_index=False)
    key = models.CharField(max_length=255)

    class Meta:
        indexes = [models.Index(fields=["key"], name="txb_key_key")]
        constraints = [models.UniqueConstraint(fields=["message", "key"], name="txb_key_unique_per_message")]

    def __str__(self) -> str:
        return self.key


class DeliveryQuerySet(models.QuerySet):
    def due(self) -> DeliveryQuerySet:
        """Deliveries waiting to run whose time has come by the database's clock (served by
        a partial index)."""
        return self.filter(status__in=Delivery.WAITING, next_attempt_at__lte=Now(), remote=False)

    def claim_expired(self) -> DeliveryQuerySet:
        """Claimed deliveries whose claim ran out (their worker died, froze or is far behind).
        Remote groups' deliveries are not Celery's: txbroker.remote_deliveries takes them back."""
        return self.filter(status=Delivery.Status.RUNNING, claimed_until__lt=Now(), remote=False)

    def dead(self) -> DeliveryQuerySet:
        return self.filter(status=Delivery.Status.DEAD)


class Delivery(models.Model):
    """The consumption state of one message for one consumer group."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "pending"
        RUNNING = "RUNNING", "running (claimed)"
        RETRY = "RETRY", "waiting to retry"
        SUCCEEDED = "SUCCEEDED", "succeeded"
        DEAD = "DEAD", "dead letter"
        RECALLED = "RECALLED", "recalled (never delivered)"
        SKIPPED = "SKIPPED", "skipped by an operator"

    WAITING = (Status.PENDING, Status.RETRY)
    # Done for good: nothing will run them again unless an operator replays them.
    FINAL = (Status.SUCCEEDED, Status.DEAD, Status.RECALLED, Status.SKIPPED)

    # No index of its own: the unique (message, consumer_group) index serves lookups by
    # message. A delivery row is written four times (insert, claim, done): each index costs.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    consumer_group = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Attempts started: counted when a handler starts (committed before it runs), so a
    # message that kills its worker still ends DEAD, and batch-mates claimed with it but
    # never started are not charged for it.
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    # The claim of the worker running it: a token and a deadline.
    claim_token = models.CharField(max_length=32, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    # When the handler started under the current claim (None: claimed, not started yet).
    started_at = models.DateTimeField(null=True, blank=True)
    # Its worker died (or froze) while running its handler: from then on it is claimed
    # alone, so that a message that kills its worker takes no batch-mate down with it.
    run_alone = models.BooleanField(default=False, db_default=False)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    succeeded_at = models.DateTimeField(null=True, blank=True)
    # The handler's time in the attempt that succeeded: with ``succeeded_at`` and
    # ``attempts``, that attempt's line of the trace (no trace row is written for it; see
    # txbroker.trace.with_successes). NULL before this column existed (a trace row then).
    duration_ms = models.FloatField(null=True, blank=True)
    # Copied from the message: '' for unordered deliveries. ``sequence`` is the message's
    # place in its message group, taken when it was committed (txbroker.ordering).
    message_group = models.CharField(max_length=255, blank=True, default="", db_default="")
    sequence = models.BigIntegerField(null=True, blank=True)
    # A consumer group that subscribed over gRPC (RemoteSubscription): its consumers
    # receive this delivery through ReceiveMessage; Celery workers never claim it.
    remote = models.BooleanField(default=False, db_default=False)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["message_id", "consumer_group"]
        constraints = [
            models.UniqueConstraint(fields=["message", "consumer_group"], name="txb_delivery_one_per_group"),
            models.CheckConstraint(
                condition=Q(
                    status__in=["PENDING", "RUNNING", "RETRY", "SUCCEEDED", "DEAD", "RECALLED", "SKIPPED"]
                ),
                name="txb_delivery_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="RUNNING") | Q(claimed_until__isnull=False),
                name="txb_delivery_running_has_claim",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="txb_dlv_waiting_due",
                condition=Q(status__in=["PENDING", "RETRY"], remote=False),
            ),
            # ReceiveMessage's claim: a remote group's due deliveries.
            models.Index(
                fields=["consumer_group", "next_attempt_at"],
                name="txb_dlv_remote_due",
                condition=Q(status__in=["PENDING", "RETRY"], remote=True),
            ),
            # The dashboard's consumed-per-minute (txbroker.selectors.throughput).
            models.Index(
                fields=["succeeded_at"],
                name="txb_dlv_succeeded_at",
                condition=Q(duration_ms__isnull=False),
            ),
            models.Index(
                fields=["claimed_until"],
                name="txb_dlv_running_claim",
                condition=Q(status="RUNNING"),
            ),
            models.Index(
                fields=["consumer_group", "status"],
                name="txb_dlv_open_by_group",
                condition=Q(status__in=["PENDING", "RUNNING", "RETRY", "DEAD"]),
            ),
            models.Index(fields=["consumer_group", "status"], name="txb_dlv_group_status"),
            # The ordered claim's "nothing earlier unfinished in my message group" look-up.
            models.Index(
                fields=["consumer_group", "message_group", "sequence"],
                name="txb_dlv_ordered_open",
                condition=~Q(message_group="") & Q(status__in=["PENDING", "RUNNING", "RETRY", "DEAD"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} -> {self.consumer_group} [{self.status}]"


class TraceEvent(models.Model):
    """One step in a message's life, in order."""

    class Event(models.TextChoices):
        HALF_STORED = "HALF_STORED", "half message stored"
        LOCAL_TRANSACTION = "LOCAL_TRANSACTION", "local transaction answered"
        COMMITTED = "COMMITTED", "committed"
        ROLLED_BACK = "ROLLED_BACK", "rolled back"
        CHECK = "CHECK", "checked back"
        CHECK_SKIPPED = "CHECK_SKIPPED", "check skipped"
        DISCARDED = "DISCARDED", "discarded"
        RESUMED = "RESUMED", "resumed"
        DELIVERY_ATTEMPT = "DELIVERY_ATTEMPT", "delivery attempt"
        DEAD = "DEAD", "dead letter"
        REPLAY = "REPLAY", "replayed"
        RECLAIMED = "RECLAIMED", "claim expired, taken back"
        RELEASED = "RELEASED", "claim released"
        RECALLED = "RECALLED", "recalled"
        SKIPPED = "SKIPPED", "skipped"
        REFUSED = "REFUSED", "transition refused"

    class Outcome(models.TextChoices):
        SUCCEEDED = "SUCCEEDED", "succeeded"
        FAILED = "FAILED", "failed"

    # No index of its own: txb_trace_message (message, id) serves lookups by message.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="trace", db_index=False)
    at = models.DateTimeField(db_default=Now())
    event = models.CharField(max_length=32, choices=Event.choices)
    consumer_group = models.CharField(max_length=255, blank=True, default="")
    detail = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    # How the attempt a DELIVERY_ATTEMPT row records ended (blank on every other row): what
    # the dashboard's throughput counts.
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True, default="", db_default="")

    class Meta:
        ordering = ["message_id", "id"]
        indexes = [
            models.Index(fields=["message", "id"], name="txb_trace_message"),
            # The dashboard's per-minute throughput (commits, attempts) over the last hour.
            models.Index(fields=["event", "at"], name="txb_trace_event_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%H:%M:%S.%f} {self.event} {self.detail[:60]}"


class RemoteSubscription(models.Model):
    """A consumer group subscribed to a topic over gRPC (RocketMQ 5 clients, issue 15): a
    consumer group of txbroker whose deliveries (``Delivery.remote``) its clients receive
    with ReceiveMessage. Recorded from the client's settings on its telemetry stream."""

    consumer_group = models.CharField(max_length=255)
    topic = models.CharField(max_length=255)
    # '*' or 'a || b' (RocketMQ's TAG filter; SQL92 filters are refused).
    tag_expression = models.CharField(max_length=1000, default="*")
    # FIFO group: the deliveries of one message group are received one at a time, in order.
    fifo = models.BooleanField(default=False)
    # Attempts (the first included) before a delivery is DEAD, and the delays between them.
    max_attempts = models.PositiveIntegerField(default=17)
    backoff = models.JSONField(default=list, blank=True)
    # The last client that subscribed (its id and address), for operators.
    client_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["topic", "consumer_group"]
        constraints = [
            models.UniqueConstraint(fields=["consumer_group", "topic"], name="txb_remote_sub_unique"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="txb_remote_sub_attempts"),
        ]

    def __str__(self) -> str:
        return f"{self.consumer_group} <- {self.topic}:{self.tag_expression}"


class MessageGroupHead(models.Model):
    """The last commit sequence given to a message group. Committing an ordered message
    takes the next one with an upsert inside the committing transaction, whose row lock
    serializes concurrent commits of one group: sequence order is commit order."""

    message_group = models.CharField(max_length=255, primary_key=True)
    last_sequence = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.message_group} @ {self.last_sequence}"


class WakeupMark(models.Model):
    """ "A delivery wake-up is queued and has not started": one row (id 1), for brokers other
    than Redis (see txbroker.wakeup). ``queued_at`` is the database's time of the publish
    it stands for; NULL once a delivery task started."""

    id = models.PositiveSmallIntegerField(primary_key=True)
    queued_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"wake-up queued at {self.queued_at}" if self.queued_at else "no wake-up queued"


# --- operator views (admin only: proxies, no tables) ---------------------------------------
class DeadLetterQuerySet(DeliveryQuerySet):
    pass


class DeadLetterManager(models.Manager.from_queryset(DeadLetterQuerySet)):
    def get_queryset(self) -> DeadLetterQuerySet:
        return super().get_queryset().filter(status=Delivery.Status.DEAD)


class DeadLetter(Delivery):
    """A DEAD delivery, as the admin's per-group dead-letter queue shows it."""

    objects = DeadLetterManager()

    class Meta:
        proxy = True
        verbose_name = "dead letter"
        ordering = ["-updated_at", "-id"]


class Dashboard(Message):
    """The admin's dashboard page (a proxy only so that the admin index links to it)."""

    class Meta:
        proxy = True
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"


# The gRPC clients (txbroker.grpcapi), defined beside the code that serves them.
from txbroker.grpcapi.models import GrpcClient  # noqa: E402, F401
