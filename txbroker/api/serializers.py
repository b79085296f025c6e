"""Shapes of the broker API (and of its OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers

from txbroker.models import Delivery, GrpcClient, Message, TraceEvent


class DeliverySummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = ["consumer_group", "status", "attempts", "next_attempt_at", "last_error"]


class MessageSerializer(serializers.ModelSerializer):
    keys = serializers.ListField(child=serializers.CharField())
    deliveries = DeliverySummarySerializer(many=True, read_only=True)

    class Meta:
        model = Message
        fields = [
            "msg_id",
            "topic",
            "tag",
            "keys",
            "state",
            "check_times",
            "producer_group",
            "created_at",
            "resolved_at",
            "message_group",
            "deliver_at",
            "deliveries",
        ]


class TraceEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = TraceEvent
        fields = ["at", "event", "consumer_group", "detail", "actor"]


class MessageDetailSerializer(MessageSerializer):
    body = serializers.JSONField()
    properties = serializers.DictField(child=serializers.CharField())
    # Set by the view: the trace with each delivery's success line (txbroker.trace).
    trace = TraceEventSerializer(many=True, read_only=True, source="trace_lines")

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "body", "properties", "trace"]


class MessageFilterSerializer(serializers.Serializer):
    """The list's query parameters (all optional; combined with AND)."""

    state = serializers.ChoiceField(choices=Message.State.choices, required=False)
    topic = serializers.CharField(required=False, max_length=255)
    key = serializers.CharField(required=False, max_length=255, help_text="a business key, e.g. an order id")
    producer_group = serializers.CharField(required=False, max_length=255)
    consumer_group = serializers.CharField(
        required=False, max_length=255, help_text="messages with a delivery to this consumer group"
    )
    delivery_status = serializers.ChoiceField(
        choices=Delivery.Status.choices,
        required=False,
        help_text="messages with a delivery in this status (to consumer_group, when given)",
    )
    since = serializers.DateTimeField(required=False, help_text="created at or after (ISO 8601)")
    until = serializers.DateTimeField(required=False, help_text="created before (ISO 8601)")
    message_group = serializers.CharField(
        required=False, max_length=255, help_text="ordered messages of this message group"
    )

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"until": "must be after since"})
        return attrs


class ReplayRequestSerializer(serializers.Serializer):
    consumer_group = serializers.CharField(
        required=False, allow_null=True, max_length=255, help_text="only this group (default: every group)"
    )
    force = serializers.BooleanField(
        required=False, default=False, help_text="also replay deliveries that SUCCEEDED"
    )


class ReplayResponseSerializer(serializers.Serializer):
    msg_id = serializers.CharField()
    replayed = serializers.IntegerField(help_text="deliveries made due again")


class RecallResponseSerializer(serializers.Serializer):
    msg_id = serializers.CharField()
    recalled = serializers.ListField(child=serializers.CharField(), help_text="consumer groups recalled")
    not_recalled = serializers.DictField(
        child=serializers.CharField(),
        help_text="consumer groups whose delivery already ran or runs, with its status",
    )


class RecallConflictSerializer(RecallResponseSerializer):
    detail = serializers.CharField()


class SkipRequestSerializer(serializers.Serializer):
    consumer_group = serializers.CharField(max_length=255, help_text="the group whose DEAD delivery to skip")


class SkipResponseSerializer(serializers.Serializer):
    msg_id = serializers.CharField()
    consumer_group = serializers.CharField()
    status = serializers.ChoiceField(choices=[Delivery.Status.SKIPPED])


class BlockedGroupSerializer(serializers.Serializer):
    consumer_group = serializers.CharField()
    message_group = serializers.CharField()
    delivery_id = serializers.IntegerField(help_text="the DEAD delivery the group waits behind")
    msg_id = serializers.CharField()
    sequence = serializers.IntegerField(allow_null=True)
    since = serializers.DateTimeField(help_text="when that delivery went DEAD")
    last_error = serializers.CharField()
    waiting = serializers.IntegerField(help_text="deliveries of the group waiting behind it")


class BlockedGroupFilterSerializer(serializers.Serializer):
    consumer_group = serializers.CharField(required=False, max_length=255)


class StateResponseSerializer(serializers.Serializer):
    msg_id = serializers.CharField()
    state = serializers.ChoiceField(choices=Message.State.choices)


class DeadLetterMessageSerializer(serializers.ModelSerializer):
    keys = serializers.ListField(child=serializers.CharField())
    body = serializers.JSONField(
        allow_null=True, help_text="null unless the caller may view messages (txbroker.view_message)"
    )

    class Meta:
        model = Message
        fields = ["msg_id", "topic", "tag", "keys", "producer_group", "created_at", "body"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not self.context.get("show_body", False):
            data["body"] = None
        return data


class DeadLetterSerializer(serializers.ModelSerializer):
    died_at = serializers.DateTimeField(source="updated_at", help_text="when it became DEAD")
    message = DeadLetterMessageSerializer()

    class Meta:
        model = Delivery
        fields = ["id", "consumer_group", "attempts", "last_error", "died_at", "message"]


class DeadLetterFilterSerializer(serializers.Serializer):
    consumer_group = serializers.CharField(required=False, max_length=255)


class DeadLetterReplayRequestSerializer(serializers.Serializer):
    consumer_group = serializers.CharField(
        required=False, allow_null=True, max_length=255, help_text="only this group's dead letters"
    )
    since = serializers.DateTimeField(required=False, allow_null=True, help_text="only those dead since")
    dry_run = serializers.BooleanField(required=False, default=False, help_text="count only")


class BulkReplayResponseSerializer(serializers.Serializer):
    replayed = serializers.IntegerField()
    dry_run = serializers.BooleanField()


class GroupStatsSerializer(serializers.Serializer):
    PENDING = serializers.IntegerField()
    RUNNING = serializers.IntegerField()
    RETRY = serializers.IntegerField()
    SUCCEEDED = serializers.IntegerField()
    DEAD = serializers.IntegerField()
    lag = serializers.IntegerField(help_text="PENDING + RUNNING + RETRY")
    oldest_pending_age_seconds = serializers.FloatField(
        help_text="age of the group's oldest delivery not yet done (0 when none)"
    )


class MessageStatsSerializer(serializers.Serializer):
    HALF = serializers.IntegerField()
    COMMITTED = serializers.IntegerField()
    ROLLED_BACK = serializers.IntegerField()
    DISCARDED = serializers.IntegerField()


class StatsSerializer(serializers.Serializer):
    messages = MessageStatsSerializer()
    deliveries = serializers.DictField(child=GroupStatsSerializer(), help_text="per consumer group")


class BrokerErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class GrpcClientSerializer(serializers.Serializer):
    client_id = serializers.CharField()
    group = serializers.CharField(help_text="the producer group (a topic) or consumer group")
    kind = serializers.ChoiceField(choices=GrpcClient.Kind.choices)
    address = serializers.CharField()
    agent = serializers.CharField(help_text="the client's language and version")
    live = serializers.BooleanField(
        source="is_live", help_text="heard from within TXBROKER_GRPC_CLIENT_TIMEOUT"
    )
    stream_process = serializers.SerializerMethodField(
        help_text="the txbroker_grpc process holding its stream, or ''"
    )
    first_seen_at = serializers.DateTimeField()
    last_heartbeat_at = serializers.DateTimeField()

    def get_stream_process(self, obj) -> str:
        return obj.stream_process if obj.is_streaming else ""


class GrpcClientFilterSerializer(serializers.Serializer):
    group = serializers.CharField(required=False, max_length=255)
