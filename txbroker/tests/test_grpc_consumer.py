"""The official RocketMQ 5 Python client (rocketmq-python-client), used as its README shows,
consuming from a real ``manage.py txbroker_grpc``: simple and push consumers of messages a
Django producer committed; ack, retry with the attempt count, dead letter after the
group's max attempts, FIFO order, and a stale receipt handle that changes nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import transaction
from rocketmq import (
    ClientConfiguration,
    ConsumeResult,
    Credentials,
    FilterExpression,
    MessageListener,
    Producer,
    PushConsumer,
    SimpleConsumer,
)
from rocketmq import Message as RocketMessage

from txbroker import OutgoingMessage
from txbroker import Producer as DjangoProducer
from txbroker.models import DeadLetter, Delivery, RemoteSubscription, TraceEvent
from txbroker.remote_groups import forget_subscriptions, subscription_record
from txbroker.tests.helpers import send
from txbroker.tests.processes import ROOT, GrpcServer, start_grpc, wait_for
from txbroker.tests.support.consumers import TOPIC

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Short retries for the server (and this process, which commits the messages and must see
# the subscriptions at once).
CONSUMER_SETTINGS = {
    "TXBROKER_GRPC_BACKOFF": "1s",
    "TXBROKER_GRPC_MAX_ATTEMPTS": "3",
    "TXBROKER_GRPC_SUBSCRIPTION_REFRESH": "0",
    "TXBROKER_GRPC_FIFO_GROUPS": "grpc_fifo_group",
    "TXBROKER_GRPC_MAX_LONG_POLLING": "3",
    "TXBROKER_GRPC_POLL_INTERVAL": "0.1",
}


@pytest.fixture
def server(transactional_db, broker_env, broker_setting, tmp_path) -> Iterator[GrpcServer]:
    for name, value in CONSUMER_SETTINGS.items():
        broker_setting(name, value)
    forget_subscriptions()
    started = start_grpc(tmp_path)
    yield started
    started.proc.stop()


def config(server: GrpcServer) -> ClientConfiguration:
    return ClientConfiguration(server.endpoint, Credentials(server.access_key, server.secret))


def subscribed(group: str) -> None:
    wait_for(
        lambda: RemoteSubscription.objects.filter(consumer_group=group).exists(), what=f"{group} subscribed"
    )


@contextmanager
def simple_consumer(server: GrpcServer, group: str, expression: str = "*") -> Iterator[SimpleConsumer]:
    consumer = SimpleConsumer(config(server), group, {TOPIC: FilterExpression(expression)}, await_duration=2)
    consumer.startup()
    try:
        subscribed(group)
        yield consumer
    finally:
        consumer.shutdown()


def receive_one(consumer: SimpleConsumer, invisible: int = 30):
    got: list = []

    def one():
        got.extend(consumer.receive(1, invisible))
        return got

    wait_for(one, timeout=30, what="a message received")
    assert len(got) == 1
    return got[0]


def test_a_simple_consumer_receives_a_django_message_and_acks_it(server):
    with simple_consumer(server, "grpc_simple_group", "pay") as consumer:
        msg_id = send("g-ack", tag="pay", properties={"source": "shop"}).msg_id
        send("g-other", tag="other")  # not this group's tag
        message = receive_one(consumer)
        assert message.message_id == msg_id
        assert json.loads(message.body) == {"key": "g-ack"}
        assert (message.tag, set(message.keys), message.delivery_attempt) == ("pay", {"g-ack"}, 1)
        assert message.properties.get("source") == "shop"
        consumer.ack(message)

    row = Delivery.objects.get(message_id=msg_id, consumer_group="grpc_simple_group")
    assert (row.status, row.attempts, row.remote) == ("SUCCEEDED", 1, True)
    actors = TraceEvent.objects.filter(message_id=msg_id, consumer_group="grpc_simple_group")
    assert {t.outcome for t in actors} == {"", "SUCCEEDED"}
    assert all("127.0.0.1" in t.actor for t in actors)
    assert not Delivery.objects.filter(consumer_group="grpc_simple_group").exclude(message_id=msg_id).exists()


def test_an_unacked_message_comes_back_with_its_attempt_count_then_is_a_dead_letter(server):
    with simple_consumer(server, "grpc_retry_group") as consumer:
        msg_id = send("g-retry", tag="pay").msg_id
        first = receive_one(consumer, invisible=1)
        second = receive_one(consumer, invisible=1)
        assert (first.delivery_attempt, second.delivery_attempt) == (1, 2)
        assert second.message_id == msg_id
        # The first receipt handle's claim is gone: acking it fails and changes nothing.
        with pytest.raises(Exception, match="receipt handle"):
            consumer.ack(first)
        assert Delivery.objects.get(message_id=msg_id, consumer_group="grpc_retry_group").status == "RUNNING"
        third = receive_one(consumer, invisible=1)
        assert third.delivery_attempt == 3

        def dead_letter():
            # Nothing more is received: the third expiry made it DEAD (max attempts 3).
            assert consumer.receive(1, 1) == []
            return DeadLetter.objects.filter(message_id=msg_id, consumer_group="grpc_retry_group").first()

        dead = wait_for(dead_letter, timeout=20, what="the dead letter")
    assert dead.attempts == 3
    assert TraceEvent.objects.filter(
        message_id=msg_id, consumer_group="grpc_retry_group", event="DEAD"
    ).exists()


def test_change_invisible_duration_keeps_a_message_and_gives_a_new_handle(server):
    with simple_consumer(server, "grpc_change_group") as consumer:
        msg_id = send("g-change", tag="pay").msg_id
        message = receive_one(consumer, invisible=1)
        old_handle = message.receipt_handle
        consumer.change_invisible_duration(message, 60)
        assert message.receipt_handle != old_handle
        assert consumer.receive(1, 1) == []  # still invisible after the first second
        consumer.ack(message)
    assert Delivery.objects.get(message_id=msg_id, consumer_group="grpc_change_group").status == "SUCCEEDED"


class Recording(MessageListener):
    """Fails the first ``failures`` attempts of each message, then succeeds; records what
    it saw (message id, delivery attempt), in order."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def consume(self, message) -> ConsumeResult:
        with self.lock:
            self.seen.append((message.message_id, message.delivery_attempt))
        return ConsumeResult.FAILURE if message.delivery_attempt <= self.failures else ConsumeResult.SUCCESS


