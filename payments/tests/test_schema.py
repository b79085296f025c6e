"""The OpenAPI schema documents every endpoint of the order-payment API with its error
answers (its own and the generic ones of ``config/openapi.py``), request bodies are JSON
only, and the migrations match the models."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

# Every status each operation answers (its own, and config/openapi.py's generic ones).
ENDPOINTS = {
    ("/api/auth/token/", "post"): "200 400 406 415 429 503",
    ("/api/auth/token/revoke/", "post"): "204 401 403 406",
    ("/api/orders/", "get"): "200 401 404 406",
    ("/api/orders/", "post"): "201 400 401 403 406 409 415 429",
    ("/api/orders/{order_id}/", "get"): "200 401 404 406",
    ("/api/orders/{order_id}/cancel/", "post"): "200 401 403 404 406 409",
    ("/api/payments/", "post"): "200 201 202 400 401 402 403 404 406 409 415 429 502 503",
    ("/api/payments/{order_id}/", "get"): "200 401 404 406",
    ("/api/points/me/", "get"): "200 401 406",
    ("/api/points/me/records/", "get"): "200 401 404 406",
    ("/api/notifications/", "get"): "200 400 401 404 406",
    ("/api/notifications/phone/", "get"): "200 401 406",
    ("/api/notifications/phone/", "put"): "200 400 401 403 406 415 429 503",
    ("/api/notifications/phone/verify/", "post"): "200 400 401 403 406 415",
}


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from django.test import Client

    with django_db_blocker.unblock():
        response = Client().get("/api/schema/?format=json", secure=True)
    assert response.status_code == 200
    return response.json()


def test_schema_is_valid_openapi(schema):
    validate_schema(schema)


@pytest.mark.parametrize(("path", "method"), sorted(ENDPOINTS))
def test_every_endpoint_is_documented_with_its_error_answers(schema, path, method):
    operation = schema["paths"][path][method]

    assert set(operation["responses"]) == set(ENDPOINTS[(path, method)].split())
    assert operation.get("summary")


def operations(schema):
    return [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def test_request_bodies_are_json_only_and_may_answer_400_and_415(schema):
    with_body = [(path, method, op) for path, method, op in operations(schema) if "requestBody" in op]
    assert {(path, method) for path, method, _ in with_body} >= {
        ("/api/auth/token/", "post"),
        ("/api/orders/", "post"),
        ("/api/payments/", "post"),
        ("/api/notifications/phone/", "put"),
    }
    for path, method, op in with_body:
        assert list(op["requestBody"]["content"]) == ["application/json"], (path, method)
        assert {"400", "415"} <= set(op["responses"]), (path, method)


def test_every_operation_documents_406_and_the_throttled_ones_429_with_retry_after(schema):
    for path, method, op in operations(schema):
        assert "406" in op["responses"], (path, method)
    for path, method in (("/api/auth/token/", "post"), ("/api/payments/", "post")):
        throttled = schema["paths"][path][method]["responses"]["429"]
        assert "Retry-After" in throttled["headers"]
        assert throttled["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_swagger_ui_is_served(client):
    response = client.get("/api/docs/", secure=True)
    assert response.status_code == 200
    assert b"swagger-ui" in response.content


def test_token_auth_is_offered_and_the_token_endpoint_needs_none(schema):
    assert "tokenAuth" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/api/orders/"]["post"]["security"][0] == {"tokenAuth": []}
    assert schema["paths"]["/api/auth/token/"]["post"].get("security") in ([], [{}], None)


@pytest.mark.django_db(databases="__all__")
def test_migrations_match_the_models():
    call_command("makemigrations", "orders", "payments", "points", "notifications", "--check", "--dry-run")
