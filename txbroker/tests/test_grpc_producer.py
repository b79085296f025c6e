"""The official RocketMQ 5 Python client (rocketmq-python-client), used as its README shows,
producing to a real ``manage.py txbroker_grpc``: what it sends is stored as txbroker
messages, with their body, tag, keys and properties."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from rocketmq import ClientConfiguration, Credentials, Producer
from rocketmq import Message as RocketMessage

from txbroker import ConsumedMessage
from txbroker.grpcapi import bodies
from txbroker.models import GrpcClient, Message, TraceEvent
from txbroker.tests.processes import GrpcServer, wait_for
from txbroker.tests.support.consumers import ORDERED_TOPIC, TOPIC

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@contextmanager
def producer(server: GrpcServer, *topics: str, checker=None, secret: str = "") -> Iterator[Producer]:
    config = ClientConfiguration(server.endpoint, Credentials(server.access_key, secret or server.secret))
    client = Producer(config, topics, checker)
    client.startup()
    try:
        yield client
    finally:
        client.shutdown()


def message(topic: str, body: bytes, *, tag: str = "", key: str = "", **properties: str):
    msg = RocketMessage()
    msg.topic = topic
    msg.body = body
    if tag:
        msg.tag = tag
    if key:
        msg.keys = key
    for key, value in properties.items():
        msg.add_property(key, value)
    return msg


def test_a_normal_message_is_stored_committed_with_its_body_tag_keys_and_properties(grpc_server):
    with producer(grpc_server, "grpc-orders") as client:
        # A live producer of its topic's group, its stream held by the server.
        row = wait_for(
            lambda: GrpcClient.objects.filter(group="grpc-orders").first(), what="the settings handshake"
        )
        assert row.kind == GrpcClient.Kind.PRODUCER and row.address.startswith("127.0.0.1:")
        assert row.stream_process and row.agent.startswith("PYTHON")
        receipt = client.send(
            message("grpc-orders", b'{"order":7,"total":"9.50"}', tag="created", key="order-7", source="erp")
        )

    stored = Message.objects.get(pk=receipt.message_id)
    assert stored.state == Message.State.COMMITTED
    # The client's own id (RocketMQ's layout: "01" + 32 hex digits) is the message's.
    assert len(receipt.message_id) == 34 and receipt.message_id.startswith("01")
    assert stored.topic == "grpc-orders" and stored.tag == "created"
    assert stored.keys == ["order-7"]
    assert stored.body == {"order": 7, "total": "9.50"}
    assert stored.properties["source"] == "erp"
    assert stored.producer_group == "grpc-orders"
    committed = stored.trace.get(event=TraceEvent.Event.COMMITTED)
    assert "gRPC client" in committed.detail and "127.0.0.1" in committed.detail
    # A client that shut down said so: it is gone.
    assert not GrpcClient.objects.filter(client_id=row.client_id).exists()


def test_fifo_messages_keep_their_message_group_and_commit_order(grpc_server):
    with producer(grpc_server, ORDERED_TOPIC) as client:
        ids = []
        for step in ("created", "paid"):
            msg = message(ORDERED_TOPIC, f'{{"step":"{step}"}}'.encode())
            msg.message_group = "order-9"
            ids.append(client.send(msg).message_id)

    stored = [Message.objects.get(pk=msg_id) for msg_id in ids]
    assert [m.message_group for m in stored] == ["order-9", "order-9"]
    assert [m.state for m in stored] == [Message.State.COMMITTED] * 2
    # Ordered as a Django producer's messages are: per consumer group, in commit order.
    for group in ("test_ordered_skip_group", "test_ordered_block_group"):
        sequences = [m.deliveries.get(consumer_group=group).sequence for m in stored]
        assert sequences[0] < sequences[1]


def test_a_delay_message_is_not_delivered_before_its_delivery_timestamp(grpc_server):
    at = int(time.time()) + 120
    with producer(grpc_server, TOPIC) as client:
        msg = message(TOPIC, b'{"remind":true}', tag="pay")
        msg.delivery_timestamp = at
        receipt = client.send(msg)

    stored = Message.objects.get(pk=receipt.message_id)
    assert stored.state == Message.State.COMMITTED
    assert stored.deliver_at == datetime.fromtimestamp(at, tz=UTC)
    delivery = stored.deliveries.get(consumer_group="test_pay_group")
    assert delivery.next_attempt_at == stored.deliver_at


def test_a_binary_body_is_kept_byte_for_byte(grpc_server):
    raw = bytes(range(256))
    with producer(grpc_server, "grpc-blobs") as client:
        receipt = client.send(message("grpc-blobs", raw))

    stored = Message.objects.get(pk=receipt.message_id)
    assert stored.properties[bodies.BODY_PROPERTY] == "bytes"
    assert bodies.to_bytes(stored.body, stored.properties) == raw
    # As a Django consumer's handler reads it.
    assert ConsumedMessage.of(stored).body_bytes == raw


def test_wrong_credentials_are_refused_and_change_nothing(grpc_server):
    before = Message.objects.count()
    with (
        producer(grpc_server, "grpc-orders", secret="not-the-secret") as client,
        pytest.raises(Exception, match="route"),
    ):
        client.send(message("grpc-orders", b'{"order":1}'))

    assert Message.objects.count() == before
    assert not GrpcClient.objects.exists()
    wait_for(
        lambda: "UNAUTHORIZED" in grpc_server.proc.log() or "refused" in grpc_server.proc.log(),
        what="refusal logged",
    )
