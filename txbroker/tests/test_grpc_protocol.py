"""What the official clients never send, said to the server through the protocol's own
generated stub: each bad request gets RocketMQ's status for it and changes nothing; a send
retried with the same message id is stored once."""

from __future__ import annotations

import time

import grpc
import pytest
from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as spb
from rocketmq.grpc_protocol.service_pb2_grpc import MessagingServiceStub

from txbroker.grpcapi.auth import DATE_FORMAT, sign
from txbroker.models import Message
from txbroker.tests.processes import start_grpc

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
Code = pb.Code
MESSAGE_ID = "01" + "AB" * 16


@pytest.fixture
def stub(grpc_server):
    channel = grpc.insecure_channel(grpc_server.endpoint)
    yield MessagingServiceStub(channel), grpc_server
    channel.close()


def signed(server, secret=None):
    date_time = time.strftime(DATE_FORMAT, time.gmtime())
    signature = sign(secret or server.secret, date_time)
    return [
        ("x-mq-date-time", date_time),
        ("x-mq-client-id", "protocol-test"),
        (
            "authorization",
            f"MQv2-HMAC-SHA1 Credential={server.access_key}, SignedHeaders=x-mq-date-time, Signature={signature}",
        ),
    ]


def send(stub, message, secret=None):
    client, server = stub
    return client.SendMessage(
        spb.SendMessageRequest(messages=[message]), metadata=signed(server, secret), timeout=10
    )


def rocket_message(*, message_id=MESSAGE_ID, kind=pb.MessageType.NORMAL, body=b'{"a":1}', **system):
    return pb.Message(
        topic=pb.Resource(name="grpc-protocol"),
        body=body,
        system_properties=pb.SystemProperties(message_id=message_id, message_type=kind, **system),
    )


def test_a_route_is_one_read_write_queue_on_the_address_the_client_reached_taking_every_type(stub):
    client, server = stub
    host, port = server.endpoint.split(":")
    reached = pb.Endpoints(scheme=pb.AddressScheme.IPv4, addresses=[pb.Address(host=host, port=int(port))])
    answer = client.QueryRoute(
        spb.QueryRouteRequest(topic=pb.Resource(name="any-new-topic"), endpoints=reached),
        metadata=signed(server),
        timeout=10,
    )
    assert answer.status.code == Code.OK
    [queue] = answer.message_queues
    assert queue.permission == pb.Permission.READ_WRITE and queue.topic.name == "any-new-topic"
    assert queue.broker.endpoints == reached
    assert set(queue.accept_message_types) == {
        pb.MessageType.NORMAL,
        pb.MessageType.FIFO,
        pb.MessageType.DELAY,
        pb.MessageType.TRANSACTION,
    }
    namespaced = client.QueryRoute(
        spb.QueryRouteRequest(topic=pb.Resource(name="t", resource_namespace="ns")),
        metadata=signed(server),
        timeout=10,
    )
    assert namespaced.status.code == Code.UNSUPPORTED


