"""Swagger UI's "Try it out" fills each request from the schema's examples
(config.openapi_examples): every operation, run with exactly what its examples say, is
answered as a valid request, never 400. The fixtures make the ids the examples name exist,
as a user of `make run` would by executing the operations in order (create the order, set
and verify the phone, pay)."""

from __future__ import annotations

from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from config.openapi_examples import (
    EXAMPLE_MSG_ID,
    EXAMPLE_ORDER_ID,
    EXAMPLE_PASSWORD,
    EXAMPLE_PHONE_CODE,
    EXAMPLE_USERNAME,
    PARAMETERS_WITHOUT_EXAMPLE,
)
from txbroker.models import Message

# The order a new user executes them in; the rest after these, then the ones that end things.
FIRST = [
    ("post", "/api/auth/token/"),
    ("post", "/api/orders/"),
    ("put", "/api/notifications/phone/"),
    ("post", "/api/notifications/phone/verify/"),
    ("post", "/api/payments/"),
]
LAST = [
    ("post", "/api/payments/{order_id}/refund/"),
    ("post", "/api/orders/{order_id}/cancel/"),
    ("post", "/api/auth/token/revoke/"),
]
# These do what they say on the first click; the others may answer 404 or 409 (the example
# message in a state that refuses the operation), never 400.
SUCCEED = {
    ("post", "/api/auth/token/"): 200,
    ("post", "/api/orders/"): 201,
    ("put", "/api/notifications/phone/"): 200,
    ("post", "/api/notifications/phone/verify/"): 200,
    ("post", "/api/payments/"): 201,
    ("get", "/api/orders/{order_id}/"): 200,
    ("get", "/api/payments/{order_id}/"): 200,
    ("post", "/api/payments/{order_id}/refund/"): 201,
    ("get", "/api/txbroker/messages/{msg_id}/"): 200,
    ("post", "/api/txbroker/messages/{msg_id}/commit/"): 202,
    ("post", "/api/txbroker/dead-letters/replay/"): 202,
    ("post", "/api/auth/token/revoke/"): 204,
}


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    found = [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]

    def rank(entry):
        key = entry[:2]
        if key in FIRST:
            return (0, FIRST.index(key))
        if key in LAST:
            return (2, LAST.index(key))
        return (1, 0)

    return sorted(found, key=rank)


def request_from_examples(path: str, operation: dict) -> tuple[str, dict, dict | None]:
    query = {}
    for parameter in operation.get("parameters", []):
        if "example" not in parameter:
            continue
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", str(parameter["example"]))
        elif parameter["in"] == "query":
            query[parameter["name"]] = parameter["example"]
    body = None
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content:
        body = next(iter(content["examples"].values()))["value"]
    return path, query, body


@pytest.fixture
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.mark.django_db
def test_every_parameter_and_request_body_has_an_example(schema):
    missing = []
    for method, path, operation in operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["name"] not in PARAMETERS_WITHOUT_EXAMPLE and "example" not in parameter:
                missing.append(f"{method} {path} {parameter['in']} {parameter['name']}")
        for media, content in operation.get("requestBody", {}).get("content", {}).items():
            if not content.get("examples"):
                missing.append(f"{method} {path} body {media}")
    assert not missing, missing


# Payments commit their own transactions (payment_pay refuses to run inside one).
@pytest.mark.django_db(transaction=True)
def test_every_operation_run_with_its_examples_is_a_valid_request(schema):
    user = get_user_model().objects.create_superuser(EXAMPLE_USERNAME, "admin@example.com", EXAMPLE_PASSWORD)
    # The message the operator examples name: HALF, so that commit applies.
    Message.objects.create(
        msg_id=EXAMPLE_MSG_ID,
        topic="payment_success_topic",
        tag="pay",
        keys=[EXAMPLE_ORDER_ID],
        producer_group="payment_producer_group",
        state=Message.State.HALF,
    )
    client = APIClient()
    client.force_authenticate(user)
    answers = {}
    # The code the SMS carries is random; the example's is the one sent here.
    with mock.patch("notifications.services.secrets.randbelow", return_value=int(EXAMPLE_PHONE_CODE)):
        for method, path, operation in operations(schema):
            url, query, body = request_from_examples(path, operation)
            if query:
                url += "?" + "&".join(f"{name}={value}" for name, value in query.items())
            response = (
                getattr(client, method)(url, body, format="json")
                if body is not None
                else (getattr(client, method)(url))
            )
            answers[(method, path)] = (response.status_code, response.content[:300])
    invalid = {op: answer for op, answer in answers.items() if answer[0] == 400 or answer[0] >= 500}
    assert not invalid, invalid
    for op, expected in SUCCEED.items():
        assert answers[op][0] == expected, (op, answers[op])
    for op, (code, _) in answers.items():
        if op[0] == "get":
            assert code == 200, (op, answers[op])
