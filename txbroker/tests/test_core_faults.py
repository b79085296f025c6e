"""The raising fault point: a handler's first attempt fails on purpose, the retry succeeds,
and the effect happens once."""

from __future__ import annotations

import pytest
from django.utils import timezone

from txbroker import delivery, faults
from txbroker.conf import parse_faults
from txbroker.models import Delivery
from txbroker.tests.helpers import effects, send


@pytest.fixture
def first_attempts_fail(broker_setting, broker_env):
    broker_setting("TXBROKER_FAULTS", "handler_first_attempt_error=1")
    faults.reset()
    yield
    broker_setting("TXBROKER_FAULTS", None)
    faults.reset()


def test_the_point_parses_and_raises_only_when_set(broker_setting):
    assert parse_faults("handler_first_attempt_error=0.3") == {"handler_first_attempt_error": 0.3}
    broker_setting("TXBROKER_FAULTS", None)
    faults.reset()
    faults.fault_error("handler_first_attempt_error")  # nothing configured: returns
    faults.reset()


@pytest.mark.django_db(transaction=True)
def test_a_first_attempt_that_raises_is_retried_and_the_effect_happens_once(first_attempts_fail):
    msg_id = send("first-attempt", tag="other").msg_id  # only test_all_group
    delivery.deliver_due(budget_seconds=5)
    row = Delivery.objects.get(message_id=msg_id)
    assert (row.status, row.attempts) == ("RETRY", 1)
    assert "InjectedFault: fault injected: handler_first_attempt_error" in row.last_error
    assert effects("first-attempt") == {}

    Delivery.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    delivery.deliver_due(budget_seconds=5)  # attempt 2: the point does not apply
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("SUCCEEDED", 2)
    assert effects("first-attempt") == {"test_all_group": 1}
