"""Message state transitions: every allowed move, every refused one, and the producer's
answers (COMMIT, ROLLBACK, UNKNOWN, exceptions, no answer)."""

from __future__ import annotations

import os
import socket

import pytest
from django.db import transaction

import txbroker
from txbroker import LocalTransactionState, OutgoingMessage, operations
from txbroker.exceptions import ConfigurationError, InvalidTransition, MessageNotFound
from txbroker.models import Delivery, Message, MessageKey, TraceEvent
from txbroker.tests.helpers import deliveries, events, send, state_of
from txbroker.tests.support.checkers import producer
from txbroker.tests.support.models import LocalRecord
from txbroker.transitions import message_commit, message_discard, message_resume, message_rollback

pytestmark = pytest.mark.django_db(transaction=True)

HALF, COMMITTED, ROLLED_BACK, DISCARDED = (
    Message.State.HALF,
    Message.State.COMMITTED,
    Message.State.ROLLED_BACK,
    Message.State.DISCARDED,
)


def half_message(key: str = "k") -> Message:
    """A message left HALF by a local transaction that could not tell."""
    result = send(key, answer=LocalTransactionState.UNKNOWN)
    assert result.message_state == HALF
    return Message.objects.get(pk=result.msg_id)


def test_commit_stores_half_first_then_commits_with_one_delivery_per_subscribed_group():
    result = send("order-1", tag="pay")

    assert result.local_transaction_state == LocalTransactionState.COMMIT
    assert result.message_state == COMMITTED
    message = Message.objects.get(pk=result.msg_id)
    assert message.resolved_at is not None and message.next_check_at is None
    assert message.keys == ["order-1"] and message.producer_group == "test_producer_group"
    assert events(result.msg_id) == ["HALF_STORED", "LOCAL_TRANSACTION", "COMMITTED"]
    trace = txbroker.message_trace(result.msg_id)  # the public way to read it
    assert [(e.event, e.detail.split(";")[0]) for e in trace] == [
        # the producer process is named: who to look for when a message stays HALF
        ("HALF_STORED", f"producer group test_producer_group ({socket.gethostname()}:{os.getpid()})"),
        ("LOCAL_TRANSACTION", "COMMIT"),
        ("COMMITTED", "by producer"),
    ]
    assert deliveries(result.msg_id) == {
        "test_all_group": "PENDING",
        "test_pay_group": "PENDING",
        "test_refund_group": "PENDING",
    }


def test_rollback_ends_the_message_with_no_delivery():
    result = send("order-2", answer=LocalTransactionState.ROLLBACK)

    assert result.message_state == ROLLED_BACK
    assert deliveries(result.msg_id) == {}
    assert events(result.msg_id) == ["HALF_STORED", "LOCAL_TRANSACTION", "ROLLED_BACK"]


def test_unknown_leaves_the_message_half_for_check_back():
    message = half_message("order-3")

    assert message.next_check_at > message.created_at
    assert deliveries(message.msg_id) == {}
    assert events(message.msg_id) == ["HALF_STORED", "LOCAL_TRANSACTION"]


def test_an_exception_in_the_local_transaction_is_unknown_with_its_traceback_in_the_trace():
    def explode(message, arg):
        raise ValueError("disk on fire")

    result = send("order-4", local=explode)

    assert result.local_transaction_state == LocalTransactionState.UNKNOWN
    assert result.message_state == HALF
    detail = TraceEvent.objects.get(message_id=result.msg_id, event="LOCAL_TRANSACTION").detail
    assert detail.startswith("UNKNOWN (raised)")
    assert "Traceback" in detail and "ValueError: disk on fire" in detail


@pytest.mark.parametrize("answer", [None, "yes", 1])
def test_no_answer_counts_as_unknown(answer):
    result = send(f"order-none-{answer}", local=lambda message, arg: answer)

    assert result.local_transaction_state == LocalTransactionState.UNKNOWN
    detail = TraceEvent.objects.get(message_id=result.msg_id, event="LOCAL_TRANSACTION").detail
    assert "no answer" in detail