@contextmanager
def push_consumer(server: GrpcServer, group: str, listener: MessageListener) -> Iterator[PushConsumer]:
    consumer = PushConsumer(config(server), group, listener, {TOPIC: FilterExpression("*")})
    consumer.startup()
    try:
        subscribed(group)
        yield consumer
    finally:
        consumer.shutdown()


def done(msg_ids: list[str], group: str) -> bool:
    rows = Delivery.objects.filter(message_id__in=msg_ids, consumer_group=group, status="SUCCEEDED")
    return rows.count() == len(msg_ids)


def test_a_push_consumer_retries_a_failure_on_the_backoff_policy(server):
    listener = Recording(failures=1)
    with push_consumer(server, "grpc_push_group", listener):
        msg_id = send("g-push", tag="pay").msg_id
        wait_for(lambda: done([msg_id], "grpc_push_group"), timeout=40, what="the retried message acked")
    assert listener.seen == [(msg_id, 1), (msg_id, 2)]
    assert Delivery.objects.get(message_id=msg_id, consumer_group="grpc_push_group").attempts == 2


def test_a_fifo_push_consumer_gets_a_message_group_in_commit_order(server):
    listener = Recording()
    with push_consumer(server, "grpc_fifo_group", listener):
        sent = [send(f"g-fifo-{i}", tag="pay", message_group="order-9").msg_id for i in range(5)]
        wait_for(lambda: done(sent, "grpc_fifo_group"), timeout=40, what="the FIFO group consumed")
    assert [msg_id for msg_id, _ in listener.seen] == sent


def test_a_grpc_producers_bytes_reach_a_grpc_consumer_unchanged(server):
    bodies = [b"\x00\xffnot json", b'{"spaced": [1, 2]}', b'{"compact":true}']
    with simple_consumer(server, "grpc_bytes_group") as consumer:
        producer = Producer(config(server), (TOPIC,))
        producer.startup()
        try:
            for i, body in enumerate(bodies):
                message = RocketMessage()
                message.topic, message.body, message.tag, message.keys = TOPIC, body, "pay", f"b-{i}"
                message.add_property("n", str(i))
                producer.send(message)
        finally:
            producer.shutdown()
        got = {}
        while len(got) < len(bodies):
            message = receive_one(consumer)
            got[int(message.properties["n"])] = message.body
            consumer.ack(message)
    assert [got[i] for i in range(len(bodies))] == bodies


def test_the_readme_consumer_example_works_as_written(broker_env, broker_setting, tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- grpc-consumer-example -->\n```python\n(.*?)```", text, re.DOTALL).group(1)
    assert '"127.0.0.1:8081"' in code and 'Credentials("erp", "erp-secret")' in code
    broker_setting("TXBROKER_GRPC_SUBSCRIPTION_REFRESH", "0")
    # The group is known (a consumer of it ran before): what is committed now is its.
    subscription_record(group="billing", topic="order-events", expression="created", client="earlier")
    with transaction.atomic():
        msg_id = DjangoProducer("shop").send(
            OutgoingMessage(
                topic="order-events", tag="created", keys=("order-1001",), body={"order_id": 1001}
            )
        )
    server = start_grpc(tmp_path, TXBROKER_GRPC_CREDENTIALS="erp:erp-secret")
    try:
        script = tmp_path / "consumer.py"
        script.write_text(code.replace('"127.0.0.1:8081"', f'"{server.endpoint}"'))
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    finally:
        server.proc.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'received {msg_id} 1 {{"order_id":1001}}' in result.stdout
    assert Delivery.objects.get(message_id=msg_id, consumer_group="billing").status == "SUCCEEDED"
