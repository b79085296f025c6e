"""The orders REST API, the token endpoint, and who may see what."""

from __future__ import annotations

import re

import pytest
from rest_framework.authtoken.models import Token

from orders.models import Order
from orders.services import ORDER_ID_TAKEN, ORDER_NOT_CANCELLABLE, order_id_generate
from orders.tests.factories import OrderFactory, UserFactory

pytestmark = pytest.mark.django_db

INVALID_AMOUNTS = [
    "0",
    "0.00",
    "-1.00",
    "-0.01",
    "1.001",
    "0.001",
    "100000000.00",
    "99999999.999",
    "1e10",
    "abc",
    "",
    "NaN",
    "nan",
    "sNaN",
    "Infinity",
    "-Infinity",
    "1,00",
    "١٢",
    None,
    True,
    [],
    {},
    "9" * 2000,
]
INVALID_ORDER_IDS = [
    "",
    "a" * 65,
    "has space",
    "semi;colon",
    "slash/",
    "ünïcode",
    "dot.id",
    "new\nline",
    True,
    None,
    ["A"],
]

# Every endpoint but the token one: anonymous callers get 401.
PROTECTED = [
    ("get", "/api/orders/"),
    ("post", "/api/orders/"),
    ("get", "/api/orders/X/"),
    ("post", "/api/orders/X/cancel/"),
    ("post", "/api/payments/"),
    ("get", "/api/payments/X/"),
    ("get", "/api/points/me/"),
    ("get", "/api/points/me/records/"),
    ("get", "/api/notifications/"),
    ("get", "/api/notifications/phone/"),
    ("put", "/api/notifications/phone/"),
    ("post", "/api/notifications/phone/verify/"),
]


# --- token ------------------------------------------------------------------------------------
def test_token_endpoint_returns_the_users_token_and_it_authenticates(anon):
    user = UserFactory(username="alice")

    response = anon.post(
        "/api/auth/token/", {"username": "alice", "password": "test-password-123"}, format="json"
    )

    assert response.status_code == 200
    token = response.json()["token"]
    assert token == Token.objects.get(user=user).key
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get("/api/orders/").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice", "password": "wrong"},
        {"username": "alice"},
        {},
        {"username": "nobody", "password": "x"},
    ],
)
def test_token_endpoint_refuses_bad_credentials_with_400(anon, body):
    UserFactory(username="alice")

    response = anon.post("/api/auth/token/", body, format="json")

    assert response.status_code == 400
    assert response.json()  # names the field, or non_field_errors for wrong credentials


