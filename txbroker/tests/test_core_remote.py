"""Consumer groups subscribed over gRPC, without gRPC: deliveries created at commit, never
claimed by Celery, and the remote-delivery state machine (receive, ack, change of
invisibility, expiry, dead letter, FIFO order, stale receipt handles)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from txbroker import delivery, operations, selectors
from txbroker.exceptions import ConfigurationError
from txbroker.models import DeadLetter, Delivery, RemoteSubscription, TraceEvent
from txbroker.remote_deliveries import (
    remote_ack,
    remote_change_invisible,
    remote_forward_dead,
    remote_receive,
    remote_reclaim_expired,
)
from txbroker.remote_groups import forget_subscriptions, subscription_record
from txbroker.tests.helpers import deliveries, send
from txbroker.tests.support.consumers import TOPIC

pytestmark = pytest.mark.django_db(transaction=True)

GROUP = "remote_group"


@pytest.fixture
def remote(broker_env):
    forget_subscriptions()
    subscription = subscription_record(group=GROUP, topic=TOPIC, expression="pay || refund", client="c1")
    yield subscription
    forget_subscriptions()


def receive(limit=10, invisible=30.0, group=GROUP):
    return remote_receive(
        group=group, topic=TOPIC, limit=limit, invisible=invisible, client="c1", address="10.0.0.1:5"
    )


def expire(delivery_id: int) -> None:
    Delivery.objects.filter(pk=delivery_id).update(claimed_until=Now())


def test_a_commit_creates_a_remote_delivery_per_matching_subscription(remote):
    pay = send("r-pay", tag="pay").msg_id
    other = send("r-other", tag="other").msg_id

    assert deliveries(pay)[GROUP] == "PENDING"
    assert GROUP not in deliveries(other)
    assert Delivery.objects.get(message_id=pay, consumer_group=GROUP).remote
    assert not Delivery.objects.filter(message_id=pay, remote=True).exclude(consumer_group=GROUP).exists()


def test_celery_never_claims_nor_counts_remote_deliveries(remote):
    msg_id = send("r-celery", tag="pay").msg_id
    report = delivery.deliver_due(budget_seconds=5)
    assert report.claimed == len(deliveries(msg_id)) - 1
    assert deliveries(msg_id)[GROUP] == "PENDING"
    assert delivery.sweep().due == 0


def test_receive_then_ack_succeeds_once_and_traces_the_client(remote):
    msg_id = send("r-ack", tag="pay").msg_id
    (got,) = receive()
    assert (got.msg_id, got.attempt, got.tag, got.body) == (msg_id, 1, "pay", {"key": "r-ack"})
    assert receive() == []  # invisible to others meanwhile
    assert deliveries(msg_id)[GROUP] == "RUNNING"

    assert remote_ack(group=GROUP, handle=got.receipt_handle, client="c1", address="10.0.0.1:5")
    assert not remote_ack(group=GROUP, handle=got.receipt_handle, client="c1")
    assert deliveries(msg_id)[GROUP] == "SUCCEEDED"
    trace = TraceEvent.objects.filter(message_id=msg_id, consumer_group=GROUP).order_by("id")
    assert [(t.event, t.outcome) for t in trace] == [
        ("DELIVERY_ATTEMPT", ""),
        ("DELIVERY_ATTEMPT", "SUCCEEDED"),
    ]
    assert all(t.actor == "c1 at 10.0.0.1:5" for t in trace)


def test_an_ack_for_another_group_or_a_forged_handle_changes_nothing(remote):
    send("r-forged", tag="pay")
    (got,) = receive()
    assert not remote_ack(group="another_group", handle=got.receipt_handle, client="c1")
    assert not remote_ack(group=GROUP, handle="garbage", client="c1")
    assert not remote_ack(group=GROUP, handle=got.receipt_handle[:-1] + "0", client="c1")
    assert Delivery.objects.get(pk=got.delivery_id).status == "RUNNING"


def test_expired_invisibility_is_a_failed_attempt_and_a_stale_handle_changes_nothing(remote):
    msg_id = send("r-stale", tag="pay").msg_id
    (first,) = receive()
    expire(first.delivery_id)
    assert remote_reclaim_expired() == 1
    row = Delivery.objects.get(pk=first.delivery_id)
    assert (row.status, row.attempts) == ("RETRY", 1)

    (second,) = receive()
    assert second.attempt == 2 and second.receipt_handle != first.receipt_handle
    assert not remote_ack(group=GROUP, handle=first.receipt_handle, client="late")
    assert (
        remote_change_invisible(group=GROUP, handle=first.receipt_handle, invisible=60, client="late") is None
    )
    assert not remote_forward_dead(group=GROUP, handle=first.receipt_handle, client="late")
    assert Delivery.objects.get(pk=first.delivery_id).status == "RUNNING"
    assert remote_ack(group=GROUP, handle=second.receipt_handle, client="c1")
    failed = TraceEvent.objects.filter(message_id=msg_id, consumer_group=GROUP, outcome="FAILED")
    assert [(t.event, t.detail.split(":")[0]) for t in failed] == [("DELIVERY_ATTEMPT", "attempt 1")]


def test_dead_after_max_attempts_is_a_dead_letter(broker_env):
    forget_subscriptions()
    subscription_record(group=GROUP, topic=TOPIC, expression="*", client="c1", max_attempts=2)
    msg_id = send("r-dead", tag="pay").msg_id
    for attempt in (1, 2):
        (got,) = receive()
        assert got.attempt == attempt
        expire(got.delivery_id)
        assert remote_reclaim_expired(group=GROUP) == 1
    assert receive() == []
    dead = DeadLetter.objects.get(message_id=msg_id, consumer_group=GROUP)
    assert dead.attempts == 2 and "invisible duration" in dead.last_error
    assert TraceEvent.objects.filter(message_id=msg_id, event="DEAD", consumer_group=GROUP).exists()


def test_change_invisible_duration_rotates_the_handle(remote):
    send("r-change", tag="pay")
    (got,) = receive(invisible=1)
    handle = remote_change_invisible(group=GROUP, handle=got.receipt_handle, invisible=120, client="c1")
    assert handle and handle != got.receipt_handle
    row = Delivery.objects.get(pk=got.delivery_id)
    assert (row.claimed_until - row.updated_at).total_seconds() == pytest.approx(120, abs=1)
    assert not remote_ack(group=GROUP, handle=got.receipt_handle, client="c1")
    assert remote_ack(group=GROUP, handle=handle, client="c1")


def test_forward_to_dead_letter_queue_is_dead_now(remote):
    msg_id = send("r-forward", tag="pay").msg_id
    (got,) = receive()
    assert remote_forward_dead(group=GROUP, handle=got.receipt_handle, client="c1")
    assert DeadLetter.objects.filter(message_id=msg_id, consumer_group=GROUP).exists()


def test_a_fifo_group_receives_a_message_group_in_commit_order(broker_env, broker_setting):
    broker_setting("TXBROKER_GRPC_FIFO_GROUPS", "fifo_group")
    forget_subscriptions()
    subscription_record(group="fifo_group", topic=TOPIC, expression="*", client="c1")
    sent = [send(f"r-fifo-{i}", tag="pay", message_group="order-1").msg_id for i in range(3)]
    order = []
    for _ in sent:
        got = receive(group="fifo_group")
        assert len(got) == 1  # one at a time per message group
        order.append(got[0].msg_id)
        assert remote_ack(group="fifo_group", handle=got[0].receipt_handle, client="c1")
    assert order == sent


def test_a_group_that_is_not_fifo_receives_ordered_messages_at_once(remote):
    sent = {send(f"r-unordered-{i}", tag="pay", message_group="order-2").msg_id for i in range(3)}
    assert {got.msg_id for got in receive()} == sent


def test_a_remote_group_adds_no_statement_to_a_commit(broker_env, broker_setting):
    broker_setting("TXBROKER_GRPC_SUBSCRIPTION_REFRESH", "60")

    def statements(key: str) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            send(key, tag="pay")
        return [q["sql"] for q in queries.captured_queries]

    forget_subscriptions()
    send("r-warm-1", tag="pay")  # the cache read (no subscription yet)
    without = statements("r-without")
    subscription_record(group=GROUP, topic=TOPIC, expression="*", client="c1")
    send("r-warm-2", tag="pay")  # the one read after a new subscription
    with_remote = statements("r-with")
    assert len(with_remote) == len(without)
    assert not [sql for sql in with_remote if RemoteSubscription._meta.db_table in sql]
    assert Delivery.objects.get(message__keys=["r-with"], consumer_group=GROUP).remote


def test_a_bad_subscription_is_refused_and_writes_nothing(broker_env):
    with pytest.raises(ConfigurationError):
        subscription_record(group=GROUP, topic=TOPIC, expression="a || *", client="c1")
    with pytest.raises(ConfigurationError):
        subscription_record(group="bad group", topic=TOPIC, expression="*", client="c1")
    assert not RemoteSubscription.objects.exists()


def test_a_replayed_remote_dead_letter_goes_back_to_grpc_not_to_celery(remote):
    msg_id = send("r-replay", tag="pay").msg_id
    (got,) = receive()
    assert remote_forward_dead(group=GROUP, handle=got.receipt_handle, client="c1")
    assert operations.replay(msg_id, group=GROUP) == 1
    delivery.deliver_due(budget_seconds=5)
    assert deliveries(msg_id)[GROUP] == "PENDING"
    (again,) = receive()
    assert (again.msg_id, again.attempt) == (msg_id, 2)


def test_remote_groups_are_in_the_stats_and_the_admin(remote, admin_client):
    msg_id = send("r-visible", tag="pay").msg_id
    assert selectors.stats()["deliveries"][GROUP]["PENDING"] == 1
    assert GROUP in selectors.consumer_groups()
    page = admin_client.get(reverse("admin:txbroker_remotesubscription_changelist"), secure=True)
    assert page.status_code == 200 and GROUP.encode() in page.content
    (got,) = receive()
    remote_forward_dead(group=GROUP, handle=got.receipt_handle, client="c1")
    dead = admin_client.get(
        reverse("admin:txbroker_deadletter_changelist") + f"?consumer_group={GROUP}", secure=True
    )
    assert dead.status_code == 200 and msg_id[:8].encode() in dead.content


def test_the_sweep_takes_back_an_expired_remote_claim(remote):
    msg_id = send("r-sweep", tag="pay").msg_id
    (got,) = receive()
    expire(got.delivery_id)
    assert delivery.sweep().reclaimed == 1
    assert deliveries(msg_id)[GROUP] == "RETRY"


def test_a_delayed_message_is_received_only_once_due(remote):
    msg_id = send("r-delay", tag="pay", delay=3600).msg_id
    assert receive() == []
    Delivery.objects.filter(message_id=msg_id, consumer_group=GROUP).update(next_attempt_at=Now())
    assert [got.msg_id for got in receive()] == [msg_id]


def test_a_fifo_groups_dead_letter_does_not_hold_its_message_group(broker_env, broker_setting):
    broker_setting("TXBROKER_GRPC_FIFO_GROUPS", "fifo_group")
    forget_subscriptions()
    subscription_record(group="fifo_group", topic=TOPIC, expression="*", client="c1")
    first, second = (send(f"r-fifo-dead-{i}", tag="pay", message_group="order-3").msg_id for i in range(2))
    (got,) = receive(group="fifo_group")
    assert got.msg_id == first and receive(group="fifo_group") == []
    assert remote_forward_dead(group="fifo_group", handle=got.receipt_handle, client="c1")
    assert [g.msg_id for g in receive(group="fifo_group")] == [second]  # as RocketMQ: the DLQ, then on
