"""A service in another language consumes the shop's payment messages: an official RocketMQ
5 client (rocketmq-python-client) subscribed over gRPC to ``payment_success_topic``
receives the payment that the shop's Django flow committed, while the shop's own Django
consumer groups run it on a real Celery worker."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import OrderFactory, UserFactory
from payments.events import TAG, TOPIC
from txbroker.models import Delivery, RemoteSubscription
from txbroker.remote_groups import forget_subscriptions
from txbroker.tests.processes import start_grpc, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

GROUP = "erp_payment_group"


@pytest.fixture
def grpc(transactional_db, broker_env, broker_setting, tmp_path):
    broker_setting("TXBROKER_GRPC_SUBSCRIPTION_REFRESH", "0")
    forget_subscriptions()
    server = start_grpc(tmp_path, "grpc")
    yield server
    server.proc.stop()


def test_a_grpc_consumer_receives_the_payment_message_django_committed(grpc, app_worker, client_for):
    buyer = UserFactory(username="grpc-buyer")
    NotificationProfileFactory(user=buyer, phone="+8613800138001")
    order = OrderFactory(order_id="ORDER_GRPC_1", user=buyer, amount="42.00")
    config = ClientConfiguration(grpc.endpoint, Credentials(grpc.access_key, grpc.secret))
    consumer = SimpleConsumer(config, GROUP, {TOPIC: FilterExpression(TAG)}, await_duration=2)
    consumer.startup()
    try:
        wait_for(lambda: RemoteSubscription.objects.filter(consumer_group=GROUP).exists(), what="subscribed")
        response = client_for(buyer).post(
            "/api/payments/", {"order_id": order.order_id, "amount": "42.00"}, format="json"
        )
        assert response.status_code == 201, response.json()

        got: list = []
        wait_for(lambda: got.extend(consumer.receive(1, 30)) or got, timeout=30, what="the payment received")
        (message,) = got
        body = json.loads(message.body)
        assert (body["order_id"], Decimal(body["amount"])) == ("ORDER_GRPC_1", Decimal("42.00"))
        assert message.tag == TAG and order.order_id in message.keys
        consumer.ack(message)
    finally:
        consumer.shutdown()

    deliveries = dict(
        Delivery.objects.filter(message_id=message.message_id).values_list("consumer_group", "status")
    )
    assert deliveries[GROUP] == "SUCCEEDED"
    remote = Delivery.objects.get(message_id=message.message_id, consumer_group=GROUP)
    assert (remote.remote, remote.attempts) == (True, 1)
    # The shop's own consumer groups ran it on the Celery worker; Celery never took the gRPC one.
    wait_for(
        lambda: all(
            status == "SUCCEEDED"
            for group, status in Delivery.objects.filter(message_id=message.message_id).values_list(
                "consumer_group", "status"
            )
        ),
        timeout=30,
        what="every consumer group done",
    )
    assert len(deliveries) == 4
