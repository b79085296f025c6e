"""Pay then refund at once, over HTTP (gunicorn), with two real Celery workers whose
handlers fail their first attempt half the time (TXBROKER_FAULTS): every order ends
REFUNDED, every consumer group handled each order's payment before its refund, the
balances are back to zero and every order has two notifications."""

from __future__ import annotations

import json
import random
import sys
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from notifications.models import Notification
from notifications.tests.factories import NotificationProfileFactory
from orders.models import Order
from orders.tests.factories import OrderFactory, UserFactory
from payments.tests.fixtures import GROUPS
from points.models import PointsRecord, UserPoints
from txbroker.models import Delivery, Message
from txbroker.testing import free_port
from txbroker.tests.processes import start_worker, wait_for
from txbroker.trace import with_successes

ORDERS = 20
FLAKY = {"TXBROKER_FAULTS": "handler_first_attempt_error=0.5"}


@pytest.fixture
def worker_env() -> dict[str, str]:
    return FLAKY


def post(base: str, token: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310 - our server
        base + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def http_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our server
            return True
    except urllib.error.HTTPError:  # it answers: 503 while a check (a worker's ping) fails
        return True
    except (urllib.error.URLError, OSError):
        return False


def test_pay_then_refund_at_once_over_http_with_flaky_handlers(app_worker, beat, processes, tmp_path):
    rng = random.Random(12)
    second_worker = start_worker(
        tmp_path,
        name="app-worker-2",
        NOTIFICATIONS_SMS_BACKEND="notifications.backends.FileSmsBackend",
        NOTIFICATIONS_SMS_FILE_PATH=str(app_worker.sms_path),
        **FLAKY,
    )
    port = free_port()
    web = processes(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            f"--bind=127.0.0.1:{port}",
            "--workers=2",
            "--threads=4",
            "--worker-class=gthread",
            "--timeout=60",
        ],
        DJANGO_SECURE_SSL_REDIRECT="0",
        PAYMENTS_ALLOW_SIMULATED_GATEWAY="1",
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: http_up(base + "/healthz") or web.popen.poll() is not None, timeout=60, what="web")
    assert web.popen.poll() is None, web.log()[-3000:]

    users = [UserFactory() for _ in range(4)]
    for user in users:
        NotificationProfileFactory(user=user)
    tokens = {user.pk: Token.objects.create(user=user).key for user in users}
    orders = [
        OrderFactory(user=rng.choice(users), amount=Decimal(rng.randint(100, 99999)) / 100)
        for _ in range(ORDERS)
    ]

    def pay_then_refund(order: Order) -> tuple[int, int, dict]:
        token = tokens[order.user_id]
        paid, _ = post(
            base, token, "/api/payments/", {"order_id": order.order_id, "amount": str(order.amount)}
        )
        refunded, body = post(base, token, f"/api/payments/{order.order_id}/refund/", {"reason": "at once"})
        return paid, refunded, body

    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(pay_then_refund, orders))
        assert [(p, r) for p, r, _ in answers] == [(201, 201)] * ORDERS, answers
        assert all(body["status"] == "REFUNDED" for _, _, body in answers)

        def all_delivered():
            connection.close_if_unusable_or_obsolete()
            rows = Delivery.objects.filter(message_group__in=[o.order_id for o in orders])
            return rows.count() == 2 * ORDERS * len(GROUPS) and not rows.exclude(status="SUCCEEDED").exists()

        wait_for(all_delivered, timeout=180, what="every pay and refund delivery succeeded")
    finally:
        second_worker.stop()

    ids = [o.order_id for o in orders]
    assert Counter(Order.objects.filter(order_id__in=ids).values_list("status", flat=True)) == {
        "REFUNDED": ORDERS
    }
    # The injected faults did fire: some first attempts failed and were retried.
    assert Delivery.objects.filter(message_group__in=ids, attempts__gt=1).exists()

    # In every consumer group, each order's payment succeeded before any attempt of its refund.
    for order_id in ids:
        for group in GROUPS:
            # Failed attempts are trace rows, a success is on its delivery row: by time.
            attempts = [
                (e.at, tag, e.outcome)
                for msg_id, tag in Message.objects.filter(message_group=order_id).values_list("msg_id", "tag")
                for e in with_successes(msg_id)
                if e.event == "DELIVERY_ATTEMPT" and e.consumer_group == group
            ]
            pay_done = [at for at, tag, outcome in attempts if tag == "pay" and outcome == "SUCCEEDED"]
            refund_tries = [at for at, tag, _ in attempts if tag == "refund"]
            assert len(pay_done) == 1 and refund_tries, (order_id, group, list(attempts))
            assert pay_done[0] < min(refund_tries), (order_id, group, list(attempts))

    records = defaultdict(dict)
    for order_id, reason, points, pk in PointsRecord.objects.filter(order_id__in=ids).values_list(
        "order_id", "reason", "points", "pk"
    ):
        records[order_id][reason] = (points, pk)
    for order in orders:
        award, deduction = records[order.order_id]["PAYMENT"], records[order.order_id]["REFUND"]
        assert award[0] == int(order.amount) and deduction[0] == -award[0]
        assert award[1] < deduction[1]  # the award was recorded first
    assert set(UserPoints.objects.filter(user__in=users).values_list("points", flat=True)) <= {0}

    per_order = Counter(Notification.objects.filter(order_id__in=ids).values_list("order_id", "kind"))
    assert per_order == {(order_id, kind): 1 for order_id in ids for kind in ("PAYMENT", "REFUND")}
    assert len(app_worker.sms()) == 2 * ORDERS  # a failed first attempt fails before the handler
