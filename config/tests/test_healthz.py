"""``/healthz`` (config.health, on django-health-check): 200 only when the databases, the
cache, the migrations, the Celery broker, a real worker's ping and txbroker's backlog all
pass; otherwise 503, the public told the status only, staff each check's result."""

from __future__ import annotations

import datetime

import pytest
from django.db import connections
from django.db.migrations.recorder import MigrationRecorder

from txbroker.db import broker_db
from txbroker.models import Delivery, Message
from txbroker.tests import operator_data
from txbroker.tests.processes import wait_for
from txbroker.tests.test_metrics import REVEALING, healthz_in_a_process

CHECKS = ("database", "cache", "migrations", "celery_broker", "celery_workers", "txbroker_backlog")


@pytest.fixture
def quick_ping(settings):
    settings.HEALTH_CELERY_PING_TIMEOUT = 0.5


def answers(client, staff) -> tuple[tuple[int, dict], tuple[int, dict]]:
    client.logout()
    public = client.get("/healthz")
    client.force_login(staff)
    for_staff = client.get("/healthz")
    client.logout()
    return (public.status_code, public.json()), (for_staff.status_code, for_staff.json())


@pytest.mark.integration
def test_healthz_is_200_when_a_real_worker_answers_its_ping(worker, quick_ping, client):
    staff = operator_data.make_user("health-staff", staff=True)

    wait_for(lambda: client.get("/healthz").status_code == 200, timeout=30, what="/healthz 200")

    public, for_staff = answers(client, staff)
    assert public == (200, {"status": "ok"})
    assert for_staff[0] == 200
    assert set(CHECKS) <= set(for_staff[1]["checks"])
    assert set(for_staff[1]["checks"].values()) == {"ok"}


def test_no_worker_is_503_with_the_status_only_for_the_public(transactional_db, quick_ping, client):
    staff = operator_data.make_user("health-staff", staff=True)

    public, for_staff = answers(client, staff)

    assert public == (503, {"status": "unavailable"})
    assert for_staff[0] == 503
    assert for_staff[1]["failing"] == ["celery_workers"]
    assert for_staff[1]["checks"]["celery_workers"] == "error: no worker answered within 0.5 s"
    assert for_staff[1]["checks"]["database"] == "ok"


def test_an_unapplied_migration_is_503(transactional_db, quick_ping, client):
    staff = operator_data.make_user("health-staff", staff=True)
    recorder = MigrationRecorder(connections[broker_db()])
    latest = recorder.migration_qs.filter(app="txbroker").order_by("-id").first()
    latest.delete()  # as if the latest txbroker migration were not applied yet
    try:
        public, for_staff = answers(client, staff)
    finally:
        recorder.record_applied(latest.app, latest.name)

    assert public == (503, {"status": "unavailable"})
    assert "migrations" in for_staff[1]["failing"]
    assert for_staff[1]["checks"]["migrations"].startswith(
        "error: 1 migration(s) not applied, first txbroker."
    )


def test_a_half_message_past_its_threshold_is_503(transactional_db, quick_ping, client, settings):
    settings.TXBROKER_HEALTH_MAX_HALF_AGE = "1m"
    staff = operator_data.make_user("health-staff", staff=True)
    Message.objects.create(topic="t", state=Message.State.HALF, producer_group="p")
    Message.objects.update(created_at=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5))

    public, for_staff = answers(client, staff)

    assert public == (503, {"status": "unavailable"})
    assert "txbroker_backlog" in for_staff[1]["failing"]
    assert "a HALF message has waited" in for_staff[1]["checks"]["txbroker_backlog"]


def test_a_delivery_due_past_its_threshold_is_503(transactional_db, quick_ping, client, settings):
    settings.TXBROKER_HEALTH_MAX_PENDING_AGE = "10m"
    staff = operator_data.make_user("health-staff", staff=True)
    message = Message.objects.create(topic="t", state=Message.State.COMMITTED, producer_group="p")
    late = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=20)
    Delivery.objects.create(message=message, consumer_group="test_pay_group", next_attempt_at=late)

    public, for_staff = answers(client, staff)

    assert public == (503, {"status": "unavailable"})
    assert for_staff[1]["checks"]["txbroker_backlog"].startswith(
        "error: a delivery of test_pay_group has been due for 1"
    )


def test_a_broker_outage_names_no_host_even_to_staff(transactional_db):
    operator_data.make_user("health-staff", staff=True)

    got = healthz_in_a_process(
        staff=True,
        urls="config.urls",
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        HEALTH_CELERY_PING_TIMEOUT="0.5",
    )

    public, staff = got["public"], got["staff"]
    assert (public["status"], public["body"]) == (503, {"status": "unavailable"})
    assert {"celery_broker", "celery_workers"} <= set(staff["body"]["failing"])
    for answer in (public, staff):
        assert not any(word in answer["text"] for word in REVEALING), answer["text"]
