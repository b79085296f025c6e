"""Hosts whose clocks disagree: worker, sweep and check-back processes run under Debian's
``faketime`` five minutes ahead or behind.
Every time they compare is the database's, so nothing observable changes: no HALF message
checked before its transaction timeout nor minutes late, no fresh claim taken back, no
retry due minutes early or late."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from txbroker import dbtime, delivery
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests.helpers import send, state_of
from txbroker.tests.processes import (
    FAKETIME_ENV,
    child_env,
    manage_argv,
    project_dir,
    skewed,
    start_worker,
    wait_for,
)
from txbroker.tests.support.models import Plan
from txbroker.trace import with_successes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

SKEWS = [pytest.param(300, id="5-minutes-ahead"), pytest.param(-300, id="5-minutes-behind")]


def manage_skewed(command: str, offset: float, **env: str) -> None:
    import subprocess

    argv = skewed(manage_argv(command), offset)
    result = subprocess.run(
        argv,
        cwd=project_dir(),
        env=child_env(**FAKETIME_ENV, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("offset", SKEWS)
def test_a_skewed_check_back_checks_neither_early_nor_late(broker_env, offset):
    """The message's transaction timeout runs on the database's clock: 4 s after it was
    stored, whatever the checking host believes the time is."""
    msg_id = send("skew-check", answer="UNKNOWN", check_immunity_seconds=4).msg_id  # its record exists
    created_at = Message.objects.get(pk=msg_id).created_at

    def checked() -> bool:
        manage_skewed("txbroker_check", offset)
        return state_of(msg_id) != "HALF"

    wait_for(checked, timeout=40, interval=0.2, what="check-back under a skewed clock")

    check = TraceEvent.objects.get(message_id=msg_id, event="CHECK")
    assert check.at - created_at >= timedelta(seconds=4), "checked before its transaction timeout"
    assert check.at - created_at < timedelta(seconds=15), "checked late"
    assert state_of(msg_id) == "COMMITTED"  # the producer was alive and had recorded it


def test_a_sweep_ahead_of_time_never_takes_back_a_fresh_claim_and_one_behind_still_does(broker_env):
    for i in range(3):
        send(f"skew-claim-{i}", tag="other")
    _token, batch = delivery.claim_due(10)  # claimed for 3 s of database time
    assert len(batch) == 3

    manage_skewed("txbroker_sweep", 300)  # its host believes the claims expired minutes ago
    assert set(Delivery.objects.values_list("status", flat=True)) == {"RUNNING"}
    assert not TraceEvent.objects.filter(event="RECLAIMED").exists()

    Delivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))  # really expired
    manage_skewed("txbroker_sweep", -300)  # its host believes they have minutes left
    assert TraceEvent.objects.filter(event="RECLAIMED").count() == 3
    assert set(Delivery.objects.values_list("status", "attempts")) == {("RETRY", 0)}


@pytest.mark.parametrize("offset", SKEWS)
def test_a_skewed_worker_schedules_retries_and_claims_by_the_database_clock(tmp_path, beat, offset):
    env = {"TXBROKER_RETRY_DELAYS": "2s", "TXBROKER_CLAIM_TIMEOUT": "30"}
    Plan.objects.create(key="skew-retry", fail_times=1)
    msg_id = send("skew-retry", tag="other").msg_id
    worker = start_worker(tmp_path, name="skewed", clock_offset=offset, **env)
    try:
        failed = wait_for(
            lambda: TraceEvent.objects.filter(message_id=msg_id, event="DELIVERY_ATTEMPT").first(),
            timeout=30,
            what="the first attempt",
        )
        row = Delivery.objects.get(message_id=msg_id)
        if row.status == "RETRY":
            due_in = row.next_attempt_at - failed.at
            assert timedelta(seconds=1.5) < due_in < timedelta(seconds=3), due_in
        wait_for(
            lambda: Delivery.objects.filter(message_id=msg_id, status="SUCCEEDED").exists(),
            timeout=30,
            what="the retry to succeed",
        )
    finally:
        worker.stop()
    row = Delivery.objects.get(message_id=msg_id)
    assert row.attempts == 2
    attempts = [e for e in with_successes(msg_id) if e.event == "DELIVERY_ATTEMPT"]
    first, second = attempts  # the failure's trace row, the success from the delivery row
    assert "retry in 2 s" in first.detail
    assert timedelta(seconds=1.9) < second.at - first.at < timedelta(seconds=10)
    assert row.succeeded_at - dbtime.read("default") < timedelta(
        seconds=1
    )  # written with the database's clock
