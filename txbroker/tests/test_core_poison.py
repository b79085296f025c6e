"""Poison messages with a real worker: a handler that kills its worker process every time
(``os._exit``, as a segfault or the OOM killer would) ends DEAD after the configured
attempts, with the reason; every delivery claimed in the same batches succeeds, its
attempt count untouched by the deaths around it."""

from __future__ import annotations

import pytest

from txbroker.delivery_transitions import VOID_BATCH
from txbroker.models import Delivery, TraceEvent
from txbroker.tests.helpers import send
from txbroker.tests.processes import start_worker, wait_for
from txbroker.tests.support.models import Attempt, Effect, Plan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

POISON_ENV = {
    # Both groups of tag "refund" allow two retries: three deaths each.
    "TXBROKER_MAX_RECONSUME_TIMES": "2",
    "TXBROKER_CLAIM_TIMEOUT": "2",
    "TXBROKER_RETRY_DELAYS": "0.5s",
}


def test_a_message_that_kills_its_worker_every_time_ends_dead_and_its_batch_mates_succeed(
    beat, tmp_path, broker_setting
):
    for key, value in POISON_ENV.items():
        broker_setting(key, value)
    Plan.objects.create(key="poison", kill_worker=True)
    # One batch: the poison first (oldest), ten innocent messages behind it.
    poison = send("poison", tag="refund").msg_id
    innocent = [send(f"innocent-{i}", tag="refund").msg_id for i in range(10)]

    worker = start_worker(tmp_path, name="poisoned", concurrency=1, **POISON_ENV)
    try:
        wait_for(
            lambda: Delivery.objects.filter(message_id=poison, status="DEAD").count() == 2,
            timeout=120,
            what="both poison deliveries DEAD",
        )
        wait_for(
            lambda: Delivery.objects.filter(message_id__in=innocent, status="SUCCEEDED").count() == 20,
            timeout=60,
            what="every innocent delivery done",
        )
    finally:
        worker.stop()

    for row in Delivery.objects.filter(message_id=poison):
        assert row.attempts == 3  # the first attempt and two retries, each one a death
        assert row.last_error.startswith("worker died during the handler")
        dead = TraceEvent.objects.get(message_id=poison, consumer_group=row.consumer_group, event="DEAD")
        assert (
            dead.detail
            == "3 attempts failed (max reconsume times 2); last error: worker died during the handler"
        )
    deaths = Attempt.objects.filter(key="poison")
    # Three counted per group, each in a pool process that died; with the batch's handlers
    # in one transaction (txbroker.batch), one more uncounted death at most per group, in
    # the batch it first came in (which handler died is unknown there: nobody's counts).
    assert 6 <= deaths.count() <= 8
    assert len(set(deaths.values_list("pid", flat=True))) == deaths.count()
    # The innocent: one attempt each, whatever the deaths around them.
    assert set(Delivery.objects.filter(message_id__in=innocent).values_list("attempts", flat=True)) == {1}
    assert set(Effect.objects.filter(key__startswith="innocent-").values_list("count", flat=True)) == {1}
    assert Effect.objects.filter(key__startswith="innocent-").count() == 20
    assert not Effect.objects.filter(key="poison").exists()
    reclaimed = TraceEvent.objects.filter(event="RECLAIMED", message_id__in=innocent)
    assert all(
        "before the handler started" in detail or detail.startswith(VOID_BATCH)
        for detail in reclaimed.values_list("detail", flat=True)
    )
