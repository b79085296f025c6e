"""The authorization matrix: every API operation and every admin action of the broker, as
{anonymous, user A, user B, staff, viewer, operator} -> the expected status. No user reads,
pays or cancels another's order (staff included: the domain API has no superpowers); the
broker's endpoints and admin need staff and a model permission: every read the view
permission ("viewer": staff with ``txbroker.view_message`` only; "staff" has no permission),
every action its own ("operator": staff with all of txbroker's permissions)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orders.models import Order
from orders.services import order_create
from payments.models import Charge, PaymentRecord, Refund
from txbroker.models import Delivery, Message, MessageKey

pytestmark = pytest.mark.django_db

WHO = ("anonymous", "user_a", "user_b", "staff", "viewer", "operator")
PASSWORD = "a-long-enough-password-for-the-matrix"
TOPIC = "test_topic"

# (method, path, body, expected status for each of WHO). Paths name the world below.
API = [
    (
        "post",
        "/api/auth/token/",
        {"username": "user_a", "password": PASSWORD},
        (200, 200, 200, 200, 200, 200),
    ),
    ("post", "/api/auth/token/revoke/", None, (401, 204, 204, 204, 204, 204)),
    ("get", "/api/orders/", None, (401, 200, 200, 200, 200, 200)),
    ("post", "/api/orders/", {"amount": "1.00"}, (401, 201, 201, 201, 201, 201)),
    ("get", "/api/orders/A-created/", None, (401, 200, 404, 404, 404, 404)),
    ("post", "/api/orders/A-created/cancel/", None, (401, 200, 404, 404, 404, 404)),
    ("post", "/api/payments/", {"order_id": "A-created", "amount": "12.34"}, (401, 201, 404, 404, 404, 404)),
    ("get", "/api/payments/A-paid/", None, (401, 200, 404, 404, 404, 404)),
    ("post", "/api/payments/A-paid/refund/", {}, (401, 201, 404, 404, 404, 404)),
    ("get", "/api/points/me/", None, (401, 200, 200, 200, 200, 200)),
    ("get", "/api/points/me/records/", None, (401, 200, 200, 200, 200, 200)),
    ("get", "/api/notifications/", None, (401, 200, 200, 200, 200, 200)),
    ("get", "/api/notifications/phone/", None, (401, 200, 200, 200, 200, 200)),
    ("put", "/api/notifications/phone/", {"phone": "+8613800000000"}, (401, 200, 200, 200, 200, 200)),
    ("post", "/api/notifications/phone/verify/", {"code": "000000"}, (401, 400, 400, 400, 400, 400)),
    ("get", "/api/txbroker/messages/", None, (401, 403, 403, 403, 200, 200)),
    ("get", "/api/txbroker/messages/{half}/", None, (401, 403, 403, 403, 200, 200)),
    ("post", "/api/txbroker/messages/{dead}/replay/", {}, (401, 403, 403, 403, 403, 202)),
    ("post", "/api/txbroker/messages/{discarded}/resume/", None, (401, 403, 403, 403, 403, 202)),
    ("post", "/api/txbroker/messages/{half}/commit/", None, (401, 403, 403, 403, 403, 202)),
    ("post", "/api/txbroker/messages/{half}/rollback/", None, (401, 403, 403, 403, 403, 202)),
    ("get", "/api/txbroker/dead-letters/", None, (401, 403, 403, 403, 200, 200)),
    ("post", "/api/txbroker/dead-letters/replay/", {"dry_run": True}, (401, 403, 403, 403, 403, 202)),
    ("get", "/api/txbroker/stats/", None, (401, 403, 403, 403, 200, 200)),
    ("get", "/api/txbroker/grpc-clients/", None, (401, 403, 403, 403, 200, 200)),
    ("get", "/api/txbroker/blocked-groups/", None, (401, 403, 403, 403, 200, 200)),
    ("post", "/api/txbroker/messages/{delayed}/recall/", None, (401, 403, 403, 403, 403, 202)),
    (
        "post",
        "/api/txbroker/messages/{dead}/skip/",
        {"consumer_group": "test_all_group"},
        (401, 403, 403, 403, 403, 202),
    ),
]

# The broker's admin: a login redirect for anyone not staff, 403 for staff without the
# permission (the viewer reads, but may not act), the page (or the action done: a redirect)
# for the operator. The API above answers as the admin does.
ADMIN = [
    ("get", "/admin/txbroker/message/", None, (302, 302, 302, 403, 200, 200)),
    ("get", "/admin/txbroker/message/{half}/change/", None, (302, 302, 302, 403, 200, 200)),
    ("get", "/admin/txbroker/message/{dead}/replay/", None, (302, 302, 302, 403, 403, 200)),
    ("get", "/admin/txbroker/message/{discarded}/resume/", None, (302, 302, 302, 403, 403, 200)),
    ("get", "/admin/txbroker/message/{half}/commit/", None, (302, 302, 302, 403, 403, 200)),
    ("get", "/admin/txbroker/message/{half}/rollback/", None, (302, 302, 302, 403, 403, 200)),
    ("get", "/admin/txbroker/message/{delayed}/recall/", None, (302, 302, 302, 403, 403, 200)),
    ("get", "/admin/txbroker/message/{dead}/skip/", None, (302, 302, 302, 403, 403, 200)),
    ("get", "/admin/txbroker/message/blocked-groups/", None, (302, 302, 302, 403, 200, 200)),
    (
        "post",
        "/admin/txbroker/message/",
        {"action": "replay_selected", "_selected_action": ["{dead}"]},
        # The operator gets the confirmation page; the viewer the list again, the action not
        # offered to them (nothing replayed: asserted below).
        (302, 302, 302, 403, 200, 200),
    ),
    ("get", "/admin/txbroker/deadletter/", None, (302, 302, 302, 403, 200, 200)),
    ("get", "/admin/txbroker/dashboard/", None, (302, 302, 302, 403, 200, 200)),
    ("get", "/admin/txbroker/grpcclient/", None, (302, 302, 302, 403, 200, 200)),
]


@pytest.fixture
def world(settings):
    settings.SECURE_SSL_REDIRECT = False
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    users = get_user_model().objects
    people = {
        "user_a": users.create_user("user_a", password=PASSWORD),
        "user_b": users.create_user("user_b", password=PASSWORD),
        "staff": users.create_user("staff", password=PASSWORD, is_staff=True),
        "viewer": users.create_user("viewer", password=PASSWORD, is_staff=True),
        "operator": users.create_user("operator", password=PASSWORD, is_staff=True),
    }
    people["operator"].user_permissions.set(Permission.objects.filter(content_type__app_label="txbroker"))
    people["viewer"].user_permissions.set(
        Permission.objects.filter(content_type__app_label="txbroker", codename="view_message")
    )
    alice = people["user_a"]
    order_create(user=alice, amount=Decimal("12.34"), order_id="A-created")
    paid = order_create(user=alice, amount=Decimal("5.00"), order_id="A-paid")
    Order.objects.filter(pk=paid.pk).update(status=Order.Status.PAID)
    now = timezone.now()
    # A-paid's payment as its message recorded it: a RECORDED charge, a COMMITTED message (refundable).
    paid_message = Message.objects.create(
        topic=TOPIC,
        tag="pay",
        keys=["A-paid"],
        body={},
        producer_group="payment_producer_group",
        state="COMMITTED",
        resolved_at=now,
        message_group="A-paid",
    )
    MessageKey.objects.create(message=paid_message, key="A-paid")
    Charge.objects.create(
        order_id="A-paid", user=alice, amount=Decimal("5.00"), payment_method="sim_approve", status="RECORDED"
    )
    PaymentRecord.objects.create(
        order_id="A-paid",
        user=alice,
        amount=Decimal("5.00"),
        pay_time=now,
        status="SUCCESS",
        message_id=paid_message.msg_id,
    )

    def message(state: str, key: str, **fields) -> str:
        resolved = None if state == "HALF" else now
        return Message.objects.create(
            **fields,
            topic=TOPIC,
            tag="pay",
            keys=[key],
            body={"key": key},
            producer_group="test_producer_group",
            state=state,
            next_check_at=now + timedelta(hours=1),
            resolved_at=resolved,
        ).msg_id

    ids = {"half": message("HALF", "m-half"), "discarded": message("DISCARDED", "m-disc")}
    ids["dead"] = message("COMMITTED", "m-dead")
    Delivery.objects.create(
        message_id=ids["dead"], consumer_group="test_all_group", status="DEAD", attempts=17
    )
    ids["delayed"] = message("COMMITTED", "m-delayed", deliver_at=now + timedelta(days=1))
    Delivery.objects.create(
        message_id=ids["delayed"],
        consumer_group="test_all_group",
        status="PENDING",
        next_attempt_at=now + timedelta(days=1),
    )
    return people, ids


def api_client(who: str, people) -> APIClient:
    client = APIClient()
    if who != "anonymous":
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=people[who]).key}")
    return client


def admin_client(who: str, people) -> Client:
    client = Client()
    if who != "anonymous":
        client.force_login(people[who])
    return client


def fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


def cases(rows):
    # A payment runs outside any transaction, as in production: that case needs real commits.
    committing = pytest.mark.django_db(transaction=True)
    return [
        pytest.param(
            method,
            path,
            body,
            who,
            expected[i],
            id=f"{method.upper()} {path} as {who}",
            marks=[committing] if path.startswith("/api/payments/") and method == "post" else [],
        )
        for method, path, body, expected in rows
        for i, who in enumerate(WHO)
    ]


@pytest.mark.parametrize(("method", "path", "body", "who", "expected"), cases(API))
def test_api(world, method, path, body, who, expected):
    people, ids = world
    response = getattr(api_client(who, people), method)(fill(path, ids), fill(body, ids), format="json")
    assert response.status_code == expected, response.content[:300]
    if expected in (401, 403, 404) and method != "get":
        # Refused means nothing happened.
        assert Order.objects.get(order_id="A-created").status == Order.Status.CREATED
        assert not PaymentRecord.objects.filter(order_id="A-created").exists()
        assert not Refund.objects.exists()
        assert Message.objects.get(pk=ids["half"]).state == "HALF"
        assert Delivery.objects.get(message_id=ids["dead"]).status == "DEAD"
        assert Delivery.objects.get(message_id=ids["delayed"]).status == "PENDING"


@pytest.mark.parametrize(("method", "path", "body", "who", "expected"), cases(ADMIN))
def test_admin(world, method, path, body, who, expected):
    people, ids = world
    response = getattr(admin_client(who, people), method)(fill(path, ids), fill(body, ids))
    assert response.status_code == expected, response.content[:300]
    if expected == 302 and who != "operator":
        assert response["Location"].startswith("/admin/login/")
    if method == "post" and who != "operator":
        assert Delivery.objects.get(message_id=ids["dead"]).status == "DEAD"


def test_the_matrix_covers_every_api_operation():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    covered = set()
    for method, path, _, _ in API:
        for name in ("half", "dead", "discarded", "delayed"):
            path = path.replace("{" + name + "}", "{msg_id}")
        covered.add((method, path.replace("A-created", "{order_id}").replace("A-paid", "{order_id}")))
    assert operations <= covered, f"not in the matrix: {sorted(operations - covered)}"
