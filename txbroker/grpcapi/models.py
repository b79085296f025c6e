"""The gRPC clients txbroker knows: one row per client and group (a producer is a member of
the producer group of each topic it publishes, as in RocketMQ 5's proxy; a consumer of its
consumer group). Imported by txbroker.models: part of txbroker's tables."""

from __future__ import annotations

from django.db import models
from django.db.models import Case, Count, Q, Value, When
from django.db.models.functions import Now


class GrpcClientQuerySet(models.QuerySet):
    def live(self, timeout: float) -> GrpcClientQuerySet:
        """Clients heard from within ``timeout`` seconds, by the database's clock."""
        from txbroker import dbtime

        return self.filter(last_heartbeat_at__gte=dbtime.before(timeout))

    def with_liveness(self, timeout: float) -> GrpcClientQuerySet:
        """Each row with ``is_live`` (heard from within ``timeout``) and ``is_streaming`` (a
        live process holds its telemetry stream), by the database's clock."""
        from txbroker import dbtime

        since = dbtime.before(timeout)
        return self.annotate(
            is_live=Case(When(last_heartbeat_at__gte=since, then=Value(True)), default=Value(False)),
            is_streaming=Case(
                When(~Q(stream_process="") & Q(stream_seen_at__gte=since), then=Value(True)),
                default=Value(False),
            ),
        )

    def counts(self, timeout: float) -> dict[tuple[str, bool], int]:
        """{(kind, live): clients} (one grouped count)."""
        rows = self.with_liveness(timeout).values_list("kind", "is_live").annotate(n=Count("id")).order_by()
        return {(kind, live): n for kind, live, n in rows}

    def streaming_producer_groups(self, timeout: float) -> set[str]:
        """Producer groups with a live gRPC producer whose telemetry stream a live
        txbroker_grpc process holds: that process checks their HALF messages back."""
        from txbroker import dbtime

        rows = (
            self.live(timeout)
            .filter(kind=GrpcClient.Kind.PRODUCER, stream_seen_at__gte=dbtime.before(timeout))
            .exclude(stream_process="")
        )
        return set(rows.values_list("group", flat=True).distinct())


class GrpcClient(models.Model):
    class Kind(models.TextChoices):
        PRODUCER = "PRODUCER", "producer"
        SIMPLE_CONSUMER = "SIMPLE_CONSUMER", "simple consumer"
        PUSH_CONSUMER = "PUSH_CONSUMER", "push consumer"

    client_id = models.CharField(max_length=255)
    # The producer group (a topic's name) or the consumer group.
    group = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The client's address as the server saw it, and what it says it is (language, version).
    address = models.CharField(max_length=255, blank=True, default="")
    agent = models.CharField(max_length=255, blank=True, default="")
    # The txbroker_grpc process (host:pid) holding the client's telemetry stream ('' : none):
    # only that process can send it commands (check-back).
    stream_process = models.CharField(max_length=255, blank=True, default="")
    # When that process last said it still holds the stream (it does every few seconds): a
    # process that died stops saying so.
    stream_seen_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(db_default=Now())
    last_heartbeat_at = models.DateTimeField(db_default=Now())

    objects = GrpcClientQuerySet.as_manager()

    class Meta:
        app_label = "txbroker"
        verbose_name = "gRPC client"
        ordering = ["group", "client_id"]
        constraints = [
            models.UniqueConstraint(fields=["client_id", "group"], name="txb_grpc_client_group"),
            models.CheckConstraint(
                condition=Q(kind__in=["PRODUCER", "SIMPLE_CONSUMER", "PUSH_CONSUMER"]),
                name="txb_grpc_client_kind_valid",
            ),
        ]
        indexes = [models.Index(fields=["group", "last_heartbeat_at"], name="txb_grpc_group_seen")]

    def __str__(self) -> str:
        return f"{self.client_id} ({self.kind.lower()} of {self.group})"
