"""Schemathesis against /api/schema/: every operation, as a user and as staff, bounded
examples. No 5xx, and every response conforms to the schema (status code, content type,
headers, body).

Seeded: in ``make test`` (the ``suite`` hypothesis profile, root ``conftest.py``) every run
draws the same requests, from SUITE_SEED. ``make fuzz`` runs this module with the ``fuzz``
profile, a random ``--hypothesis-seed`` (printed; ``make fuzz FUZZ_SEED=<seed>`` repeats
the run) and ``FUZZ_MAX_EXAMPLES`` examples per operation and identity."""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from orders.services import order_create

pytestmark = pytest.mark.slow

# Examples per operation and identity: the whole module stays within a few minutes.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
# Schemathesis draws from its own seed (random unless given), not from hypothesis's.
SUITE_SEED = 9
FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
# Every check but two. "Schema-valid data is accepted": whether a request is acceptable
# depends on the state (credentials that match a user, an amount that matches the order),
# which a schema cannot say; those answers are documented 4xx, checked for conformance.
# "Schema-invalid data is rejected": DRF coerces on purpose (7 is an amount, 0 a group
# name); the hostile inputs that must be refused are tested one by one in
# test_hostile_input.py. Every answer, to valid and invalid data alike, must still be no
# 5xx and conform to the schema.
EXCLUDED = [positive_data_acceptance, negative_data_rejection]


@pytest.fixture(autouse=True)
def no_throttling(monkeypatch):
    """Throttling has its own test; counters in the shared cache must not make a 429 here."""
    from config.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "allow_request", lambda self, request, view: True)


def schemathesis_config(pytest_config: pytest.Config) -> schemathesis.Config:
    """``--hypothesis-seed`` when given; else SUITE_SEED under a derandomized profile (the
    suite), random otherwise."""
    seed = pytest_config.getoption("hypothesis_seed")
    if seed is None and settings.default.derandomize:
        seed = SUITE_SEED
    config = schemathesis.Config.discover()
    if seed is not None:
        config.update(seed=int(seed), max_failures=None)
    return config


@pytest.fixture
def api_schema(request, transactional_db):
    # transactional: a payment must run outside any transaction, as in production.
    config = schemathesis_config(request.config)
    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=config)


@pytest.fixture
def tokens(transactional_db) -> dict[str, str]:
    users = get_user_model().objects
    user = users.create_user("fuzz-user")
    staff = users.create_user("fuzz-staff", is_staff=True, is_superuser=True)
    # Staff without any permission: every broker read and action must be a documented 403.
    bare = users.create_user("fuzz-bare-staff", is_staff=True)
    from decimal import Decimal

    order_create(user=user, amount=Decimal("12.34"), order_id="fuzz-order")
    return {
        "user": Token.objects.create(user=user).key,
        "staff": Token.objects.create(user=staff).key,
        "bare_staff": Token.objects.create(user=bare).key,
    }


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_as_a_user(case, tokens):
    case.call_and_validate(headers={"Authorization": f"Token {tokens['user']}"}, excluded_checks=EXCLUDED)


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_as_staff(case, tokens):
    case.call_and_validate(headers={"Authorization": f"Token {tokens['staff']}"}, excluded_checks=EXCLUDED)


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation_as_staff_without_permissions(case, tokens):
    case.call_and_validate(
        headers={"Authorization": f"Token {tokens['bare_staff']}"}, excluded_checks=EXCLUDED
    )
