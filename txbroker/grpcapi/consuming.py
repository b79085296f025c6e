"""The consumer side (ReceiveMessage, AckMessage, ChangeInvisibleDuration,
ForwardMessageToDeadLetterQueue, QueryAssignment): a placeholder, replaced by the consumer
side's own module."""

from __future__ import annotations

from txbroker.grpcapi.protocol import pb


class ConsumerRPCs:
    pass


def subscription_settings(client, settings_pb: pb.Settings) -> tuple[pb.Subscription, pb.RetryPolicy]:
    """The subscription and backoff policy a consumer's settings reply carries (called by
    the telemetry handler for settings with a subscription): the client's, as they are."""
    return settings_pb.subscription, settings_pb.backoff_policy
