"""A claimed batch's handlers in one transaction (txbroker.batch): one statement starts the
batch, one locks it, one settles what succeeded; a failing handler rolls back to its
savepoint alone; a claim taken back is not settled; the budget bounds the transaction; a
worker dying mid-batch leaves its batch-mates' attempt counts as they were."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from txbroker import batch, delivery, fastpath, operations
from txbroker.delivery_transitions import VOID_BATCH
from txbroker.models import Delivery, TraceEvent
from txbroker.tests.helpers import effects, send
from txbroker.tests.support.models import Plan, Shared

pytestmark = pytest.mark.django_db(transaction=True)

START = "attempts = attempts + 1"
LOCK = "ORDER BY id FOR UPDATE"
SETTLE = "succeeded_at = statement_timestamp()"


def statements(queries: CaptureQueriesContext, marker: str) -> int:
    return sum(marker in q["sql"] for q in queries.captured_queries)


def run(size: int = 10) -> delivery.BatchReport:
    token, claimed = delivery.claim_due(size)
    report = delivery.BatchReport(claimed=len(claimed))
    delivery.run_batch(claimed, token, report)
    return report


def test_a_batch_commits_together_and_a_failing_handler_rolls_back_alone(broker_env, broker_setting):
    broker_setting("TXBROKER_BATCH_TRANSACTION_BUDGET", "60")  # a loaded machine may not split it
    assert batch.enabled()
    Shared.objects.create(name="balance")
    # Its handler writes (the shared row), then fails: its savepoint takes the write back.
    Plan.objects.create(key="bad", fail_times=1, shared_lock="balance")
    sent = [send(key, tag="other").msg_id for key in ("good-0", "bad", "good-1")]

    with CaptureQueriesContext(connection) as queries:
        report = run()

    assert (report.succeeded, report.failed, report.skipped) == (2, 1, 0)
    assert (statements(queries, START), statements(queries, LOCK), statements(queries, SETTLE)) == (1, 1, 1)
    rows = {d.message_id: d for d in Delivery.objects.all()}
    assert [(rows[m].status, rows[m].attempts) for m in sent] == [
        ("SUCCEEDED", 1),
        ("RETRY", 1),
        ("SUCCEEDED", 1),
    ]
    # One statement settled both: one database time.
    assert rows[sent[0]].succeeded_at == rows[sent[2]].succeeded_at
    assert effects("good-0") == effects("good-1") == {"test_all_group": 1}
    assert effects("bad") == {} and Shared.objects.get().hits == 0
    # The failure is a trace row; the successes are on their rows, with their times.
    assert list(TraceEvent.objects.filter(event="DELIVERY_ATTEMPT").values_list("message_id", "outcome")) == [
        (sent[1], "FAILED")
    ]
    assert rows[sent[0]].duration_ms > 0 and rows[sent[2]].duration_ms > 0

    Delivery.objects.filter(status="RETRY").update(next_attempt_at=timezone.now())
    assert run().succeeded == 1
    assert effects("bad") == {"test_all_group": 1} and Shared.objects.get().hits == 1
    assert Delivery.objects.get(message_id=sent[1]).attempts == 2


def test_a_delivery_whose_claim_was_taken_back_is_neither_run_nor_settled(broker_env, monkeypatch):
    kept, lost = (send(key, tag="other").msg_id for key in ("kept", "lost"))
    start = fastpath.batch_start

    def start_then_lose_one(db, ids, token, **kw):
        started = start(db, ids, token, **kw)
        # Meanwhile its claim expired and another worker claimed it.
        Delivery.objects.filter(message_id=lost).update(claim_token="someone-else")
        return started

    monkeypatch.setattr(fastpath, "batch_start", start_then_lose_one)
    report = run()

    assert (report.succeeded, report.skipped, report.failed) == (1, 1, 0)
    assert Delivery.objects.get(message_id=kept).status == "SUCCEEDED"
    row = Delivery.objects.get(message_id=lost)
    assert (row.status, row.claim_token) == ("RUNNING", "someone-else")  # untouched
    assert effects("lost") == {} and effects("kept") == {"test_all_group": 1}
    assert not TraceEvent.objects.filter(message_id=lost, event="DELIVERY_ATTEMPT").exists()


def test_a_worker_dying_mid_batch_leaves_every_attempt_count_as_it_was(broker_env):
    sent = [send(f"void-{i}", tag="other").msg_id for i in range(3)]
    token, claimed = delivery.claim_due(10)
    # What run_together commits before the handlers; then the worker dies.
    assert sorted(
        fastpath.batch_start("default", [d.pk for d in claimed], token, claim_timeout=30).values()
    ) == [
        1,
        1,
        1,
    ]
    Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))

    assert delivery.reclaim_expired() == 3

    for row in Delivery.objects.all():
        assert (row.status, row.attempts, row.run_alone, row.started_at, row.claim_token) == (
            "RETRY",
            0,
            True,
            None,
            "",
        )
    details = set(TraceEvent.objects.filter(event="RECLAIMED").values_list("detail", flat=True))
    assert details == {VOID_BATCH + "; due again now, to run alone (attempts unchanged)"}
    # From now on each runs alone, where a death would count.
    assert delivery.claim_due(10)[1] == []  # a batch claim leaves them
    assert delivery.deliver_due(budget_seconds=10).succeeded == 3
    assert set(Delivery.objects.values_list("attempts", "run_alone")) == {(1, False)}
    assert all(effects(f"void-{i}") == {"test_all_group": 1} for i in range(3)), sent


def test_the_budget_ends_a_batch_transaction_and_the_rest_runs_in_the_next(broker_env, broker_setting):
    broker_setting("TXBROKER_BATCH_TRANSACTION_BUDGET", "0.3")
    Plan.objects.create(key="slow-0", sleep_seconds=0.5)
    sent = [send(f"slow-{i}", tag="other").msg_id for i in range(4)]

    with CaptureQueriesContext(connection) as queries:
        report = run()

    assert report.succeeded == 4
    assert set(Delivery.objects.values_list("status", "attempts")) == {("SUCCEEDED", 1)}
    # The slow handler's transaction took no other handler: it committed alone.
    at = dict(Delivery.objects.values_list("message_id", "succeeded_at"))
    assert at[sent[0]] not in {at[m] for m in sent[1:]}
    assert statements(queries, SETTLE) >= 2 and statements(queries, "attempts = attempts - 1") == 1
    assert not TraceEvent.objects.filter(event__in=["RELEASED", "RECLAIMED"]).exists()


def test_off_each_delivery_runs_in_a_transaction_of_its_own(broker_env, broker_setting):
    broker_setting("TXBROKER_BATCH_TRANSACTION", "0")
    assert not batch.enabled()
    for i in range(3):
        send(f"own-{i}", tag="other")

    with CaptureQueriesContext(connection) as queries:
        assert run().succeeded == 3

    assert statements(queries, START) == 3 and statements(queries, LOCK) == 0
    assert len(set(Delivery.objects.values_list("succeeded_at", flat=True))) == 3


def test_a_success_writes_no_trace_row_and_the_trace_still_shows_it(broker_env):
    msg_id = send("shown", tag="other").msg_id
    assert delivery.deliver_due(budget_seconds=10).succeeded == 1

    assert not TraceEvent.objects.filter(event="DELIVERY_ATTEMPT").exists()
    row = Delivery.objects.get()
    trace = operations.message_trace(msg_id)
    assert [e.event for e in trace][-1] == "DELIVERY_ATTEMPT"
    line = trace[-1]
    assert (line.consumer_group, line.outcome, line.at) == ("test_all_group", "SUCCEEDED", row.succeeded_at)
    assert line.detail == f"attempt 1: SUCCEEDED in {row.duration_ms:.1f} ms"

    # A forced replay keeps the success line as a row; the next success shows from the row.
    assert operations.replay(msg_id, force=True) == 1
    kept = TraceEvent.objects.get(event="DELIVERY_ATTEMPT")
    assert (kept.detail, kept.at) == (line.detail, line.at)
    assert Delivery.objects.get().duration_ms is None
    assert delivery.deliver_due(budget_seconds=10).succeeded == 1
    lines = [(e.event, e.detail.split(" in ")[0]) for e in operations.message_trace(msg_id)][-3:]
    assert lines == [
        ("DELIVERY_ATTEMPT", "attempt 1: SUCCEEDED"),
        ("REPLAY", "SUCCEEDED -> PENDING (forced)"),
        ("DELIVERY_ATTEMPT", "attempt 2: SUCCEEDED"),
    ]


def test_a_handler_that_loses_a_deadlock_to_another_batch_runs_again_uncounted(broker_env, broker_setting):
    """Two batches take two shared rows in opposite orders: PostgreSQL ends one handler's
    wait with a deadlock error; its batch commits what ran before it and runs it again
    first in its next transaction, as no failed attempt."""
    broker_setting("TXBROKER_BATCH_TRANSACTION_BUDGET", "60")
    for name in ("a", "b"):
        Shared.objects.create(name=name)
    # First of each batch: take one row and hold it; second: take the other one.
    plans = {"one-first": ("a", 1.0), "one-second": ("b", 0), "two-first": ("b", 1.0), "two-second": ("a", 0)}
    for key, (row, sleep) in plans.items():
        Plan.objects.create(key=key, shared_lock=row, sleep_seconds=sleep)
    batches = []
    for pair in (("one-first", "one-second"), ("two-first", "two-second")):
        for key in pair:
            send(key, tag="other")
        batches.append(delivery.claim_due(10))
    reports = []

    def run_one(token, claimed):
        report = delivery.BatchReport()
        delivery.run_batch(claimed, token, report)
        reports.append(report)
        connection.close()

    threads = [threading.Thread(target=run_one, args=pair) for pair in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert sorted((r.succeeded, r.failed) for r in reports) == [(2, 0), (2, 0)]
    assert set(Delivery.objects.values_list("status", "attempts")) == {("SUCCEEDED", 1)}
    assert not TraceEvent.objects.filter(event="DELIVERY_ATTEMPT").exists()  # no failure recorded
    assert {s.name: s.hits for s in Shared.objects.all()} == {"a": 2, "b": 2}
    assert all(effects(key) == {"test_all_group": 1} for key in plans)