def test_bad_messages_get_their_status_and_store_nothing(stub):
    cases = [
        (rocket_message(body=b""), Code.MESSAGE_BODY_EMPTY),
        (rocket_message(message_id="not an id!"), Code.ILLEGAL_MESSAGE_ID),
        (rocket_message(kind=pb.MessageType.LITE, lite_topic="x"), Code.UNSUPPORTED),
        (rocket_message(kind=pb.MessageType.PRIORITY, priority=1), Code.UNSUPPORTED),
        (rocket_message(kind=pb.MessageType.FIFO), Code.ILLEGAL_MESSAGE_GROUP),
        (rocket_message(kind=pb.MessageType.DELAY), Code.ILLEGAL_DELIVERY_TIME),
        (rocket_message(message_group="g"), Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        (rocket_message(tag="a||b"), Code.ILLEGAL_MESSAGE_TAG),
        (rocket_message(keys=["k\x00"]), Code.ILLEGAL_MESSAGE_KEY),
    ]
    reserved = rocket_message()
    reserved.user_properties["txbroker.body"] = "bytes"
    cases.append((reserved, Code.ILLEGAL_MESSAGE_PROPERTY_KEY))
    for message, code in cases:
        answer = send(stub, message)
        assert (answer.status.code, answer.entries[0].status.code) == (code, code), message
    unsigned = send(stub, rocket_message(), secret="wrong")
    assert unsigned.status.code == Code.UNAUTHORIZED
    assert not Message.objects.exists()


def test_a_send_retried_with_its_message_id_is_stored_once(stub):
    first, again = send(stub, rocket_message()), send(stub, rocket_message())
    assert first.status.code == again.status.code == Code.OK
    assert first.entries[0].message_id == again.entries[0].message_id == MESSAGE_ID
    assert Message.objects.filter(pk=MESSAGE_ID).count() == 1
    other_topic = rocket_message()
    other_topic.topic.name = "another-topic"
    assert send(stub, other_topic).status.code == Code.ILLEGAL_MESSAGE_ID


def test_end_transaction_of_no_such_transaction_is_refused(stub):
    client, server = stub
    request = spb.EndTransactionRequest(
        topic=pb.Resource(name="grpc-protocol"),
        message_id=MESSAGE_ID,
        transaction_id=MESSAGE_ID,
        resolution=pb.TransactionResolution.COMMIT,
        source=pb.TransactionSource.SOURCE_CLIENT,
    )
    answer = client.EndTransaction(request, metadata=signed(server), timeout=10)
    assert answer.status.code == Code.INVALID_TRANSACTION_ID
    assert not Message.objects.exists()


def test_a_transaction_recovery_duration_is_the_check_immunity_and_a_millisecond_delivery_time_is_read(stub):
    immune = rocket_message(kind=pb.MessageType.TRANSACTION)
    immune.system_properties.orphaned_transaction_recovery_duration.seconds = 3600
    assert send(stub, immune).status.code == Code.OK
    half = Message.objects.get(pk=MESSAGE_ID)
    assert half.state == Message.State.HALF and half.producer_group == "grpc-protocol"
    assert 3590 < (half.next_check_at - half.created_at).total_seconds() < 3610

    at_ms = 1_900_000_000_123  # the Python client's Message takes milliseconds too
    delayed = rocket_message(message_id="01" + "CD" * 16, kind=pb.MessageType.DELAY)
    delayed.system_properties.delivery_timestamp.seconds = at_ms
    assert send(stub, delayed).status.code == Code.OK
    assert Message.objects.get(pk="01" + "CD" * 16).deliver_at.timestamp() == at_ms / 1000


def test_end_transaction_unknown_then_commit_twice_then_rollback(stub):
    client, server = stub
    assert send(stub, rocket_message(kind=pb.MessageType.TRANSACTION)).status.code == Code.OK

    def end(resolution):
        request = spb.EndTransactionRequest(
            topic=pb.Resource(name="grpc-protocol"),
            message_id=MESSAGE_ID,
            transaction_id=MESSAGE_ID,
            resolution=resolution,
            source=pb.TransactionSource.SOURCE_CLIENT,
        )
        return client.EndTransaction(request, metadata=signed(server), timeout=10).status

    assert end(pb.TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED).code == Code.OK
    message = Message.objects.get(pk=MESSAGE_ID)
    assert message.state == Message.State.HALF
    assert message.trace.filter(event="LOCAL_TRANSACTION", detail__startswith="UNKNOWN (gRPC client").exists()
    # The same answer again (a retry after a lost answer) is OK; the other one is refused.
    assert end(pb.TransactionResolution.COMMIT).code == Code.OK
    assert end(pb.TransactionResolution.COMMIT).code == Code.OK
    refused = end(pb.TransactionResolution.ROLLBACK)
    assert refused.code == Code.PRECONDITION_FAILED and "COMMITTED" in refused.message
    assert Message.objects.get(pk=MESSAGE_ID).state == Message.State.COMMITTED


def test_a_topic_restricted_by_setting_routes_and_takes_only_its_types(
    transactional_db, broker_env, tmp_path
):
    server = start_grpc(tmp_path, TXBROKER_GRPC_TOPIC_TYPES="grpc-protocol=FIFO|TRANSACTION")
    channel = grpc.insecure_channel(server.endpoint)
    try:
        stub = (MessagingServiceStub(channel), server)
        route = stub[0].QueryRoute(
            spb.QueryRouteRequest(topic=pb.Resource(name="grpc-protocol")),
            metadata=signed(server),
            timeout=10,
        )
        [queue] = route.message_queues
        assert set(queue.accept_message_types) == {pb.MessageType.FIFO, pb.MessageType.TRANSACTION}
        refused = send(stub, rocket_message())  # NORMAL
        assert refused.entries[0].status.code == Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE
        assert "takes FIFO and TRANSACTION messages, not NORMAL" in refused.entries[0].status.message
        assert not Message.objects.exists()
        fifo = send(stub, rocket_message(kind=pb.MessageType.FIFO, message_group="g"))
        assert fifo.status.code == Code.OK
        assert Message.objects.get(pk=MESSAGE_ID).message_group == "g"
    finally:
        channel.close()
        server.proc.stop()
