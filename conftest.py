"""Shared fixtures. The suite runs on PostgreSQL and Redis (defaults in
``config/pytest_env.py``) and starts real Celery worker and beat processes against the test
database (``txbroker/tests/processes.py``).

Property-based tests (hypothesis, and schemathesis on top of it) run under one of two
hypothesis profiles. ``suite``, loaded here for every run: derandomized, so ``make test``
draws the same examples every time, on any machine and in CI. ``fuzz``
(``--hypothesis-profile=fuzz``, what ``make fuzz`` runs): random, or seeded with
``--hypothesis-seed``, and ``FUZZ_MAX_EXAMPLES`` examples per test. Neither keeps an example
database: a run never depends on what an earlier one found, and a failure prints what
reproduces it."""

import os

import pytest
from hypothesis import settings

pytest_plugins = ["txbroker.tests.processes"]

# No deadline: 2 shared cores make timings noise, and a timing failure is not reproducible.
settings.register_profile("suite", derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile(
    "fuzz",
    derandomize=False,
    database=None,
    deadline=None,
    print_blob=True,
    max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "1000")),
)
settings.load_profile("suite")


@pytest.fixture(autouse=True)
def _no_remote_subscriptions_from_other_tests():
    """Remote (gRPC) subscriptions are cached per process (txbroker.remote_groups): a test
    starts and ends with an empty cache, so no test sees a group another one subscribed."""
    from txbroker.remote_groups import forget_subscriptions

    forget_subscriptions()
    yield
    forget_subscriptions()
