"""The consumer side's protocol glue, without a server: what a consumer's settings record
and are answered with, what is refused, and how a received delivery is written."""

from __future__ import annotations

import json
import zlib

import pytest
from google.protobuf.duration_pb2 import Duration

from txbroker.grpcapi.consuming import subscription_settings, to_protobuf
from txbroker.grpcapi.protocol import Caller, Code, RpcError, pb
from txbroker.models import RemoteSubscription
from txbroker.remote_deliveries import remote_receive
from txbroker.remote_groups import forget_subscriptions
from txbroker.tests.helpers import send
from txbroker.tests.support.consumers import TOPIC

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT = Caller(client_id="client-1", address="127.0.0.1:4242", agent="python 5.1.2")


def settings(group: str, *entries: tuple[str, int, str], polling: int = 0) -> pb.Settings:
    subscription = pb.Subscription(group=pb.Resource(name=group))
    for topic, kind, expression in entries:
        subscription.subscriptions.add(
            topic=pb.Resource(name=topic), expression=pb.FilterExpression(type=kind, expression=expression)
        )
    if polling:
        subscription.long_polling_timeout.CopyFrom(Duration(seconds=polling))
    return pb.Settings(client_type=pb.ClientType.PUSH_CONSUMER, subscription=subscription)


@pytest.fixture(autouse=True)
def fresh(broker_env, broker_setting):
    broker_setting("TXBROKER_GRPC_BACKOFF", "1s 5s 1m")
    broker_setting("TXBROKER_GRPC_MAX_ATTEMPTS", "4")
    broker_setting("TXBROKER_GRPC_MAX_LONG_POLLING", "20")
    forget_subscriptions()


def test_settings_record_each_topic_and_answer_the_backoff_policy():
    reply, backoff = subscription_settings(
        CLIENT,
        settings("erp", ("topic_a", pb.FilterType.TAG, "pay || refund"), ("topic_b", pb.FilterType.TAG, "")),
    )
    rows = {r.topic: r for r in RemoteSubscription.objects.filter(consumer_group="erp")}
    assert rows["topic_a"].tag_expression == "pay || refund" and rows["topic_b"].tag_expression == "*"
    assert rows["topic_a"].client_id == "client-1 at 127.0.0.1:4242"
    assert backoff.max_attempts == 4
    assert [d.seconds for d in backoff.customized_backoff.next] == [1, 5, 60]
    assert (reply.fifo, reply.long_polling_timeout.seconds) == (False, 20)


def test_a_fifo_group_is_told_so_and_long_polling_is_bounded(broker_setting):
    broker_setting("TXBROKER_GRPC_FIFO_GROUPS", "erp_fifo other")
    reply, _ = subscription_settings(
        CLIENT, settings("erp_fifo", (TOPIC, pb.FilterType.TAG, "*"), polling=600)
    )
    assert reply.fifo and reply.long_polling_timeout.seconds == 20
    assert RemoteSubscription.objects.get(consumer_group="erp_fifo").fifo


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        ((TOPIC, pb.FilterType.SQL, "a > 1"), Code.UNSUPPORTED),
        ((TOPIC, pb.FilterType.TAG, "a || *"), Code.ILLEGAL_FILTER_EXPRESSION),
        (("bad topic", pb.FilterType.TAG, "*"), Code.ILLEGAL_TOPIC),
    ],
)
def test_a_subscription_txbroker_cannot_serve_is_refused_and_records_nothing(entry, code):
    with pytest.raises(RpcError) as refused:
        subscription_settings(CLIENT, settings("erp", ("good_topic", pb.FilterType.TAG, "*"), entry))
    assert refused.value.code == code
    assert not RemoteSubscription.objects.exists()


def test_a_django_message_is_written_as_the_clients_read_it():
    subscription_settings(CLIENT, settings("erp", (TOPIC, pb.FilterType.TAG, "*")))
    msg_id = send("w-1", tag="pay", properties={"source": "shop"}, message_group="order-1").msg_id
    (received,) = remote_receive(group="erp", topic=TOPIC, limit=1, invisible=30, client="client-1")
    message = to_protobuf(received, 30)
    system = message.system_properties
    assert json.loads(message.body) == {"key": "w-1"}
    assert system.body_digest.checksum == format(zlib.crc32(message.body) & 0xFFFFFFFF, "08X")
    assert (system.message_id, system.tag, list(system.keys)) == (msg_id, "pay", ["w-1"])
    assert (system.delivery_attempt, system.message_group, system.message_type) == (
        1,
        "order-1",
        pb.MessageType.FIFO,
    )
    assert system.receipt_handle == received.receipt_handle and system.invisible_duration.seconds == 30
    assert (
        system.born_timestamp.seconds > 0 and system.store_timestamp.seconds >= system.born_timestamp.seconds
    )
    assert dict(message.user_properties) == {"source": "shop"}
