"""Ordered messages in process: the commit sequence (commit order, serialized per message
group), the claim rule (one per message group, none past an unfinished earlier one), the
skip and block policies after DEAD, operator skip, and replay keeping the order."""

from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction
from django.utils import timezone

from txbroker import OutgoingMessage, Producer, delivery, operations
from txbroker.delivery_transitions import claim_due, release
from txbroker.exceptions import InvalidTransition
from txbroker.models import Delivery, TraceEvent
from txbroker.tests.helpers import record_locally, send
from txbroker.tests.support.checkers import producer
from txbroker.tests.support.consumers import ORDERED_TOPIC
from txbroker.tests.support.models import Plan

pytestmark = pytest.mark.django_db(transaction=True)

SKIP, BLOCK = "test_ordered_skip_group", "test_ordered_block_group"
outbox = Producer("test_ordered_producer")


def ordered(key: str, group: str) -> str:
    with transaction.atomic():
        return outbox.send(OutgoingMessage(topic=ORDERED_TOPIC, keys=[key], body={}, message_group=group))


def status(msg_id: str, group: str) -> str:
    return Delivery.objects.get(message_id=msg_id, consumer_group=group).status


def claimed_now() -> set[tuple[str, str]]:
    """(message id, consumer group) of everything claimable now; given back at once."""
    token, claimed = claim_due(100)
    release(claimed, token)
    Delivery.objects.filter(status="RETRY", attempts=0).update(status="PENDING")
    return {(d.message_id, d.consumer_group) for d in claimed}


def run_all(rounds: int = 8) -> None:
    for _ in range(rounds):
        Delivery.objects.filter(status__in=Delivery.WAITING).update(next_attempt_at=timezone.now())
        delivery.deliver_due(budget_seconds=5)


def test_sequences_follow_commit_order_and_deliveries_copy_them():
    first = ordered("o-1", "g")
    second = producer.send_message_in_transaction(  # the two-phase send too
        OutgoingMessage(topic=ORDERED_TOPIC, keys=["o-2"], body={}, message_group="g"), record_locally
    ).msg_id
    other = ordered("o-3", "h")
    rows = Delivery.objects.filter(consumer_group=SKIP)
    assert rows.get(message_id=first).sequence < rows.get(message_id=second).sequence
    assert {d.message_group for d in rows} == {"g", "h"}
    assert Delivery.objects.get(message_id=other, consumer_group=BLOCK).message_group == "h"
    assert "message group g, sequence" in TraceEvent.objects.get(message_id=second, event="COMMITTED").detail


def test_a_second_commit_of_a_group_waits_for_the_first_and_comes_after_it():
    """The head row's lock serializes the commits of one message group: the sequence is
    the order in which they became visible."""
    entered, release_first = threading.Event(), threading.Event()
    ids: dict[str, str] = {}

    def first() -> None:
        try:
            with transaction.atomic():
                ids["first"] = outbox.send(OutgoingMessage(topic=ORDERED_TOPIC, body={}, message_group="s"))
                entered.set()
                release_first.wait(10)
        finally:
            connections.close_all()

    def second() -> None:
        try:
            ids["second"] = ordered("second", "s")
        finally:
            connections.close_all()

    a = threading.Thread(target=first)
    a.start()
    assert entered.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.5)
    assert b.is_alive()  # waiting for the first commit of group "s"
    release_first.set()
    a.join(10)
    b.join(10)
    rows = Delivery.objects.filter(consumer_group=SKIP)
    assert rows.get(message_id=ids["first"]).sequence + 1 == rows.get(message_id=ids["second"]).sequence


def test_only_the_first_unfinished_delivery_of_each_message_group_is_claimed():
    g1, g2 = ordered("g-1", "g"), ordered("g-2", "g")
    h1 = ordered("h-1", "h")
    plain = send("plain", tag="other").msg_id
    assert claimed_now() == {(g1, SKIP), (g1, BLOCK), (h1, SKIP), (h1, BLOCK), (plain, "test_all_group")}
    # While g-1 runs for one consumer group, g-2 waits there, and only there.
    token, claimed = claim_due(
        100, ids=Delivery.objects.filter(message_id=g1, consumer_group=SKIP).values_list("pk", flat=True)
    )
    assert len(claimed) == 1
    Delivery.objects.filter(message_id=g1, consumer_group=BLOCK).update(status="SUCCEEDED")
    assert (g2, SKIP) not in claimed_now()
    assert (g2, BLOCK) in claimed_now()
    release(claimed, token)


