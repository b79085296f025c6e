"""Guards: a worker that lost its claim records nothing about that delivery; release()
traces only what it released; the producer refuses to run inside a transaction on any
database its local transaction could write to; every time is the database's."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from txbroker import dbtime, delivery
from txbroker.delivery_transitions import mark_failed, start_attempt
from txbroker.exceptions import ConfigurationError
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.registry import registry
from txbroker.tests.helpers import send
from txbroker.tests.support.consumers import TOPIC
from txbroker.tests.support.models import Effect, LocalRecord

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_that_lost_its_claim_records_no_failure_no_dead_and_no_metric(
    broker_env, monkeypatch, broker_setting
):
    broker_setting("TXBROKER_MAX_RECONSUME_TIMES", "0")  # its failure would be DEAD
    send("lost", tag="other")
    token, batch = delivery.claim_due(10)
    assert start_attempt(batch[0], token) == 1
    # Meanwhile its claim expired and another worker claimed the delivery.
    Delivery.objects.update(claim_token="someone-else", claimed_until=timezone.now() + timedelta(seconds=60))
    before = list(TraceEvent.objects.values_list("id", flat=True))
    observed = []
    monkeypatch.setattr(delivery, "observe_delivery", lambda *args, **kw: observed.append(args))

    status = mark_failed(batch[0], token, None, RuntimeError("late failure"), 12.0)

    assert status is None
    assert list(TraceEvent.objects.exclude(id__in=before).values_list("event", flat=True)) == []
    row = Delivery.objects.get()
    assert (row.status, row.claim_token) == ("RUNNING", "someone-else")  # untouched
    assert not TraceEvent.objects.filter(event="DEAD").exists()

    report = delivery.BatchReport()
    assert delivery.run_claimed(batch[0], token, report) == "SKIPPED"
    assert (report.failed, report.dead, report.succeeded, report.durations_ms) == (0, 0, 0, [])
    assert observed == []


def test_release_traces_only_what_it_released(broker_env):
    for i in range(3):
        send(f"rel-{i}", tag="other")
    token, batch = delivery.claim_due(10)
    assert start_attempt(batch[0], token) == 1  # this one's handler started: not released

    assert delivery.release(batch, token) == 2

    released = TraceEvent.objects.filter(event="RELEASED")
    assert released.count() == 2
    assert set(released.values_list("message_id", flat=True)) == {d.message_id for d in batch[1:]}
    assert sorted(Delivery.objects.values_list("status", "attempts")) == [
        ("RETRY", 0),
        ("RETRY", 0),
        ("RUNNING", 1),
    ]
    assert delivery.release(batch, "another-token") == 0
    assert TraceEvent.objects.filter(event="RELEASED").count() == 2


@pytest.mark.django_db(transaction=True, databases=["default", "txbroker"])
@pytest.mark.parametrize("alias", ["default", "txbroker"])
def test_the_producer_refuses_to_run_inside_a_transaction_on_any_database(broker_env, broker_setting, alias):
    """With txbroker's tables on their own database, a caller inside atomic() on ``default``
    would turn the local transaction into a savepoint: the message would commit and the
    caller could still roll back the payment it announces."""
    broker_setting("TXBROKER_DATABASE", "txbroker")
    refused = pytest.raises(
        ConfigurationError, match=f"inside transaction.atomic\\(\\) on database '{alias}'"
    )
    with refused, transaction.atomic(using=alias):
        send("inside", tag="pay")
    assert Message.objects.using("txbroker").count() == 0
    assert not LocalRecord.objects.exists()
    assert not Effect.objects.exists()


def test_times_are_the_databases_not_the_hosts(broker_env):
    """Written by the statement, from the database's clock: the claim deadline, the check
    time, the due time (a host clock five minutes off changes none of them)."""
    msg_id = send("clock", tag="other", answer="UNKNOWN", check_immunity_seconds=30).msg_id
    message = Message.objects.get(pk=msg_id)
    assert message.next_check_at - message.created_at == timedelta(seconds=30)
    with connection.cursor() as cursor:
        cursor.execute("SELECT created_at - now() FROM txbroker_message WHERE msg_id = %s", [msg_id])
        assert abs(cursor.fetchone()[0]) < timedelta(seconds=5)

    send("claim", tag="other")
    db_before = dbtime.read("default")
    _token, batch = delivery.claim_due(10)
    row = Delivery.objects.get(pk=batch[0].pk)
    assert timedelta(seconds=2.9) < row.claimed_until - db_before < timedelta(seconds=4)  # claim timeout 3 s
    assert registry.subscribers(TOPIC, "other")
