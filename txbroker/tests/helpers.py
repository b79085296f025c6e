from __future__ import annotations

from django.db import transaction

from txbroker import LocalTransactionState, OutgoingMessage
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests.support.checkers import producer
from txbroker.tests.support.consumers import TOPIC
from txbroker.tests.support.models import Effect, LocalRecord


def record_locally(message, arg):
    """The test local transaction: write the record, answer ``arg`` (COMMIT by default)."""
    with transaction.atomic():
        LocalRecord.objects.create(key=message.key)
    return arg or LocalTransactionState.COMMIT


def send(key: str, *, tag: str = "pay", answer=None, local=record_locally, **message_fields):
    message = OutgoingMessage(topic=TOPIC, tag=tag, keys=[key], body={"key": key}, **message_fields)
    return producer.send_message_in_transaction(message, local, answer)


def state_of(msg_id: str) -> str:
    return Message.objects.get(pk=msg_id).state


def events(msg_id: str) -> list[str]:
    return list(TraceEvent.objects.filter(message_id=msg_id).order_by("id").values_list("event", flat=True))


def deliveries(msg_id: str) -> dict[str, str]:
    return dict(Delivery.objects.filter(message_id=msg_id).values_list("consumer_group", "status"))


def effects(key: str) -> dict[str, int]:
    return dict(Effect.objects.filter(key=key).values_list("consumer_group", "count"))
