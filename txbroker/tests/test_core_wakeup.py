"""Coalesced wake-ups: at most one delivery task waits in the broker's queue; a task clears
the mark before it claims, so no commit is left without a wake-up that will see it. The
same tests run on Redis (a Redis key, or the database row when asked) and on RabbitMQ (the
database row): the queue's depth is read from the broker with a passive declare."""

from __future__ import annotations

import pytest
from django.test import override_settings

from txbroker import wakeup
from txbroker.delivery import deliver_due
from txbroker.models import Delivery
from txbroker.tests.helpers import deliveries, send
from txbroker.tests.processes import purge_queue, queued_tasks, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.broker]


@pytest.fixture(params=["auto", "database"])
def mark(request, broker_env, clean_queue, broker_setting) -> str:
    """Each test with the broker's own mark (auto) and with the database row."""
    broker_setting("TXBROKER_WAKEUP_MARK", request.param)
    return wakeup.mark_kind()


def test_many_commits_share_one_queued_wake_up_until_a_task_starts(mark):
    assert mark in {"redis", "database"}
    first = send("w-0").msg_id
    for i in range(1, 20):
        send(f"w-{i}")
        assert queued_tasks() == 1  # every commit so far, one wake-up waiting
    assert wakeup.pending()

    wakeup.started()  # a task starts: it will claim everything committed so far
    assert not wakeup.pending()
    report = deliver_due(budget_seconds=5)
    assert report.succeeded == 60
    assert set(deliveries(first).values()) == {"SUCCEEDED"}

    send("w-20")
    assert queued_tasks() == 2  # a commit after the start publishes again


def test_every_commit_publishes_when_coalescing_is_off(mark, broker_setting):
    broker_setting("TXBROKER_WAKEUP_COALESCE", "0")
    for i in range(3):
        send(f"off-{i}")
    assert queued_tasks() == 3


def test_a_lost_wake_up_stops_suppressing_new_ones_after_its_ttl(mark, broker_setting):
    broker_setting("TXBROKER_WAKEUP_TTL", "0.2")
    send("ttl-1")
    assert purge_queue() == 1  # the queued task is lost; its mark is not
    assert queued_tasks() == 0
    wait_for(lambda: not wakeup.pending(), timeout=5, what="the mark to expire")
    send("ttl-2")
    assert queued_tasks() == 1


@pytest.mark.integration
def test_a_burst_of_commits_is_fully_delivered_by_a_worker(mark, worker):
    sent, depths = [], []
    for i in range(40):
        sent.append(send(f"burst-{i}").msg_id)
        depths.append(queued_tasks())
    assert max(depths) <= 1, depths  # never two wake-ups waiting, with a worker taking them
    wait_for(
        lambda: Delivery.objects.filter(message_id__in=sent, status="SUCCEEDED").count() == 120,
        timeout=60,
        what="all 120 deliveries to succeed",
    )
    wait_for(lambda: queued_tasks() == 0, timeout=10, what="the queue to drain")


@pytest.mark.parametrize(
    ("url", "setting", "kind"),
    [
        ("redis://127.0.0.1:6379/0", "auto", "redis"),
        ("amqp://guest:guest@127.0.0.1:5672//", "auto", "database"),
        ("sqs://", "auto", "database"),
        ("filesystem://", "auto", "none"),
        ("memory://", "auto", "none"),
        ("redis://127.0.0.1:6379/0", "database", "database"),
        ("amqp://guest:guest@127.0.0.1:5672//", "none", "none"),
    ],
)
def test_the_mark_follows_the_broker_unless_a_setting_names_it(url, setting, kind):
    with override_settings(CELERY_BROKER_URL=url, TXBROKER_WAKEUP_MARK=setting):
        assert wakeup.mark_kind() == kind
    with override_settings(CELERY_BROKER_URL=url, TXBROKER_WAKEUP_COALESCE=False):
        assert wakeup.mark_kind() == "none"
