"""Frozen processes (SIGSTOP: a paused VM or container, a stuck host) while their session is
inside a transaction: in a handler, in a producer's local transaction, in a check. With
the database's bounds (idle_in_transaction_session_timeout, lock_timeout), the frozen
session and its locks are gone after a bounded time, its work is finished by another
process, and when the frozen process thaws its commit fails and nothing is applied twice.

Scaled-down bounds for the test: 2 s idle-in-transaction, 1 s lock wait, 3 s claim."""

from __future__ import annotations

import os
import signal
import time

import pytest

from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests.helpers import deliveries, send, state_of
from txbroker.tests.processes import manage_argv, start_worker, wait_for
from txbroker.tests.support.models import Attempt, Effect, LocalRecord, Plan, Shared

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

BOUNDS = {
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT": "2",
    "DATABASE_LOCK_TIMEOUT": "1",
    "DATABASE_STATEMENT_TIMEOUT": "5",
    "TXBROKER_CLAIM_TIMEOUT": "3",
    "TXBROKER_CHECK_TIMEOUT": "1",
}


def shell(code: str) -> list[str]:
    return manage_argv("shell", "-c", code)


def freeze(pid: int) -> float:
    os.kill(pid, signal.SIGSTOP)
    return time.monotonic()


def thaw(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def test_a_worker_frozen_in_a_handler_delays_others_by_a_bounded_time_and_applies_nothing_twice(
    beat, tmp_path, broker_setting
):
    for key, value in BOUNDS.items():
        broker_setting(key, value)
    Shared.objects.create(name="balance")
    Plan.objects.create(key="frozen", shared_lock="balance", sleep_seconds=4)
    Plan.objects.create(key="neighbour", shared_lock="balance")
    doomed = start_worker(tmp_path, name="to-freeze", concurrency=1, **BOUNDS)
    rescuer = None
    frozen_pid = None
    try:
        frozen_msg = send("frozen", tag="other").msg_id
        attempt = wait_for(
            lambda: Attempt.objects.filter(key="frozen").first(), what="the handler inside its transaction"
        )
        frozen_pid = attempt.pid
        frozen_at = freeze(frozen_pid)  # holding the "balance" row lock and its delivery's row lock

        rescuer = start_worker(tmp_path, name="rescuer", concurrency=1, **BOUNDS)
        neighbour_msg = send("neighbour", tag="other").msg_id  # needs the same row
        wait_for(
            lambda: deliveries(neighbour_msg) == {"test_all_group": "SUCCEEDED"},
            timeout=40,
            what="the neighbour",
        )
        neighbour_after = time.monotonic() - frozen_at
        wait_for(
            lambda: deliveries(frozen_msg) == {"test_all_group": "SUCCEEDED"},
            timeout=40,
            what="the frozen delivery",
        )
        frozen_after = time.monotonic() - frozen_at

        thaw(frozen_pid)
        frozen_pid = None
        wait_for(
            lambda: "this worker lost its claim" in doomed.log(),
            timeout=30,
            what="the thawed worker to notice",
        )
        assert doomed.alive()
    finally:
        if frozen_pid:
            thaw(frozen_pid)
        doomed.stop()
        if rescuer:
            rescuer.stop()

    print(
        f"frozen handler: neighbour done {neighbour_after:.1f}s, the frozen delivery {frozen_after:.1f}s after"
    )
    # idle-in-transaction (2 s) + a lock wait (1 s) + retries; a claim (3 s) + a sweep + a retry
    assert neighbour_after < 15
    assert frozen_after < 20
    assert Effect.objects.get(key="frozen").count == 1
    assert Effect.objects.get(key="neighbour").count == 1
    assert Shared.objects.get(name="balance").hits == 2  # the frozen first attempt's update rolled back
    row = Delivery.objects.get(message_id=frozen_msg)
    assert row.attempts == 2
    reclaimed = TraceEvent.objects.get(message_id=frozen_msg, event="RECLAIMED")
    assert "worker died during the handler" in reclaimed.detail


def test_a_producer_frozen_in_its_local_transaction_is_rolled_back_after_the_bound(
    processes, beat, worker_with_bounds
):
    Plan.objects.create(key="stall", check_answer="LOCK")  # the checker takes the row the producer holds
    producer = processes(
        "producer",
        shell("from txbroker.tests.support.hang import send_and_stall; send_and_stall('stall', 3)"),
        **BOUNDS,
    )
    wait_for(
        lambda: Attempt.objects.filter(key="stall", consumer_group="local").exists(),
        what="the local transaction holding its locks",
    )
    frozen_at = freeze(producer.pid)
    try:
        message = Message.objects.get(keys__contains=["stall"])
        wait_for(
            lambda: state_of(message.msg_id) == "ROLLED_BACK", timeout=30, what="check-back to roll it back"
        )
        settled_after = time.monotonic() - frozen_at
    finally:
        thaw(producer.pid)
    assert producer.popen.wait(60) == 0, producer.log()
    print(f"frozen producer: rolled back {settled_after:.1f}s after the freeze")
    assert settled_after < 15  # idle-in-transaction (2 s) + a check interval and its timeout
    assert "result: UNKNOWN ROLLED_BACK" in producer.log()  # its commit failed when it thawed
    assert not LocalRecord.objects.filter(key="stall").exists()
    assert deliveries(message.msg_id) == {}


def test_a_check_pass_frozen_in_a_checker_leaves_the_message_to_another_pass(processes, broker_env):
    Plan.objects.create(key="slow-check", check_answer="SLEEP", sleep_seconds=3)
    message = send("slow-check", answer="UNKNOWN", check_immunity_seconds=0).msg_id  # its record exists
    env = {**BOUNDS, "TXBROKER_CHECK_TIMEOUT": "5", "TXBROKER_CHECK_INTERVAL": "1"}  # a 6 s lease
    first = processes("check-1", manage_argv("txbroker_check"), **env)
    wait_for(
        lambda: Attempt.objects.filter(key="slow-check", consumer_group="checker").exists(),
        what="the checker inside its transaction",
    )
    frozen_at = freeze(first.pid)
    try:
        Plan.objects.filter(key="slow-check").update(check_answer="LOCK")  # the next checker is quick
        second_runs = []

        def another_pass() -> bool:
            second_runs.append(
                processes(f"check-{len(second_runs) + 2}", manage_argv("txbroker_check"), **env)
            )
            second_runs[-1].popen.wait(60)
            return state_of(message) == "COMMITTED"

        wait_for(another_pass, timeout=40, interval=0.5, what="another pass to settle it")
        settled_after = time.monotonic() - frozen_at
    finally:
        thaw(first.pid)
    assert first.popen.wait(60) == 0, first.log()
    print(f"frozen check pass: settled by another pass {settled_after:.1f}s after the freeze")
    assert settled_after < 20  # the lease (6 s) + a pass
    checks = list(
        TraceEvent.objects.filter(message_id=message, event="CHECK").values_list("detail", flat=True)
    )
    assert len(checks) == 1 and "COMMIT" in checks[0]  # the frozen pass recorded nothing
    assert Delivery.objects.filter(message_id=message).count() == 3
    assert Message.objects.get(pk=message).check_times == 1


@pytest.fixture
def worker_with_bounds(transactional_db, broker_env, clean_queue, tmp_path, broker_setting):
    for key, value in BOUNDS.items():
        broker_setting(key, value)
    proc = start_worker(tmp_path, name="bounded", **BOUNDS)
    yield proc
    proc.stop()
