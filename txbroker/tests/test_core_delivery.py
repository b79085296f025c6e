"""Delivery, in process: tag filtering, retry schedule, DEAD and replay, claims, sweeps,
and exactly-once effects when one delivery is run twice at the same time."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from txbroker import delivery, operations
from txbroker.delivery_transitions import retry_delay, start_attempt
from txbroker.exceptions import InvalidTransition
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.registry import registry
from txbroker.tests.helpers import deliveries, effects, send
from txbroker.tests.support.consumers import TOPIC, handle_pay
from txbroker.tests.support.models import Plan

pytestmark = pytest.mark.django_db(transaction=True)


def db_now():
    from txbroker import dbtime

    return dbtime.read("default")


def run_due() -> delivery.BatchReport:
    return delivery.deliver_due(budget_seconds=5)


def make_due() -> None:
    Delivery.objects.filter(status__in=Delivery.WAITING).update(next_attempt_at=timezone.now())


def test_tag_expressions_pick_the_consumer_groups(broker_env):
    pay = send("t-pay", tag="pay").msg_id
    refund = send("t-refund", tag="refund").msg_id
    other = send("t-other", tag="other").msg_id

    assert set(deliveries(pay)) == {"test_all_group", "test_pay_group", "test_refund_group"}
    assert set(deliveries(refund)) == {"test_all_group", "test_refund_group"}
    assert set(deliveries(other)) == {"test_all_group"}

    run_due()
    assert effects("t-pay") == {"test_all_group": 1, "test_pay_group": 1, "test_refund_group": 1}
    assert effects("t-refund") == {"test_all_group": 1, "test_refund_group": 1}
    assert effects("t-other") == {"test_all_group": 1}


def test_a_failing_handler_retries_at_the_configured_delays_then_succeeds(broker_env):
    Plan.objects.create(key="flaky", fail_times=2)
    msg_id = send("flaky", tag="other").msg_id  # only test_all_group
    row = Delivery.objects.get(message_id=msg_id)

    started = timezone.now()
    run_due()
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("RETRY", 1)
    assert "planned failure 1 of 2" in row.last_error
    assert timedelta(seconds=0.15) < row.next_attempt_at - started < timedelta(seconds=1.2)  # 0.2 s

    make_due()
    started = timezone.now()
    run_due()
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("RETRY", 2)
    assert timedelta(seconds=0.35) < row.next_attempt_at - started < timedelta(seconds=1.4)  # 0.4 s

    make_due()
    run_due()
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("SUCCEEDED", 3, "")
    assert effects("flaky") == {"test_all_group": 1}
    # The failures are trace rows; the success is on the delivery row, shown in the trace.
    attempts = [e for e in operations.message_trace(msg_id) if e.event == "DELIVERY_ATTEMPT"]
    assert [a.detail.split(" in ")[0] for a in attempts] == [
        "attempt 1: FAILED",
        "attempt 2: FAILED",
        "attempt 3: SUCCEEDED",
    ]


def test_retry_delays_follow_rocketmq_levels_and_repeat_the_last():
    assert [retry_delay(n) for n in (1, 2, 3, 16, 17, 40)] == [10, 30, 60, 7200, 7200, 7200]


def test_dead_after_max_reconsume_times_then_replay_succeeds(broker_env):
    Plan.objects.create(key="poison", fail_times=99)
    msg_id = send("poison", tag="refund").msg_id  # test_refund_group allows 2 retries
    for _ in range(3):
        make_due()
        run_due()

    row = Delivery.objects.get(message_id=msg_id, consumer_group="test_refund_group")
    assert (row.status, row.attempts) == ("DEAD", 3)
    assert "planned failure 3 of 99" in row.last_error
    dead_event = TraceEvent.objects.get(message_id=msg_id, event="DEAD")
    assert "3 attempts failed (max reconsume times 2)" in dead_event.detail
    make_due()
    run_due()
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("DEAD", 3)  # a dead letter is never retried by itself

    Plan.objects.filter(key="poison").update(fail_times=0)
    assert operations.replay(msg_id, group="test_refund_group", actor="ops") == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("PENDING", 3)  # history kept
    run_due()
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("SUCCEEDED", 4)
    assert effects("poison")["test_refund_group"] == 1
    assert TraceEvent.objects.get(message_id=msg_id, event="REPLAY").actor == "ops"


def test_replay_of_a_succeeded_delivery_needs_force(broker_env):
    msg_id = send("done", tag="other").msg_id
    run_due()
    assert operations.replay(msg_id) == 0
    assert operations.replay(msg_id, force=True, actor="ops") == 1
    run_due()
    assert effects("done") == {"test_all_group": 2}  # forced: the operator asked for it
    with pytest.raises(InvalidTransition):
        operations.replay(msg_id, group="no_such_group")


def test_a_delivery_without_a_registered_consumer_retries_then_dies_with_the_reason(
    broker_env, broker_setting
):
    broker_setting("TXBROKER_MAX_RECONSUME_TIMES", "0")
    msg_id = send("orphan", tag="pay").msg_id
    registry.unregister_consumer(topic=TOPIC, group="test_pay_group")
    try:
        run_due()
    finally:
        registry.register_consumer(topic=TOPIC, group="test_pay_group", handler=handle_pay, tags="pay")

    row = Delivery.objects.get(message_id=msg_id, consumer_group="test_pay_group")
    assert row.status == "DEAD"
    assert "NoConsumer: no consumer registered for group 'test_pay_group'" in row.last_error


def test_one_delivery_run_twice_at_the_same_time_has_its_effect_once(broker_env):
    """Two runners hold the same claim at once (a duplicated task): the row lock serializes
    them and the second finds the delivery done."""
    Plan.objects.create(key="twice", sleep_seconds=1)
    msg_id = send("twice", tag="other").msg_id
    token, batch = delivery.claim_due(10)
    assert len(batch) == 1
    outcomes = []

    def run():
        outcomes.append(delivery.run_claimed(batch[0], token, delivery.BatchReport()))
        connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert sorted(outcomes) == ["SKIPPED", "SUCCEEDED"]
    assert effects("twice") == {"test_all_group": 1}
    assert deliveries(msg_id) == {"test_all_group": "SUCCEEDED"}


def test_a_stale_claim_taken_back_and_reclaimed_runs_once(broker_env):
    """A worker's claim expired and another worker took the delivery: both run at once,
    only the current claim commits its effects."""
    Plan.objects.create(key="stale", sleep_seconds=1)
    send("stale", tag="other")
    old_token, old_batch = delivery.claim_due(10)
    Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert delivery.reclaim_expired() == 1
    new_token, new_batch = delivery.claim_due(10)
    outcomes = {}

    def run(name, item, token):
        outcomes[name] = delivery.run_claimed(item, token, delivery.BatchReport())
        connection.close()

    threads = [
        threading.Thread(target=run, args=("old", old_batch[0], old_token)),
        threading.Thread(target=run, args=("new", new_batch[0], new_token)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert outcomes == {"old": "SKIPPED", "new": "SUCCEEDED"}
    assert effects("stale") == {"test_all_group": 1}
    row = Delivery.objects.get()
    assert row.attempts == 1  # the old claim never started its handler: it counts nothing
    reclaimed = TraceEvent.objects.get(event="RECLAIMED")
    assert "before the handler started" in reclaimed.detail
    # the worker that lost its claim recorded nothing about the delivery: one attempt, the
    # new claim's success (kept on the delivery row, shown in the trace)
    assert not TraceEvent.objects.filter(event="DELIVERY_ATTEMPT").exists()
    attempts = [e.detail for e in operations.message_trace(row.message_id) if e.event == "DELIVERY_ATTEMPT"]
    assert len(attempts) == 1 and attempts[0].startswith("attempt 1: SUCCEEDED in ")


def test_a_started_delivery_whose_worker_died_is_a_failed_attempt_with_its_retry_delay(broker_env):
    """The handler started (its attempt committed), then its worker died: the sweep takes
    the delivery back as a failed attempt, due after the retry delay, not at once."""
    msg_id = send("died", tag="other").msg_id
    token, batch = delivery.claim_due(10)
    assert start_attempt(batch[0], token) == 1  # what run_claimed commits before the handler
    Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))  # the worker is gone

    assert delivery.reclaim_expired() == 1

    row = Delivery.objects.get()
    assert (row.status, row.attempts, row.claim_token) == ("RETRY", 1, "")
    assert row.last_error.startswith("worker died during the handler")
    due_in = Delivery.objects.filter(pk=row.pk).values_list("next_attempt_at", flat=True).get() - db_now()
    assert timedelta(seconds=0.05) < due_in <= timedelta(seconds=0.2)  # retry delay 1: 0.2 s
    event = TraceEvent.objects.get(message_id=msg_id, event="RECLAIMED")
    assert event.detail == "attempt 1: FAILED: worker died during the handler; retry in 0.2 s"

    # The worker that lost it wakes up: it records nothing, changes nothing.
    report = delivery.BatchReport()
    assert delivery.run_claimed(batch[0], token, report) == "SKIPPED"
    assert (report.failed, report.dead, report.succeeded) == (0, 0, 0)
    # From now on it runs alone: a batch claim leaves it, a claim of those that run alone takes it.
    assert row.run_alone is True
    make_due()
    send("batch-mate", tag="other")
    _token, others = delivery.claim_due(10)
    assert [d.message_id for d in others] != [] and msg_id not in {d.message_id for d in others}
    delivery.release(others, _token)
    make_due()
    run_due()
    row.refresh_from_db()
    assert (row.status, row.attempts, row.run_alone) == ("SUCCEEDED", 2, False)
    assert effects("died") == {"test_all_group": 1}


def test_redelivery_after_the_handler_committed_changes_nothing(broker_env):
    send("again", tag="other")
    token, batch = delivery.claim_due(10)
    assert delivery.run_claimed(batch[0], token, delivery.BatchReport()) == "SUCCEEDED"

    # the task is delivered again (its worker died before acknowledging it)
    assert delivery.run_claimed(batch[0], token, delivery.BatchReport()) == "SKIPPED"
    assert run_due().claimed == 0
    assert effects("again") == {"test_all_group": 1}


def test_concurrent_batches_claim_disjoint_deliveries(broker_env):
    for i in range(30):
        send(f"c-{i}", tag="pay")
    reports = []

    def run():
        reports.append(delivery.deliver_due(budget_seconds=10, batch_size=7))
        connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sum(r.claimed for r in reports) == 90
    assert set(Delivery.objects.values_list("status", flat=True)) == {"SUCCEEDED"}
    assert set(Delivery.objects.values_list("attempts", flat=True)) == {1}
    from txbroker.tests.support.models import Effect

    assert set(Effect.objects.values_list("count", flat=True)) == {1}


def test_a_stopping_worker_releases_what_it_claimed_but_did_not_start(broker_env):
    for i in range(3):
        send(f"s-{i}", tag="other")
    token, batch = delivery.claim_due(10)
    report = delivery.BatchReport()
    delivery.run_claimed(batch[0], token, report)
    delivery.stopping.set()
    try:
        delivery.run_batch(batch[1:], token, report)
    finally:
        delivery.stopping.clear()

    assert report.released == 2
    statuses = sorted(Delivery.objects.values_list("status", "attempts"))
    assert statuses == [("RETRY", 0), ("RETRY", 0), ("SUCCEEDED", 1)]
    assert Delivery.objects.due().count() == 2  # due now, no claim timeout to wait for


def test_sweep_reclaims_expired_claims_and_enqueues_for_every_due_delivery(
    broker_env, redis_client, broker_setting
):
    broker_setting("TXBROKER_BATCH_SIZE", "4")
    redis_client.flushdb()
    for i in range(5):
        send(f"w-{i}", tag="pay")  # 15 deliveries, plus 5 fast-path tasks
    delivery.claim_due(2)
    Delivery.objects.filter(status="RUNNING").update(claimed_until=timezone.now() - timedelta(seconds=1))
    redis_client.flushdb()  # every queued task lost

    report = delivery.sweep()

    assert report.reclaimed == 2
    assert report.due == 15
    assert report.enqueued == 4  # ceil(15 / 4) wake-ups
    assert redis_client.llen("celery") == 4


def test_messages_in_other_states_get_no_delivery_work(broker_env):
    send("rb", answer="ROLLBACK")
    assert not Delivery.objects.exists()
    assert Message.objects.get().state == "ROLLED_BACK"
