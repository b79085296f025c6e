"""How the chaos run tells whether a producer was alive: deaths read from the logs of
gunicorn, Celery and the fault points (shifted back for a skewed clock), and freeze
windows, matched against the span from a half message to its rollback."""

from __future__ import annotations

import calendar
import time

import pytest

from harness.chaos.cluster import Death
from harness.chaos.faults import FAULT_KINDS, FaultPlan, parse_fault_kinds
from harness.chaos.history import ProcessHistory, death_counts, read_logs
from harness.chaos.injector import FreezeWindow


def at(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")))


def test_deaths_and_fault_points_are_read_from_every_log_format(tmp_path):
    web = tmp_path / "web.log"
    web.write_text(
        "2026-01-02 10:00:01,500 CRITICAL txbroker.faults: fault injected: after_half_stored, pid 101 exits now\n"
        "[2026-01-02 10:00:02 +0000] [100] [CRITICAL] WORKER TIMEOUT (pid:102)\n"
        "[2026-01-02 10:00:03 +0000] [100] [ERROR] Worker (pid:102) was sent SIGKILL! Perhaps out of memory?\n"
    )
    worker = tmp_path / "worker2.log"  # run five minutes ahead
    worker.write_text(
        "[2026-01-02 10:05:04,000: ERROR/MainProcess] Hard time limit (150s) exceeded for txbroker.deliver[abc]\n"
        "[2026-01-02 10:05:05,250: ERROR/MainProcess] Process 'ForkPoolWorker-3' pid:201 exited with "
        "'signal 9 (SIGKILL)'\n"
        "[2026-01-02 10:05:30,000: CRITICAL/ForkPoolWorker-4] fault injected: poison_message 01ab, pid 202 exits now\n"
        "[2026-01-02 10:05:30,100: ERROR/MainProcess] Process 'ForkPoolWorker-4' pid:202 exited with 'exitcode 137'\n"
        "[2026-01-02 10:05:31,000: WARNING/ForkPoolWorker-5] fault injected: checker_block, pid 203 blocks for 60s\n"
    )

    events = read_logs([web, worker], {worker: 300.0})

    deaths = {(d.pid, d.cause): d.at for d in events.deaths}
    assert deaths[(101, "fault point after_half_stored")] == at("2026-01-02 10:00:01") + 0.5
    assert deaths[(102, "gunicorn WORKER TIMEOUT")] == at("2026-01-02 10:00:02")
    assert (
        deaths[(201, "Celery hard time limit (txbroker.deliver, 150 s)")] == at("2026-01-02 10:00:05") + 0.25
    )
    assert (202, "fault point poison_message") in deaths
    assert (202, "Celery pool process ended (exitcode 137)") in deaths  # no hard limit just before
    assert events.fault_points == {"after_half_stored": 1, "poison_message": 1, "checker_block": 1}
    assert events.poison_subjects == {"01ab": 1}
    assert death_counts(events.deaths) == {"gunicorn_worker_timeout": 1, "celery_hard_time_limit": 1}


def test_a_producer_is_excused_only_by_a_death_or_freeze_between_its_half_message_and_the_rollback():
    frozen = FreezeWindow(
        pid=7,
        what="gunicorn worker",
        started=100.0,
        planned_seconds=30,
        in_transaction=True,
        query="",
        ended=130.0,
    )
    history = ProcessHistory.of(
        [Death(5, 105.0, "fault point after_half_stored"), Death(6, 200.0, "injector SIGKILL")], [frozen]
    )

    assert history.why_not_alive(5, 104.5, 110.0) == ["killed: fault point after_half_stored at +0.5s"]
    assert history.why_not_alive(5, 90.0, 100.0) == []  # died after the rollback: it was alive
    assert history.why_not_alive(6, 100.0, 110.0) == []  # killed long after the rollback
    assert history.why_not_alive(7, 120.0, 125.0) == ["frozen (gunicorn worker) from +-20.0s for 30s"]
    assert history.why_not_alive(7, 131.5, 140.0) == []  # thawed before its half message
    assert history.why_not_alive(8, 0.0, 1000.0) == []


def test_fault_kinds_and_the_fault_points_they_add():
    assert parse_fault_kinds("all") == frozenset(FAULT_KINDS) - {"rabbitmq-restart"}
    assert parse_fault_kinds("all", "amqp") == frozenset(FAULT_KINDS) - {"redis-wipe"}
    assert parse_fault_kinds("freeze, pg-crash") == {"freeze", "pg-crash"}
    assert parse_fault_kinds("kill,rabbitmq-restart", "amqp") == {"kill", "rabbitmq-restart"}
    with pytest.raises(ValueError, match="'rabbitmq-restart' needs --broker amqp"):
        parse_fault_kinds("kill,rabbitmq-restart")
    with pytest.raises(ValueError, match="'redis-wipe' needs --broker redis"):
        parse_fault_kinds("redis-wipe", "amqp")
    plan = FaultPlan(
        kinds=parse_fault_kinds("poison,slow-check,skew"), poison_share=0.01, slow_check_share=0.1
    )
    assert plan.fault_points("handler_after_commit=0.05") == (
        "handler_after_commit=0.05,poison_message=0.01,checker_block=0.1"
    )
    assert plan.lasting_fault_points() == "poison_message=0.01"  # a poison message stays poison
    assert plan.clock_offsets() == {"worker2": 300.0, "beat": 300.0}
    assert FaultPlan(kinds=frozenset({"kill"})).fault_points("") == ""