def test_a_failing_message_retries_in_place_and_holds_only_its_group():
    Plan.objects.create(key="f-1", fail_times=1)
    f1, f2 = ordered("f-1", "f"), ordered("f-2", "f")
    k1 = ordered("k-1", "k")
    delivery.deliver_due(budget_seconds=5)
    assert status(f1, SKIP) == "RETRY" and status(k1, SKIP) == "SUCCEEDED"
    Delivery.objects.filter(status="RETRY").update(next_attempt_at=timezone.now())
    assert (f2, SKIP) not in claimed_now()  # f-1 retries first
    run_all()
    assert status(f1, SKIP) == status(f2, SKIP) == "SUCCEEDED"
    f1_done = Delivery.objects.get(message_id=f1, consumer_group=SKIP).succeeded_at
    assert f1_done < Delivery.objects.get(message_id=f2, consumer_group=SKIP).succeeded_at


def test_after_dead_a_skip_group_goes_on_and_a_block_group_waits_for_an_operator():
    Plan.objects.create(key="d-1", fail_times=100)
    d1, d2, d3 = ordered("d-1", "d"), ordered("d-2", "d"), ordered("d-3", "d")
    run_all()
    assert [status(m, SKIP) for m in (d1, d2, d3)] == ["DEAD", "SUCCEEDED", "SUCCEEDED"]
    assert [status(m, BLOCK) for m in (d1, d2, d3)] == ["DEAD", "PENDING", "PENDING"]
    assert Delivery.objects.get(message_id=d2, consumer_group=BLOCK).attempts == 0
    # Due, but held: the sweep enqueues no task for them (it would find nothing to claim).
    assert Delivery.objects.due().filter(message_id__in=[d2, d3]).count() == 2
    assert delivery.sweep().due == 0

    # The operator skips the dead one: the group goes on, in order.
    operations.skip(d1, group=BLOCK, actor="olga")
    skipped = TraceEvent.objects.get(message_id=d1, event="SKIPPED")
    assert skipped.actor == "olga" and skipped.consumer_group == BLOCK
    run_all()
    assert [status(m, BLOCK) for m in (d1, d2, d3)] == ["SKIPPED", "SUCCEEDED", "SUCCEEDED"]
    with pytest.raises(InvalidTransition, match="not DEAD"):
        operations.skip(d1, group=BLOCK, actor="olga")


def test_a_replayed_ordered_delivery_runs_again_before_the_rest_of_its_group():
    Plan.objects.create(key="r-1", fail_times=2)  # dead after two attempts, fine on the third
    r1, r2 = ordered("r-1", "r"), ordered("r-2", "r")
    run_all()
    assert (status(r1, BLOCK), status(r2, BLOCK)) == ("DEAD", "PENDING")
    operations.replay(r1, group=BLOCK, actor="olga")
    assert claimed_now() == {(r1, BLOCK)}  # r-2 still waits behind it
    run_all()
    assert (status(r1, BLOCK), status(r2, BLOCK)) == ("SUCCEEDED", "SUCCEEDED")
    # A forced replay of r-1 holds any later unfinished delivery of its group again.
    r3 = ordered("r-3", "r")
    operations.replay(r1, group=BLOCK, force=True, actor="olga")
    assert (r3, BLOCK) not in claimed_now() and (r1, BLOCK) in claimed_now()


def test_concurrent_claimers_never_run_two_of_one_message_group_and_keep_its_order():
    """Four threads claim and finish deliveries as fast as they can (one statement per
    claim, SKIP LOCKED): within a consumer group, a message group never has two RUNNING
    at once, and its deliveries finish in sequence order."""
    for i in range(5):
        for g in range(8):
            ordered(f"c-{g}-{i}", f"c{g}")
    finished: list[tuple[str, str, int]] = []
    overlaps: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            idle = 0
            while idle < 20:
                token, claimed = claim_due(10)
                idle = 0 if claimed else idle + 1
                for d in reversed(claimed):  # finishing a batch out of order must not matter
                    twins = Delivery.objects.filter(
                        consumer_group=d.consumer_group, message_group=d.message_group, status="RUNNING"
                    ).exclude(pk=d.pk)
                    if twins.exists():
                        overlaps.append((d.consumer_group, d.message_group))
                    with lock:  # record and finish together: the record order is the finish order
                        moved = Delivery.objects.filter(pk=d.pk, claim_token=token, status="RUNNING").update(
                            status="SUCCEEDED", claim_token="", claimed_until=None
                        )
                        if moved:
                            finished.append((d.consumer_group, d.message_group, d.sequence))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps == []
    assert len(finished) == 5 * 8 * 2
    for group in (SKIP, BLOCK):
        for g in range(8):
            sequences = [seq for cg, mg, seq in finished if cg == group and mg == f"c{g}"]
            assert sequences == sorted(sequences) and len(sequences) == 5
