"""Ordered messages with real workers: strict commit order per message group under retries
with two worker processes; a failing message group holds only itself; skip and block after
DEAD, and the operator's skip."""

from __future__ import annotations

import pytest
from django.db import transaction

from txbroker import OutgoingMessage, Producer, operations
from txbroker.models import Delivery
from txbroker.tests.processes import start_worker, wait_for
from txbroker.tests.support.consumers import ORDERED_TOPIC
from txbroker.tests.support.models import Attempt, Plan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.slow]

SKIP, BLOCK = "test_ordered_skip_group", "test_ordered_block_group"
outbox = Producer("test_ordered_producer")


def ordered(key: str, group: str) -> str:
    with transaction.atomic():
        return outbox.send(OutgoingMessage(topic=ORDERED_TOPIC, keys=[key], body={}, message_group=group))


def done(status: str, msg_ids: list[str], group: str) -> bool:
    return Delivery.objects.filter(
        message_id__in=msg_ids, consumer_group=group, status=status
    ).count() == len(msg_ids)


def assert_in_order(keys: list[str], msg_ids: list[str], group: str) -> None:
    """Each handler of the message group started only after the one before it succeeded
    (database time), and the attempts came in commit order."""
    started = list(
        Attempt.objects.filter(key__in=keys, consumer_group=group).order_by("id").values_list("key", "at")
    )
    order = [key for key, _ in started]
    assert order == sorted(order, key=keys.index), order
    rows = {d.message_id: d for d in Delivery.objects.filter(message_id__in=msg_ids, consumer_group=group)}
    for before, after, key in zip(msg_ids, msg_ids[1:], keys[1:], strict=False):
        first_start = min(at for k, at in started if k == key)
        assert rows[before].succeeded_at <= first_start
        assert rows[before].sequence < rows[after].sequence


def test_strict_order_per_message_group_under_retries_with_two_workers(worker, beat, tmp_path):
    second = start_worker(tmp_path, name="worker2")
    try:
        groups = {g: [f"{g}-{i}" for i in range(6)] for g in ("alpha", "beta", "gamma")}
        for keys in groups.values():
            for key in keys[1::2]:
                Plan.objects.create(key=key, fail_times=1)  # every other one fails once
        # Interleaved commits across groups.
        ids = {g: [] for g in groups}
        for i in range(6):
            for g, keys in groups.items():
                ids[g].append(ordered(keys[i], g))
        everything = [m for msg_ids in ids.values() for m in msg_ids]
        wait_for(
            lambda: done("SUCCEEDED", everything, SKIP) and done("SUCCEEDED", everything, BLOCK),
            timeout=120,
            what="every ordered delivery done",
        )
    finally:
        second.stop()
    for g, keys in groups.items():
        for consumer_group in (SKIP, BLOCK):
            assert_in_order(keys, ids[g], consumer_group)
    # Both workers took part.
    assert (
        Attempt.objects.filter(key__in=[k for keys in groups.values() for k in keys])
        .values("pid")
        .distinct()
        .count()
        > 1
    )


def test_a_dead_message_group_holds_only_itself_skip_goes_on_block_waits_for_the_operator(worker, beat):
    Plan.objects.create(key="stuck-0", fail_times=100)
    stuck = [ordered(f"stuck-{i}", "stuck") for i in range(3)]
    free = [ordered(f"free-{i}", "free") for i in range(4)]

    wait_for(
        lambda: done("SUCCEEDED", free, SKIP) and done("SUCCEEDED", free, BLOCK),
        timeout=60,
        what="the free group flows",
    )
    # skip: the group goes on past the dead letter, which stays visible.
    wait_for(lambda: done("SUCCEEDED", stuck[1:], SKIP), timeout=60, what="the skip group goes on")
    assert done("DEAD", stuck[:1], SKIP)
    dead_at = Delivery.objects.get(message_id=stuck[0], consumer_group=SKIP).updated_at
    assert (
        min(Attempt.objects.filter(key="stuck-1", consumer_group=SKIP).values_list("at", flat=True))
        >= dead_at
    )
    # block: the group waits, its later messages never attempted.
    assert done("DEAD", stuck[:1], BLOCK)
    assert done("PENDING", stuck[1:], BLOCK)
    assert not Attempt.objects.filter(key__in=["stuck-1", "stuck-2"], consumer_group=BLOCK).exists()

    operations.skip(stuck[0], group=BLOCK, actor="operator-1")
    wait_for(
        lambda: done("SUCCEEDED", stuck[1:], BLOCK), timeout=60, what="the block group goes on after skip"
    )
    assert_in_order(["stuck-1", "stuck-2"], stuck[1:], BLOCK)
    assert done("SKIPPED", stuck[:1], BLOCK)
