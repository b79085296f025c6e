"""Test consumers on topic ``test_topic``: three groups with different tag expressions."""

from __future__ import annotations

import os
import time

from django.db import connection
from django.db.models import F

from txbroker import ConsumedMessage, consumer
from txbroker.testing import side_connection

from .models import Effect, Plan, Shared

TOPIC = "test_topic"


def note_attempt(key: str, group: str) -> None:
    """Commit the attempt on a separate connection, so it survives a rollback or a kill."""
    if connection.vendor != "postgresql":
        return
    side = side_connection()
    try:
        with side.cursor() as cursor:
            cursor.execute(
                "INSERT INTO txbroker_support_attempt (key, consumer_group, pid, at) VALUES (%s, %s, %s, now())",
                [key, group, os.getpid()],
            )
        side.commit()
    finally:
        side.close()


def _effect(message: ConsumedMessage) -> None:
    key = message.key
    plan = Plan.objects.filter(key=key).first()
    if plan and plan.shared_lock:
        # Held until this delivery's transaction ends (or its session is ended).
        Shared.objects.filter(name=plan.shared_lock).update(hits=F("hits") + 1)
    note_attempt(key, message.consumer_group)
    if plan and plan.kill_worker:
        os._exit(137)  # a poison message: the worker dies in every attempt
    if plan and plan.sleep_seconds and message.reconsume_times == 0:
        time.sleep(plan.sleep_seconds)  # first attempt only: a slow handler to kill
    if plan and message.reconsume_times < plan.fail_times:
        raise RuntimeError(f"planned failure {message.reconsume_times + 1} of {plan.fail_times}")
    effect, _ = Effect.objects.get_or_create(key=key, consumer_group=message.consumer_group)
    Effect.objects.filter(pk=effect.pk).update(count=F("count") + 1)


@consumer(topic=TOPIC, group="test_all_group", tags="*")
def handle_all(message: ConsumedMessage) -> None:
    _effect(message)


@consumer(topic=TOPIC, group="test_pay_group", tags="pay")
def handle_pay(message: ConsumedMessage) -> None:
    _effect(message)


@consumer(topic=TOPIC, group="test_refund_group", tags="pay || refund", max_reconsume_times=2)
def handle_pay_or_refund(message: ConsumedMessage) -> None:
    _effect(message)


# Ordered messages (issue 12): one group goes on after a DEAD delivery, one waits for an
# operator. Both give up after one retry, so that DEAD comes quickly.
ORDERED_TOPIC = "test_ordered_topic"


@consumer(
    topic=ORDERED_TOPIC, group="test_ordered_skip_group", max_reconsume_times=1, on_dead_in_group="skip"
)
def handle_ordered_skip(message: ConsumedMessage) -> None:
    _effect(message)


@consumer(
    topic=ORDERED_TOPIC, group="test_ordered_block_group", max_reconsume_times=1, on_dead_in_group="block"
)
def handle_ordered_block(message: ConsumedMessage) -> None:
    _effect(message)
