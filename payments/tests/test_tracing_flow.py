"""One trace from ``POST /api/payments/`` to all three consumer groups, across real
processes: gunicorn and a Celery worker, both run under ``opentelemetry-instrument`` and
configured by OpenTelemetry's environment variables only (txbroker.tests.spans exports
their spans to files this test reads). The web request's span is the parent of the
producer's ``send`` span, whose context the message carries; each consumer group's
``process`` span in the worker is its child, with the messaging attributes."""

from __future__ import annotations

import sys

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from notifications.tests.factories import NotificationProfileFactory
from orders.tests.factories import OrderFactory, UserFactory
from payments.checkers import payment_producer
from payments.events import TAG, TOPIC
from payments.tests.fixtures import GROUPS
from payments.tests.test_refund_flow import http_up, post
from txbroker.models import Message
from txbroker.testing import free_port
from txbroker.tests.processes import start_worker, wait_for
from txbroker.tests.spans import read_spans, require_opentelemetry, traced, traced_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def by_id(spans: list[dict]) -> dict[str, dict]:
    return {span["span_id"]: span for span in spans}


def ancestors(span: dict, spans: dict[str, dict]) -> list[dict]:
    chain = []
    while span["parent_id"] in spans:
        span = spans[span["parent_id"]]
        chain.append(span)
    return chain


def test_one_trace_from_the_payment_request_to_every_consumer_group(
    transactional_db, broker_env, clean_queue, processes, tmp_path
):
    require_opentelemetry()
    worker = start_worker(
        tmp_path,
        name="traced-worker",
        wrap=traced,
        NOTIFICATIONS_SMS_BACKEND="notifications.backends.FileSmsBackend",
        NOTIFICATIONS_SMS_FILE_PATH=str(tmp_path / "sms.jsonl"),
        **traced_env(tmp_path, "worker"),
    )
    port = free_port()
    web = processes(
        "web",
        traced(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                f"--bind=127.0.0.1:{port}",
                "--workers=1",
                "--timeout=60",
            ]
        ),
        DJANGO_SECURE_SSL_REDIRECT="0",
        PAYMENTS_ALLOW_SIMULATED_GATEWAY="1",
        **traced_env(tmp_path, "web"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_up(base + "/healthz") or web.popen.poll() is not None, timeout=60, what="web")
        assert web.popen.poll() is None, web.log()[-3000:]

        user = UserFactory()
        NotificationProfileFactory(user=user)
        order = OrderFactory(user=user)
        token = Token.objects.create(user=user).key
        status, body = post(
            base, token, "/api/payments/", {"order_id": order.order_id, "amount": str(order.amount)}
        )
        assert status == 201, body

        def processed():
            found = [
                s
                for s in read_spans(tmp_path)
                if s["name"] == f"process {TOPIC}" and s["attributes"].get("txbroker.outcome") == "SUCCEEDED"
            ]
            return (
                found if len({s["attributes"]["messaging.consumer.group.name"] for s in found}) == 3 else None
            )

        process_spans = wait_for(processed, timeout=60, what="a process span of every consumer group")
    finally:
        worker.stop()

    connection.close_if_unusable_or_obsolete()
    message = Message.objects.get(key_rows__key=order.order_id, tag=TAG)
    spans = read_spans(tmp_path)
    index = by_id(spans)

    # The producer's span: in the web process, under the request's server span.
    (send,) = [
        s
        for s in spans
        if s["attributes"].get("messaging.message.id") == message.msg_id and s["kind"] == "PRODUCER"
    ]
    assert send["name"] == f"send {TOPIC}" and send["service"] == "web"
    assert send["attributes"] == {
        **send["attributes"],
        "messaging.system": "txbroker",
        "messaging.operation.type": "send",
        "messaging.destination.name": TOPIC,
        "messaging.rocketmq.message.tag": TAG,
        "messaging.rocketmq.message.keys": [order.order_id],
        "messaging.rocketmq.message.group": order.order_id,
        "messaging.rocketmq.message.type": "transaction",
        "messaging.rocketmq.client_group": payment_producer.producer_group,
        "txbroker.local_transaction.state": "COMMIT",
        "txbroker.outcome": "COMMITTED",
    }
    servers = [s for s in ancestors(send, index) if s["kind"] == "SERVER"]
    assert servers and servers[-1]["attributes"].get("http.route", "").endswith("api/payments/"), servers
    request = servers[-1]
    assert request["parent_id"] is None and request["service"] == "web"
    # The message carries the producer's context.
    version, trace_id, parent_id, _flags = message.properties["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", send["trace_id"], send["span_id"])
    assert message.properties["charge_id"]  # the producer's own properties are kept

    # The producer's commit: a settle span under its send.
    (commit,) = [s for s in spans if s["name"] == f"commit {TOPIC}" and s["parent_id"] == send["span_id"]]
    assert commit["attributes"]["messaging.operation.type"] == "settle"
    assert commit["attributes"]["txbroker.settled_by"] == "producer"
    assert commit["attributes"]["txbroker.settled"] is True

    # Every consumer group's handler ran in a process span continuing that trace.
    assert sorted(s["attributes"]["messaging.consumer.group.name"] for s in process_spans) == sorted(GROUPS)
    for span in process_spans:
        group = span["attributes"]["messaging.consumer.group.name"]
        assert span["service"] == "worker" and span["kind"] == "CONSUMER"
        assert span["trace_id"] == send["trace_id"] == request["trace_id"]
        assert span["parent_id"] == send["span_id"]
        assert span["links"] == [{"trace_id": send["trace_id"], "span_id": send["span_id"]}]
        assert span["status"] == "UNSET"
        assert span["attributes"] == {
            **span["attributes"],
            "messaging.system": "txbroker",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": TOPIC,
            "messaging.consumer.group.name": group,
            "messaging.rocketmq.client_group": group,
            "messaging.message.id": message.msg_id,
            "messaging.rocketmq.message.keys": [order.order_id],
            "messaging.rocketmq.message.tag": TAG,
            "txbroker.delivery.attempt": 1,
        }
        # The handler's own database work is inside its span (psycopg2 instrumented).
        assert any(s["parent_id"] == span["span_id"] for s in spans), group
