"""A service in another language produces, Django consumes: messages sent by the official
RocketMQ 5 Python client over a real ``manage.py txbroker_grpc`` (a plain one and a
committed transaction) are delivered to the Django consumer groups subscribed to their
topic and tag, run once each by a real Celery worker, and their trace names the client."""

from __future__ import annotations

import pytest
from rocketmq import TransactionChecker, TransactionResolution

from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests.processes import wait_for
from txbroker.tests.support.consumers import TOPIC
from txbroker.tests.support.models import Effect
from txbroker.tests.test_grpc_producer import message, producer

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# test_topic's Django groups: test_all_group ("*"), test_pay_group ("pay") and
# test_refund_group ("pay || refund").
PAY_GROUPS = {"test_all_group", "test_pay_group", "test_refund_group"}


class Commits(TransactionChecker):
    def check(self, message) -> TransactionResolution:
        return TransactionResolution.COMMIT


def effects(key: str) -> dict[str, int]:
    return dict(Effect.objects.filter(key=key).values_list("consumer_group", "count"))


def test_grpc_messages_are_consumed_by_the_django_groups_of_their_topic_and_tag(grpc_server, worker):
    with producer(grpc_server, TOPIC, checker=Commits()) as client:
        plain = client.send(message(TOPIC, b'{"order": 41}', tag="pay", key="grpc-pay-41")).message_id
        other = client.send(message(TOPIC, b'{"order": 42}', tag="ship", key="grpc-ship-42")).message_id
        transaction = client.begin_transaction()
        held = client.send(message(TOPIC, b'{"order": 43}', tag="refund", key="grpc-refund-43"), transaction)
        transaction.commit()

    expected = {
        "grpc-pay-41": dict.fromkeys(PAY_GROUPS, 1),
        "grpc-ship-42": {"test_all_group": 1},
        "grpc-refund-43": {"test_all_group": 1, "test_refund_group": 1},
    }
    wait_for(lambda: all(effects(key) == want for key, want in expected.items()), timeout=60, what="effects")
    for msg_id, key in ((plain, "grpc-pay-41"), (other, "grpc-ship-42"), (held.message_id, "grpc-refund-43")):
        stored = Message.objects.get(pk=msg_id)
        assert stored.state == Message.State.COMMITTED and stored.keys == [key]
        statuses = dict(Delivery.objects.filter(message=stored).values_list("consumer_group", "status"))
        assert statuses == dict.fromkeys(expected[key], Delivery.Status.SUCCEEDED)
        # The trace names the gRPC client and its address, as the admin's trace page shows it.
        details = " ".join(stored.trace.values_list("detail", flat=True))
        assert "gRPC client" in details and "127.0.0.1:" in details, details
    assert stored.trace.filter(event=TraceEvent.Event.LOCAL_TRANSACTION, detail__startswith="COMMIT").exists()
