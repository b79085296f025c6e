"""Plain messages sent in the caller's transaction (the outbox pattern), delayed messages
(deliver_at / delay, by the database's clock) and their recall, in process and with a real
worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction

from txbroker import OutgoingMessage, Producer, operations
from txbroker.delivery_transitions import claim_due, release
from txbroker.exceptions import ConfigurationError, InvalidTransition
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests.helpers import deliveries, effects, send
from txbroker.tests.processes import wait_for
from txbroker.tests.support.consumers import TOPIC
from txbroker.tests.support.models import Attempt, LocalRecord

pytestmark = pytest.mark.django_db(transaction=True)

outbox = Producer("test_outbox_group")


def db_now():
    from txbroker import dbtime

    return dbtime.read("default")


def plain(key: str, *, tag: str = "other", **fields) -> OutgoingMessage:
    return OutgoingMessage(topic=TOPIC, tag=tag, keys=[key], body={"key": key}, **fields)


def claimable(msg_id: str) -> list[Delivery]:
    """Claim (and give back) what is due of ``msg_id``'s deliveries right now."""
    ids = Delivery.objects.filter(message_id=msg_id).values_list("pk", flat=True)
    token, claimed = claim_due(10, ids=ids)
    release(claimed, token)
    Delivery.objects.filter(message_id=msg_id, status="RETRY").update(status="PENDING")
    return claimed


# --- the outbox send ----------------------------------------------------------------------
def test_a_plain_send_commits_with_its_caller():
    with transaction.atomic():
        LocalRecord.objects.create(key="outbox-1")
        msg_id = outbox.send(plain("outbox-1"))
        # Inside the caller's transaction it is already there, COMMITTED.
        assert Message.objects.get(pk=msg_id).state == "COMMITTED"
    message = Message.objects.get(pk=msg_id)
    assert message.state == "COMMITTED" and message.resolved_at is not None
    assert message.producer_group == "test_outbox_group"
    assert deliveries(msg_id) == {"test_all_group": "PENDING"}
    committed = TraceEvent.objects.get(message_id=msg_id, event="COMMITTED")
    assert "sent in the caller's transaction by producer group test_outbox_group" in committed.detail
    assert Message.objects.filter(key_rows__key="outbox-1").get().pk == msg_id


def test_a_plain_send_rolls_back_with_its_caller():
    with pytest.raises(RuntimeError), transaction.atomic():
        LocalRecord.objects.create(key="outbox-2")
        msg_id = outbox.send(plain("outbox-2"))
        raise RuntimeError("the caller changes its mind")
    assert not Message.objects.filter(pk=msg_id).exists()
    assert not Delivery.objects.filter(message_id=msg_id).exists()
    assert not TraceEvent.objects.filter(message_id=msg_id).exists()
    assert not LocalRecord.objects.filter(key="outbox-2").exists()


def test_a_plain_send_outside_a_transaction_is_refused():
    with pytest.raises(ConfigurationError, match=r"inside transaction\.atomic"):
        outbox.send(plain("outbox-3"))
    assert not Message.objects.exists()


def test_deliver_at_and_delay_are_exclusive_and_checked():
    with pytest.raises(ConfigurationError, match="not both"):
        plain("x", deliver_at=db_now(), delay=1)
    with pytest.raises(ConfigurationError, match="aware"):
        plain("x", deliver_at=db_now().replace(tzinfo=None))
    with pytest.raises(ConfigurationError, match="negative"):
        plain("x", delay=-1)


# --- delayed messages ---------------------------------------------------------------------
def test_a_delay_counts_from_the_database_clock_and_holds_the_deliveries(broker_env):
    before = db_now()
    with transaction.atomic():
        msg_id = outbox.send(plain("delayed-1", delay=timedelta(days=30)))
    message = Message.objects.get(pk=msg_id)
    assert before + timedelta(days=30) <= message.deliver_at <= db_now() + timedelta(days=30)
    assert set(Delivery.objects.filter(message_id=msg_id).values_list("next_attempt_at", flat=True)) == {
        message.deliver_at
    }
    assert claimable(msg_id) == []
    # Once due by the database's clock, it is claimed like any other.
    Delivery.objects.filter(message_id=msg_id).update(next_attempt_at=db_now())
    assert len(claimable(msg_id)) == 1


