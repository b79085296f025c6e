"""The official RocketMQ 5 Python client (rocketmq-python-client), used as its README shows,
producing to a real ``manage.py txbroker_grpc``: what it sends is stored as txbroker
messages, with their body, tag, keys and properties."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rocketmq import ClientConfiguration, Credentials, Producer
from rocketmq import Message as RocketMessage

from txbroker.models import Message, TraceEvent
from txbroker.tests.processes import GrpcServer

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