# --- anonymous ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_anonymous_gets_401_with_the_token_challenge(anon, method, path):
    response = getattr(anon, method)(path, {}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "detail" in response.json()


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_a_wrong_token_gets_401(anon, method, path):
    anon.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert getattr(anon, method)(path, {}, format="json").status_code == 401


# --- create -------------------------------------------------------------------------------------
def test_create_with_a_generated_order_id(client_for):
    user = UserFactory()

    response = client_for(user).post("/api/orders/", {"amount": "99.00"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["order_id"].startswith("ORD-")
    assert (body["user_id"], body["amount"], body["status"]) == (user.pk, "99.00", "CREATED")
    assert set(body) == {"order_id", "user_id", "amount", "status", "created_at", "updated_at"}
    assert Order.objects.get(order_id=body["order_id"]).user == user


@pytest.mark.parametrize(
    ("amount", "shown"), [("5", "5.00"), ("0.01", "0.01"), ("99999999.99", "99999999.99"), (7, "7.00")]
)
def test_create_accepts_amounts_in_range_and_shows_two_decimals(client_for, amount, shown):
    response = client_for(UserFactory()).post(
        "/api/orders/", {"amount": amount, "order_id": "My-order_1"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["amount"] == shown
    assert response.json()["order_id"] == "My-order_1"


def test_a_taken_order_id_is_409_naming_the_field(client_for):
    OrderFactory(order_id="TAKEN")

    response = client_for(UserFactory()).post(
        "/api/orders/", {"amount": "1.00", "order_id": "TAKEN"}, format="json"
    )

    assert response.status_code == 409
    assert response.json() == {"order_id": [ORDER_ID_TAKEN]}


def test_order_ids_are_global_and_the_409_says_so(client_for):
    # One business key across all users: another user's order id is taken too, and the
    # message says why and what to do.
    OrderFactory(order_id="SOMEONE-ELSES")

    response = client_for(UserFactory()).post(
        "/api/orders/", {"amount": "1.00", "order_id": "SOMEONE-ELSES"}, format="json"
    )

    assert response.status_code == 409
    assert "unique across all users' orders" in response.json()["order_id"][0]
    assert "omit order_id" in response.json()["order_id"][0]


def test_generated_order_ids_are_96_random_bits():
    ids = {order_id_generate() for _ in range(2000)}

    assert len(ids) == 2000
    assert all(re.fullmatch(r"ORD-[0-9A-F]{24}", order_id) for order_id in ids)


@pytest.mark.parametrize("amount", INVALID_AMOUNTS)
def test_create_rejects_invalid_amounts_with_400_naming_the_field(client_for, amount):
    response = client_for(UserFactory()).post("/api/orders/", {"amount": amount}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["amount"]
    assert not Order.objects.exists()


def test_create_without_an_amount_is_400(client_for):
    response = client_for(UserFactory()).post("/api/orders/", {}, format="json")

    assert response.status_code == 400
    assert response.json() == {"amount": ["This field is required."]}


@pytest.mark.parametrize("order_id", INVALID_ORDER_IDS)
def test_create_rejects_invalid_order_ids_with_400_naming_the_field(client_for, order_id):
    response = client_for(UserFactory()).post(
        "/api/orders/", {"amount": "1.00", "order_id": order_id}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["order_id"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"amount": NaN}', "application/json"),
        ('{"amount": Infinity}', "application/json"),
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
    ],
)
def test_unparsable_or_non_object_bodies_are_400_never_500(client_for, body, content_type):
    response = client_for(UserFactory()).post("/api/orders/", body, content_type=content_type)

    assert response.status_code == 400
    assert response.json()


# --- read, list, cancel -------------------------------------------------------------------------
def test_list_shows_only_the_callers_orders_paginated(client_for):
    user = UserFactory()
    mine = [OrderFactory(user=user) for _ in range(3)]
    OrderFactory()  # someone else's

    body = client_for(user).get("/api/orders/").json()

    assert body["count"] == 3
    assert {o["order_id"] for o in body["results"]} == {o.order_id for o in mine}
    assert {"next", "previous"} <= set(body)


@pytest.mark.django_db(transaction=True)
def test_another_users_order_is_404_for_read_pay_and_cancel(client_for):
    order = OrderFactory()
    intruder = client_for(UserFactory())

    responses = {
        "read": intruder.get(f"/api/orders/{order.order_id}/"),
        "pay": intruder.post(
            "/api/payments/", {"order_id": order.order_id, "amount": "99.00"}, format="json"
        ),
        "cancel": intruder.post(f"/api/orders/{order.order_id}/cancel/"),
        "payment": intruder.get(f"/api/payments/{order.order_id}/"),
    }

    assert {name: r.status_code for name, r in responses.items()} == {
        "read": 404,
        "pay": 404,
        "cancel": 404,
        "payment": 404,
    }
    assert all("detail" in r.json() for r in responses.values())
    order.refresh_from_db()
    assert order.status == Order.Status.CREATED


def test_missing_order_is_404(client_for):
    client = client_for(UserFactory())

    assert client.get("/api/orders/NOPE/").status_code == 404
    assert client.post("/api/orders/NOPE/cancel/").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/orders/%00/"),
        ("post", "/api/orders/%00/cancel/"),
        ("get", "/api/payments/%00/"),
        ("get", "/api/orders/" + "x" * 300 + "/"),
        ("get", "/api/orders/%F0%9F%92%A5/"),
    ],
)
def test_impossible_order_ids_in_the_path_are_404_never_500(client_for, method, path):
    response = getattr(client_for(UserFactory()), method)(path)

    assert response.status_code == 404
    assert "detail" in response.json()


def test_cancel_a_created_order_then_again_is_409(client_for):
    order = OrderFactory()
    client = client_for(order.user)

    first = client.post(f"/api/orders/{order.order_id}/cancel/")
    second = client.post(f"/api/orders/{order.order_id}/cancel/")

    assert first.status_code == 200
    assert first.json()["status"] == "CANCELLED"
    assert second.status_code == 409
    assert second.json() == {"detail": ORDER_NOT_CANCELLABLE.format(status="CANCELLED")}


def test_a_paid_order_cannot_be_cancelled(client_for):
    order = OrderFactory(status=Order.Status.PAID)

    response = client_for(order.user).post(f"/api/orders/{order.order_id}/cancel/")

    assert response.status_code == 409
