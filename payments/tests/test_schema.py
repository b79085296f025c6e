"""The OpenAPI schema documents every endpoint of the order-payment API with its error
answers, and the migrations match the models."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db

ENDPOINTS = {
    ("/api/auth/token/", "post"): {"200", "400", "429", "503"},
    ("/api/auth/token/revoke/", "post"): {"204", "401"},
    ("/api/orders/", "get"): {"200", "401"},
    ("/api/orders/", "post"): {"201", "400", "401", "409", "429"},
    ("/api/orders/{order_id}/", "get"): {"200", "401", "404"},
    ("/api/orders/{order_id}/cancel/", "post"): {"200", "401", "404", "409"},
    ("/api/payments/", "post"): {"200", "201", "202", "400", "401", "402", "404", "409", "502"},
    ("/api/payments/{order_id}/", "get"): {"200", "401", "404"},
    ("/api/points/me/", "get"): {"200", "401"},
    ("/api/points/me/records/", "get"): {"200", "401"},
    ("/api/notifications/", "get"): {"200", "401"},
    ("/api/notifications/phone/", "get"): {"200", "401"},
    ("/api/notifications/phone/", "put"): {"200", "400", "401"},
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

    assert ENDPOINTS[(path, method)] <= set(operation["responses"])
    assert operation.get("summary")


def test_token_auth_is_offered_and_the_token_endpoint_needs_none(schema):
    assert "tokenAuth" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/api/orders/"]["post"]["security"][0] == {"tokenAuth": []}
    assert schema["paths"]["/api/auth/token/"]["post"].get("security") in ([], [{}], None)


@pytest.mark.django_db(databases="__all__")
def test_migrations_match_the_models():
    call_command("makemigrations", "orders", "payments", "points", "notifications", "--check", "--dry-run")