def test_keys_are_indexed_rows_and_found_by_key():
    result = producer.send_message_in_transaction(
        OutgoingMessage(topic="test_topic", tag="pay", keys="a-1 b-2", body={}),
        lambda message, arg: LocalTransactionState.ROLLBACK,
    )
    assert sorted(MessageKey.objects.filter(message_id=result.msg_id).values_list("key", flat=True)) == [
        "a-1",
        "b-2",
    ]
    assert list(Message.objects.with_key("b-2").values_list("pk", flat=True)) == [result.msg_id]


def test_sending_inside_an_atomic_block_fails_loudly_and_stores_nothing():
    with pytest.raises(ConfigurationError, match="half message must be committed"), transaction.atomic():
        send("order-5")
    assert not Message.objects.exists()


@pytest.mark.parametrize("settle", [message_commit, message_rollback])
@pytest.mark.parametrize("start", [COMMITTED, ROLLED_BACK, DISCARDED])
def test_a_settled_message_refuses_a_late_or_conflicting_end_and_records_it(settle, start):
    message = half_message(f"late-{settle.__name__}-{start}")
    Message.objects.filter(pk=message.pk).update(state=start, resolved_at=message.created_at)
    before = deliveries(message.msg_id)

    assert settle(message, by="producer") is False

    assert state_of(message.msg_id) == start
    assert deliveries(message.msg_id) == before
    refusal = TraceEvent.objects.filter(message_id=message.msg_id, event="REFUSED").get()
    assert f"by producer refused: the message is {start}" in refusal.detail


def test_discard_only_from_half_and_resume_only_from_discarded():
    message = half_message("discard")
    assert message_resume(message.msg_id) is False  # HALF cannot resume
    assert message_discard(message, check_times=15) is True
    assert state_of(message.msg_id) == DISCARDED
    assert message_discard(message, check_times=16) is False  # already DISCARDED
    assert message_commit(message, by="producer") is False  # never delivered
    assert deliveries(message.msg_id) == {}

    assert message_resume(message.msg_id, actor="alice") is True
    resumed = Message.objects.get(pk=message.pk)
    assert (resumed.state, resumed.check_times, resumed.resolved_at) == (HALF, 0, None)
    assert TraceEvent.objects.get(message_id=message.pk, event="RESUMED").actor == "alice"


@pytest.mark.parametrize("start", [COMMITTED, ROLLED_BACK])
def test_a_settled_message_never_resumes(start):
    message = half_message(f"resume-{start}")
    Message.objects.filter(pk=message.pk).update(state=start, resolved_at=message.created_at)

    assert message_resume(message.msg_id) is False
    assert state_of(message.msg_id) == start


def test_operator_resolve_and_resume_record_the_operator_and_refuse_bad_states():
    message = half_message("manual")
    operations.resolve(message.msg_id, commit=True, actor="bob")
    assert state_of(message.msg_id) == COMMITTED
    assert TraceEvent.objects.get(message_id=message.pk, event="COMMITTED").actor == "bob"
    assert Delivery.objects.filter(message_id=message.pk).count() == 3

    with pytest.raises(InvalidTransition):
        operations.resolve(message.msg_id, commit=False, actor="bob")
    with pytest.raises(InvalidTransition):
        operations.resume(message.msg_id, actor="bob")
    with pytest.raises(MessageNotFound):
        operations.resolve("nope", commit=True)


def test_database_refuses_an_unknown_state():
    message = half_message("constraint")
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.filter(pk=message.pk).update(state="LOST")


def test_the_local_record_and_the_half_message_are_separate_transactions():
    """The half message is durable even when the local transaction rolls back its work."""

    def write_then_fail(message, arg):
        with transaction.atomic():
            LocalRecord.objects.create(key=message.key)
            raise RuntimeError("constraint violated")

    result = send("separate", local=write_then_fail)

    assert state_of(result.msg_id) == HALF
    assert not LocalRecord.objects.filter(key="separate").exists()
