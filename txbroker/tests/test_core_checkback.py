"""Check-back: UNKNOWN settled to COMMIT or ROLLBACK, checks counted only when a checker
was asked, DISCARDED at the maximum and resumed, bounded SKIP LOCKED batches."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from txbroker import LocalTransactionState, operations
from txbroker.checkback import check_pass
from txbroker.models import Message, TraceEvent
from txbroker.registry import registry
from txbroker.tests.helpers import deliveries, send, state_of
from txbroker.tests.support.checkers import PRODUCER_GROUP, check
from txbroker.tests.support.models import LocalRecord, Plan

pytestmark = pytest.mark.django_db(transaction=True)

UNKNOWN = LocalTransactionState.UNKNOWN


def unknown(key: str, **fields) -> str:
    return send(key, answer=UNKNOWN, **fields).msg_id


def make_due(*msg_ids: str) -> None:
    Message.objects.filter(pk__in=msg_ids).update(next_check_at=timezone.now() - timedelta(seconds=1))


def checks(msg_id: str) -> list[str]:
    return list(
        TraceEvent.objects.filter(message_id=msg_id, event="CHECK")
        .order_by("id")
        .values_list("detail", flat=True)
    )


def test_unknown_with_a_local_record_is_committed_by_check_back(broker_env):
    msg_id = unknown("paid")  # the local record was written, the answer was lost
    assert LocalRecord.objects.filter(key="paid").exists()
    make_due(msg_id)

    report = check_pass()

    assert report.checked == 1 and report.outcomes["COMMITTED"] == 1
    message = Message.objects.get(pk=msg_id)
    assert (message.state, message.check_times) == ("COMMITTED", 1)
    assert set(deliveries(msg_id).values()) == {"PENDING"}
    committed = TraceEvent.objects.get(message_id=msg_id, event="COMMITTED")
    assert committed.detail.startswith("by check-back")


def test_unknown_without_a_local_record_is_rolled_back_by_check_back(broker_env):
    msg_id = send("unpaid", local=lambda message, arg: UNKNOWN).msg_id
    make_due(msg_id)

    check_pass()

    assert state_of(msg_id) == "ROLLED_BACK"
    assert deliveries(msg_id) == {}


def test_a_young_message_is_not_checked_until_the_transaction_timeout(broker_env, broker_setting):
    broker_setting("TXBROKER_TRANSACTION_TIMEOUT", "60")
    msg_id = unknown("young")

    assert check_pass().checked == 0
    assert Message.objects.get(pk=msg_id).check_times == 0


def test_per_message_check_immunity_overrides_the_timeout(broker_env):
    msg_id = unknown("immune", check_immunity_seconds=3600)
    message = Message.objects.get(pk=msg_id)
    assert message.next_check_at - message.created_at == timedelta(seconds=3600)  # both database time
    assert check_pass().checked == 0
    make_due(msg_id)  # an hour later
    assert check_pass().checked == 1


def test_unknown_answers_wait_an_interval_then_discard_at_the_maximum_then_resume(broker_env, broker_setting):
    broker_setting("TXBROKER_CHECK_MAX", "3")
    Plan.objects.create(key="stuck", check_answer="UNKNOWN")
    msg_id = unknown("stuck")

    for expected in (1, 2):
        make_due(msg_id)
        before = timezone.now()
        assert check_pass().outcomes == {"UNKNOWN": 1}
        message = Message.objects.get(pk=msg_id)
        assert (message.state, message.check_times) == ("HALF", expected)
        # the next check waits at least the interval (1 s in the fast test settings)
        assert message.next_check_at >= before + timedelta(seconds=1)
        assert check_pass().checked == 0  # not due again yet

    make_due(msg_id)
    assert check_pass().outcomes == {"DISCARDED": 1}
    message = Message.objects.get(pk=msg_id)
    assert (message.state, message.check_times) == ("DISCARDED", 3)
    assert deliveries(msg_id) == {}
    Message.objects.update(next_check_at=timezone.now() - timedelta(days=1))
    assert check_pass().checked == 0  # parked, never checked

    Plan.objects.filter(key="stuck").update(check_answer="")
    operations.resume(msg_id, actor="ops")
    assert Message.objects.get(pk=msg_id).check_times == 0
    assert check_pass().outcomes == {"COMMITTED": 1}  # due at once after a resume
    assert Message.objects.get(pk=msg_id).check_times == 1
    assert [d.split(":")[0] for d in checks(msg_id)] == ["check 1/3", "check 2/3", "check 3/3", "check 1/3"]


def test_a_raising_checker_is_unknown_for_that_message_only(broker_env):
    Plan.objects.create(key="boom", check_answer="RAISE")
    boom = unknown("boom")
    fine = unknown("fine")
    make_due(boom, fine)

    report = check_pass()

    assert report.checked == 2
    assert report.outcomes == {"UNKNOWN": 1, "COMMITTED": 1}
    assert state_of(boom) == "HALF" and state_of(fine) == "COMMITTED"
    assert Message.objects.get(pk=boom).check_times == 1
    assert "RuntimeError: checker exploded on purpose" in checks(boom)[0]


def test_without_a_checker_a_message_is_not_checked_and_not_counted(broker_env):
    msg_id = unknown("orphan")
    make_due(msg_id)
    registry.unregister_checker(PRODUCER_GROUP)
    try:
        report = check_pass()
    finally:
        registry.register_checker(PRODUCER_GROUP, check)

    assert report.checked == 0 and report.outcomes == {"NO_CHECKER": 1}
    message = Message.objects.get(pk=msg_id)
    assert (message.state, message.check_times) == ("HALF", 0)
    assert TraceEvent.objects.filter(message_id=msg_id, event="CHECK_SKIPPED").exists()


def test_late_commit_after_check_back_rolled_back_is_refused_and_leaves_no_delivery(broker_env):
    """The producer's answer arrives after check-back already settled the message."""
    settle_now = threading.Event()
    proceed = threading.Event()

    def slow_local_transaction(message, arg):
        # the local transaction stalls past the timeout; check-back finds no record
        settle_now.set()
        assert proceed.wait(20)
        LocalRecord.objects.create(key=message.key)
        return LocalTransactionState.COMMIT

    results = {}
    producer = threading.Thread(target=lambda: results.update(r=send("late", local=slow_local_transaction)))
    producer.start()
    assert settle_now.wait(20)
    msg_id = Message.objects.get(keys__contains=["late"]).msg_id
    make_due(msg_id)
    assert check_pass().outcomes == {"ROLLED_BACK": 1}
    proceed.set()
    producer.join(20)

    assert results["r"].local_transaction_state == LocalTransactionState.COMMIT
    assert results["r"].message_state == "ROLLED_BACK"
    assert state_of(msg_id) == "ROLLED_BACK"
    assert deliveries(msg_id) == {}
    refused = TraceEvent.objects.get(message_id=msg_id, event="REFUSED")
    assert refused.detail == "commit by producer refused: the message is ROLLED_BACK"


def test_concurrent_passes_never_check_one_message_twice(broker_env, broker_setting):
    broker_setting("TXBROKER_CHECK_BATCH_SIZE", "5")
    ids = [unknown(f"many-{i}") for i in range(20)]
    make_due(*ids)
    reports = []

    def run():
        reports.append(check_pass())
        connection.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert sum(r.checked for r in reports) == 20
    assert set(Message.objects.values_list("check_times", flat=True)) == {1}
    assert TraceEvent.objects.filter(event="CHECK").count() == 20


def test_a_pass_claims_bounded_batches_with_skip_locked(broker_env, broker_setting):
    broker_setting("TXBROKER_CHECK_BATCH_SIZE", "4")
    make_due(*[unknown(f"b-{i}") for i in range(10)])

    with CaptureQueriesContext(connection) as ctx:
        report = check_pass()

    claims = [q["sql"] for q in ctx.captured_queries if "FOR UPDATE SKIP LOCKED" in q["sql"]]
    assert report.checked == 10
    assert len(claims) == 3  # 4 + 4 + 2
    assert all("LIMIT 4" in sql and "\"state\" = 'HALF'" in sql for sql in claims)
