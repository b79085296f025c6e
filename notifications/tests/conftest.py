"""The order-payment apps share their fixtures (payments/tests/fixtures.py)."""

from payments.tests.fixtures import *  # noqa: F403
