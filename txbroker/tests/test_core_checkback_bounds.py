"""Check-back that no checker can stall: each message checked in its own short transaction,
each checker call bounded by TXBROKER_CHECK_TIMEOUT, a pass bounded by its budget, and
Celery's soft time limit never taken as an answer."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.utils import timezone

from txbroker import LocalTransactionState
from txbroker.checkback import check_pass
from txbroker.models import Message, TraceEvent
from txbroker.registry import registry
from txbroker.testing import side_connection
from txbroker.tests.helpers import send, state_of
from txbroker.tests.processes import manage_argv, wait_for
from txbroker.tests.support.checkers import PRODUCER_GROUP, check
from txbroker.tests.support.models import Plan

pytestmark = pytest.mark.django_db(transaction=True)


def unknown(key: str, **fields) -> str:
    """A HALF message whose local record exists (its checker answers COMMIT), due now."""
    msg_id = send(key, answer=LocalTransactionState.UNKNOWN, **fields).msg_id
    Message.objects.filter(pk=msg_id).update(next_check_at=timezone.now() - timedelta(seconds=1))
    return msg_id


def checks(msg_id: str) -> list[str]:
    return list(
        TraceEvent.objects.filter(message_id=msg_id, event="CHECK")
        .order_by("id")
        .values_list("detail", flat=True)
    )


@contextmanager
def checker_replaced(checker):
    registry.unregister_checker(PRODUCER_GROUP)
    registry.register_checker(PRODUCER_GROUP, checker)
    try:
        yield
    finally:
        registry.unregister_checker(PRODUCER_GROUP)
        registry.register_checker(PRODUCER_GROUP, check)


@pytest.fixture
def check_timeout(broker_env, broker_setting) -> float:
    broker_setting("TXBROKER_CHECK_TIMEOUT", "1")
    return 1.0


def test_a_checker_that_blocks_for_a_minute_leaves_every_other_message_settled_on_time(check_timeout):
    Plan.objects.create(key="blocks", check_answer="BLOCK")  # time.sleep(60) in the checker
    blocked = unknown("blocks")
    others = [unknown(f"fine-{i}") for i in range(10)]

    started = time.monotonic()
    report = check_pass()
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"one pass took {elapsed:.1f}s"
    assert report.outcomes == {"UNKNOWN": 1, "COMMITTED": 10}
    assert {state_of(m) for m in others} == {"COMMITTED"}
    message = Message.objects.get(pk=blocked)
    assert (message.state, message.check_times) == ("HALF", 1)  # counted: the checker was asked
    assert checks(blocked)[0].startswith("check 1/15: UNKNOWN (timed out after 1.0 s, limit 1 s)")
    assert message.next_check_at > timezone.now()  # postponed by the interval, like any UNKNOWN


def test_a_checker_waiting_on_a_lock_is_cut_by_the_database_at_the_check_timeout(check_timeout):
    """A lock wait inside the driver cannot be interrupted from Python: PostgreSQL ends it
    (SET LOCAL lock_timeout for the check's transaction)."""
    Plan.objects.create(key="locked", check_answer="LOCK")  # SELECT ... FOR UPDATE of its plan row
    locked = unknown("locked")
    fine = unknown("free")
    holder = side_connection()
    try:
        with holder.cursor() as cursor:  # another session holds the plan row (a frozen producer)
            cursor.execute("SELECT 1 FROM txbroker_support_plan WHERE key = 'locked' FOR UPDATE")
        started = time.monotonic()
        report = check_pass()
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()

    assert elapsed < 5
    assert report.outcomes == {"UNKNOWN": 1, "COMMITTED": 1}
    assert state_of(fine) == "COMMITTED"
    assert "UNKNOWN (timed out after" in checks(locked)[0]


def test_a_settled_message_is_committed_while_a_later_checker_still_blocks(
    check_timeout, processes, broker_setting
):
    """Per-message transactions: the first message's COMMIT is visible (and its checker's
    locks gone) while the pass is still blocked on the next one; a producer's own commit
    of a message leased but not yet checked goes through at once, and the pass, having lost
    it, records nothing about it."""
    broker_setting("TXBROKER_CHECK_TIMEOUT", "6")
    first = unknown("first")
    Plan.objects.create(key="second", check_answer="BLOCK")
    second = unknown("second")
    third = unknown("third")
    Message.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(minutes=3))  # checked first
    Message.objects.filter(pk=second).update(created_at=timezone.now() - timedelta(minutes=2))
    Message.objects.filter(pk=third).update(created_at=timezone.now() - timedelta(minutes=1))
    checker = processes(
        "check-pass",
        manage_argv("txbroker_check"),
        TXBROKER_CHECK_TIMEOUT="6",
        TXBROKER_CHECK_INTERVAL="30",
    )
    wait_for(lambda: state_of(first) == "COMMITTED", timeout=20, what="the first message settled")
    assert Message.objects.get(pk=third).check_token  # leased to the blocked pass, not checked yet
    assert checker.alive()  # still blocked on the second message's checker

    from txbroker.transitions import message_commit

    third_message = Message.objects.get(pk=third)
    started = time.monotonic()
    assert message_commit(third_message, by="producer") is True  # not held up by the pass
    assert time.monotonic() - started < 1

    assert checker.popen.wait(30) == 0
    assert checks(third) == []  # the pass lost it: nothing recorded
    assert not TraceEvent.objects.filter(message_id=third, event="REFUSED").exists()
    assert state_of(second) == "HALF" and "timed out" in checks(second)[0]