def test_a_transactional_message_can_be_delayed_too(broker_env):
    deliver_at = db_now() + timedelta(hours=1)
    msg_id = send("delayed-tx", tag="other", deliver_at=deliver_at).msg_id
    assert Message.objects.get(pk=msg_id).state == "COMMITTED"
    assert list(Delivery.objects.filter(message_id=msg_id).values_list("next_attempt_at", flat=True)) == [
        deliver_at
    ]
    assert claimable(msg_id) == []


def test_recall_of_a_delayed_message_records_who_and_it_is_never_delivered(broker_env):
    with transaction.atomic():
        msg_id = outbox.send(plain("recalled", tag="pay", delay=3600))
    result = operations.recall(msg_id, actor="alice")
    assert sorted(result.recalled) == ["test_all_group", "test_pay_group", "test_refund_group"]
    assert result.not_recalled == {}
    assert set(deliveries(msg_id).values()) == {"RECALLED"}
    row = TraceEvent.objects.get(message_id=msg_id, event="RECALLED")
    assert row.actor == "alice" and row.detail.startswith("recalled: test_all_group")
    Delivery.objects.filter(message_id=msg_id).update(next_attempt_at=db_now())
    assert claimable(msg_id) == []


def test_recall_names_the_groups_it_could_not_recall(broker_env):
    with transaction.atomic():
        msg_id = outbox.send(plain("half-recalled", tag="pay", delay=3600))
    Delivery.objects.filter(message_id=msg_id, consumer_group="test_pay_group").update(
        status="SUCCEEDED", attempts=1
    )
    result = operations.recall(msg_id, actor="bob")
    assert result.not_recalled == {"test_pay_group": "SUCCEEDED"}
    assert "could not recall" in TraceEvent.objects.get(message_id=msg_id, event="RECALLED").detail


def test_recall_refuses_a_message_that_is_not_delayed(broker_env):
    msg_id = send("not-delayed", tag="other").msg_id
    with pytest.raises(InvalidTransition, match="not a delayed message"):
        operations.recall(msg_id, actor="alice")


# --- with a real worker -------------------------------------------------------------------
@pytest.mark.integration
def test_a_delayed_message_is_delivered_on_time_by_the_database_clock_and_a_recalled_one_never(worker, beat):
    with transaction.atomic():
        on_time = outbox.send(plain("on-time", delay=2))
        recalled = outbox.send(plain("never", delay=2))
    deliver_at = Message.objects.get(pk=on_time).deliver_at
    operations.recall(recalled, actor="carol")
    wait_for(lambda: effects("on-time") == {"test_all_group": 1}, timeout=30, what="the delayed delivery")
    started = Attempt.objects.get(key="on-time").at
    assert started >= deliver_at  # never early, by the database's clock
    assert started - deliver_at < timedelta(seconds=5)  # the sweep (every second) found it
    # The recalled one was due at the same time: past it and a few sweeps later, still nothing.
    wait_for(lambda: db_now() > deliver_at + timedelta(seconds=2), timeout=10, what="two more sweeps")
    assert effects("never") == {} and not Attempt.objects.filter(key="never").exists()
    assert deliveries(recalled) == {"test_all_group": "RECALLED"}


@pytest.mark.integration
def test_an_outbox_message_is_delivered_only_once_its_caller_commits(worker):
    with transaction.atomic():
        msg_id = outbox.send(plain("outbox-worker"))
        rolled = None
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled = outbox.send(plain("outbox-rolled"))
        raise RuntimeError("rolled back")
    wait_for(
        lambda: effects("outbox-worker") == {"test_all_group": 1}, timeout=30, what="the outbox delivery"
    )
    assert deliveries(msg_id) == {"test_all_group": "SUCCEEDED"}
    assert not Message.objects.filter(pk=rolled).exists() and effects("outbox-rolled") == {}
