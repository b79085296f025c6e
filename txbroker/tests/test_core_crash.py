"""Crashes and outages with real processes: producers killed with SIGKILL mid-send, the
broker losing every queued task, workers killed mid-handler or stopped mid-batch. Every message
is settled right, and every delivery completes, once."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.utils import timezone

from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests.helpers import deliveries, effects, state_of
from txbroker.tests.processes import lose_queued_tasks, manage_argv, queued_tasks, start_worker, wait_for
from txbroker.tests.support.models import Attempt, Effect, LocalRecord, Plan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ALL_GROUPS = {"test_all_group": 1, "test_pay_group": 1, "test_refund_group": 1}


def shell(code: str) -> list[str]:
    return manage_argv("shell", "-c", code)


def message_for(key: str):
    return Message.objects.filter(key_rows__key=key).first()


def all_succeeded(msg_id: str) -> bool:
    states = deliveries(msg_id)
    return bool(states) and set(states.values()) == {"SUCCEEDED"}


@pytest.mark.parametrize(
    ("phase", "settled", "expected_effects"),
    [("before_local", "ROLLED_BACK", {}), ("after_local", "COMMITTED", ALL_GROUPS)],
)
def test_producer_killed_with_sigkill_mid_send_is_settled_by_check_back(
    processes, worker, beat, phase, settled, expected_effects
):
    key = f"kill-{phase}"
    producer = processes(
        "producer",
        shell(f"from txbroker.tests.support.hang import send_and_hang; send_and_hang({key!r}, {phase!r})"),
    )
    if phase == "before_local":
        wait_for(lambda: message_for(key), what="half message stored")
    else:
        wait_for(lambda: LocalRecord.objects.filter(key=key).exists(), what="local transaction committed")
    os.killpg(producer.pid, signal.SIGKILL)
    producer.popen.wait(10)
    assert producer.popen.returncode == -signal.SIGKILL
    message = message_for(key)
    assert message.state == "HALF"  # the producer never reported

    wait_for(lambda: state_of(message.msg_id) == settled, timeout=30, what=f"check-back to settle {settled}")
    if expected_effects:
        wait_for(lambda: all_succeeded(message.msg_id), timeout=30, what="deliveries done")
    assert effects(key) == expected_effects
    check = TraceEvent.objects.filter(message_id=message.msg_id, event="CHECK").first()
    assert check is not None and check.detail.startswith("check 1/15")


@pytest.mark.parametrize(
    ("fault", "settled"), [("after_half_stored", "ROLLED_BACK"), ("after_local_transaction", "COMMITTED")]
)
def test_fault_injection_kills_the_producer_at_its_point(processes, broker_env, fault, settled):
    key = f"fault-{fault}"
    producer = processes(
        "producer",
        shell(f"from txbroker.tests.support.hang import send_plain; send_plain({key!r})"),
        TXBROKER_FAULTS=f"{fault}=1",
    )
    assert producer.popen.wait(60) == 137
    assert "fault injected: " + fault in producer.log()
    assert f"{fault}=1: the process exits at once" in producer.log()
    message = message_for(key)
    assert message.state == "HALF"
    assert LocalRecord.objects.filter(key=key).exists() == (settled == "COMMITTED")

    from txbroker.checkback import check_pass

    Message.objects.filter(pk=message.pk).update(next_check_at=timezone.now())
    check_pass()
    assert state_of(message.msg_id) == settled


def test_end_to_end_through_a_worker_with_a_retry(processes, worker, beat):
    Plan.objects.create(key="e2e-0", fail_times=1)
    producer = processes(
        "producer", shell("from txbroker.tests.support.hang import send_plain; send_plain('e2e', 3)")
    )
    assert producer.popen.wait(60) == 0

    for i in range(3):
        msg_id = message_for(f"e2e-{i}").msg_id
        wait_for(lambda msg_id=msg_id: all_succeeded(msg_id), timeout=30, what=f"e2e-{i} delivered")
        assert effects(f"e2e-{i}") == ALL_GROUPS
    assert Delivery.objects.filter(message__key_rows__key="e2e-0", attempts=2).count() == 3


def test_every_queued_task_lost_loses_nothing(processes, beat, tmp_path):
    producer = processes(
        "producer", shell("from txbroker.tests.support.hang import send_plain; send_plain('flush', 20)")
    )
    assert producer.popen.wait(60) == 0
    # The fast path queued its wake-up (one for the burst: wake-ups are coalesced while one
    # is waiting, see txbroker.wakeup).
    assert queued_tasks() >= 1
    # A broker restart that keeps nothing: Redis's database emptied (queue and wake-up mark),
    # or RabbitMQ's queue purged (the database's wake-up mark stays until its TTL).
    lose_queued_tasks()

    worker = start_worker(tmp_path, name="late-worker")
    try:
        wait_for(
            lambda: Delivery.objects.filter(status="SUCCEEDED").count() == 60,
            timeout=60,
            what="60 deliveries done",
        )
    finally:
        worker.stop()
    assert Effect.objects.count() == 60
    assert set(Effect.objects.values_list("count", flat=True)) == {1}


def test_worker_killed_with_sigkill_mid_handler_the_delivery_still_completes_once(processes, beat, tmp_path):
    Plan.objects.create(key="slow", sleep_seconds=60)
    # One delivery per batch: the one killed is known, its attempt counts (a batch run in
    # one transaction gives its deliveries back uncounted: test_core_batch.py).
    worker = start_worker(tmp_path, name="doomed", concurrency=1, TXBROKER_BATCH_SIZE="1")
    rescuer = None
    try:
        producer = processes(
            "producer", shell("from txbroker.tests.support.hang import send_plain; send_plain('slow')")
        )
        assert producer.popen.wait(60) == 0
        attempt = wait_for(lambda: Attempt.objects.filter(key="slow").first(), what="a handler to start")
        os.kill(attempt.pid, signal.SIGKILL)  # the pool process running the handler
        worker.kill()
        killed_at = time.monotonic()

        # Batches of one here too: the other two groups' first attempts also hang (20 s
        # handler timeout), and in one batch transaction the second would wait for the
        # first (at most the handler timeout) instead of being taken back after this
        # test's 3 s claim timeout (30 s by default, longer than the handler timeout).
        rescuer = start_worker(tmp_path, name="rescuer", TXBROKER_BATCH_SIZE="1")
        msg_id = message_for("slow").msg_id
        wait_for(lambda: all_succeeded(msg_id), timeout=60, what="the killed delivery to complete")
        recovered_after = time.monotonic() - killed_at
    finally:
        worker.stop()
        if rescuer:
            rescuer.stop()
    assert effects("slow") == ALL_GROUPS
    assert TraceEvent.objects.filter(message_id=msg_id, event="RECLAIMED").exists()
    # claim timeout (3 s) + sweep interval (1 s) + a worker start, with room for a slow machine
    assert recovered_after < 40


def test_worker_dying_after_the_handler_committed_does_not_double_the_effect(processes, beat, tmp_path):
    worker = start_worker(tmp_path, name="dies-after-commit", TXBROKER_FAULTS="handler_after_commit=1")
    try:
        producer = processes(
            "producer", shell("from txbroker.tests.support.hang import send_plain; send_plain('ack')")
        )
        assert producer.popen.wait(60) == 0
        msg_id = message_for("ack").msg_id
        wait_for(lambda: all_succeeded(msg_id), timeout=60, what="deliveries done despite the crashes")
        wait_for(lambda: "fault injected: handler_after_commit" in worker.log(), what="the fault to fire")
    finally:
        worker.stop()
    assert effects("ack") == ALL_GROUPS


@pytest.mark.parametrize("target", ["worker", "pool process"])
def test_worker_stopped_with_sigterm_mid_batch_finishes_or_releases_its_claims(
    processes, beat, tmp_path, broker_setting, target
):
    broker_setting("TXBROKER_CLAIM_TIMEOUT", "300")  # nothing may wait for it
    Plan.objects.create(key="term-0", sleep_seconds=3)
    producer = processes(
        "producer", shell("from txbroker.tests.support.hang import send_plain; send_plain('term', 5)")
    )
    assert producer.popen.wait(60) == 0
    worker = start_worker(tmp_path, name="stopping", concurrency=1, TXBROKER_CLAIM_TIMEOUT="300")
    try:
        attempt = wait_for(
            lambda: Attempt.objects.filter(key="term-0").first(), what="the slow handler to start"
        )
        stopped_at = time.monotonic()
        if target == "worker":
            os.kill(worker.pid, signal.SIGTERM)  # warm shutdown: the running task finishes
            worker.popen.wait(60)
        else:
            os.kill(attempt.pid, signal.SIGTERM)  # the pool process releases the rest of its batch
            wait_for(lambda: TraceEvent.objects.filter(event="RELEASED").exists(), what="released claims")
            worker.stop()
    finally:
        worker.stop()
    assert not Delivery.objects.filter(status="RUNNING").exists()
    released = TraceEvent.objects.filter(event="RELEASED").count()
    finished = Delivery.objects.filter(status="SUCCEEDED").count()
    assert released + finished == 15 and finished >= 1  # the running one finished, the rest went back
    if target == "pool process":
        assert released >= 1

    rescuer = start_worker(tmp_path, name="after-term", TXBROKER_CLAIM_TIMEOUT="300")
    try:
        wait_for(
            lambda: Delivery.objects.filter(status="SUCCEEDED").count() == 15, timeout=60, what="all done"
        )
    finally:
        rescuer.stop()
    delay = time.monotonic() - stopped_at
    print(f"SIGTERM mid-batch: {finished} finished, {released} released, all done {delay:.1f}s after SIGTERM")
    assert delay < 60  # far below the 300 s claim timeout
    assert set(Effect.objects.values_list("count", flat=True)) == {1}