def test_a_soft_time_limit_ends_the_pass_and_is_not_an_answer(broker_env, monkeypatch):
    """Celery's SoftTimeLimitExceeded raised inside a checker: the pass stops, that check
    does not count, the rest of the batch is given back, due now."""
    ids = [unknown(f"soft-{i}") for i in range(3)]
    Message.objects.filter(pk=ids[0]).update(created_at=timezone.now() - timedelta(minutes=5))
    calls = []

    def interrupted(message):
        calls.append(message.msg_id)
        if len(calls) == 2:
            raise SoftTimeLimitExceeded()
        return check(message)

    with checker_replaced(interrupted), pytest.raises(SoftTimeLimitExceeded):
        check_pass()

    interrupted_id = calls[1]
    message = Message.objects.get(pk=interrupted_id)
    assert (message.state, message.check_times, message.check_token) == ("HALF", 0, "")
    assert checks(interrupted_id) == []
    assert Message.objects.filter(pk__in=ids, state="HALF").count() == 2
    assert Message.objects.due_for_check().count() == 2  # given back, due at once
    assert check_pass().outcomes == {"COMMITTED": 2}


def test_a_pass_stops_cleanly_at_its_budget_and_gives_back_the_rest(broker_env, broker_setting):
    broker_setting("TXBROKER_CHECK_BATCH_SIZE", "50")
    ids = [unknown(f"budget-{i}") for i in range(6)]

    def slow(message):
        time.sleep(0.4)
        return check(message)

    with checker_replaced(slow):
        report = check_pass(budget=1.0)

    assert 1 <= report.checked < 6
    assert report.released == 6 - report.checked
    assert (
        Message.objects.filter(pk__in=ids, state="HALF", check_token="", check_times=0).count()
        == report.released
    )
    assert check_pass().outcomes == {"COMMITTED": report.released}


def test_concurrent_passes_check_each_message_once_even_with_slow_checkers(broker_env, broker_setting):
    broker_setting("TXBROKER_CHECK_BATCH_SIZE", "3")
    ids = [unknown(f"conc-{i}") for i in range(12)]

    def slow(message):
        time.sleep(0.05)
        return check(message)

    reports = []

    def run():
        reports.append(check_pass())
        connection.close()

    with checker_replaced(slow):
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sum(r.checked for r in reports) == 12
    assert {state_of(m) for m in ids} == {"COMMITTED"}
    assert TraceEvent.objects.filter(event="CHECK").count() == 12
