"""Settings: typed defaults, Django settings only (the project maps the environment), loud
errors; the database router; the periodic tasks; migrations in step with the models."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from txbroker import faults
from txbroker.conf import parse_duration, parse_faults, txsettings
from txbroker.models import Message
from txbroker.routers import TxBrokerRouter
from txbroker.schedule import CHECK_TASK_NAME, SWEEP_TASK_NAME, ensure_periodic_tasks


def test_defaults_are_rocketmqs(broker_setting):
    for name in ("TXBROKER_CHECK_INTERVAL", "TXBROKER_TRANSACTION_TIMEOUT", "TXBROKER_RETRY_DELAYS"):
        broker_setting(name, None)
    assert txsettings.CHECK_INTERVAL == 30
    assert txsettings.TRANSACTION_TIMEOUT == 6
    assert txsettings.CHECK_MAX == 15
    assert txsettings.MAX_RECONSUME_TIMES == 16
    assert txsettings.SWEEP_INTERVAL == 5
    assert txsettings.DATABASE == "default"
    assert txsettings.RETRY_DELAYS == (
        10,
        30,
        60,
        120,
        180,
        240,
        300,
        360,
        420,
        480,
        540,
        600,
        1200,
        1800,
        3600,
        7200,
    )


def test_txbroker_reads_django_settings_only_and_parses_text(monkeypatch, broker_setting):
    broker_setting("TXBROKER_CHECK_MAX", None)
    assert txsettings.CHECK_MAX == 15
    monkeypatch.setenv("TXBROKER_CHECK_MAX", "7")  # the environment is the project's business
    assert txsettings.CHECK_MAX == 15
    with override_settings(TXBROKER_CHECK_MAX=4):
        assert txsettings.CHECK_MAX == 4
    with override_settings(TXBROKER_RETRY_DELAYS="1s, 2m 1h", TXBROKER_FASTPATH="off"):
        assert txsettings.RETRY_DELAYS == (1, 120, 3600)
        assert txsettings.FASTPATH is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TXBROKER_CHECK_MAX", "0"),
        ("TXBROKER_CHECK_INTERVAL", "soon"),
        ("TXBROKER_RETRY_DELAYS", ""),
        ("TXBROKER_FAULTS", "after_lunch=0.5"),
        ("TXBROKER_FAULTS", "after_half_stored=2"),
    ],
)
def test_bad_values_fail_loudly_naming_the_setting(broker_setting, name, value):
    broker_setting(name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        getattr(txsettings, name.removeprefix("TXBROKER_"))


def test_durations_and_faults_parse():
    assert [parse_duration(v) for v in ("10s", "2m", "1h", "7d", "250ms", "3")] == [
        10,
        120,
        3600,
        604800,
        0.25,
        3,
    ]
    assert parse_faults("after_half_stored=0.05, handler_after_commit=0") == {"after_half_stored": 0.05}


def test_fault_points_cost_nothing_when_unset(broker_setting):
    broker_setting("TXBROKER_FAULTS", None)
    faults.reset()
    faults.fault_point("after_half_stored")  # returns: nothing configured
    assert faults.active_faults() == {}
    faults.reset()


def test_router_keeps_broker_tables_on_their_alias(broker_setting):
    router = TxBrokerRouter()
    broker_setting("TXBROKER_DATABASE", "broker")
    from txbroker.tests.support.models import Plan  # any other app's model

    assert router.db_for_write(Message) == "broker"
    assert router.db_for_read(Plan) is None
    assert router.allow_migrate("broker", "txbroker") is True
    assert router.allow_migrate("default", "txbroker") is False
    assert router.allow_migrate("broker", "txbroker_support") is False
    assert router.allow_migrate("default", "txbroker_support") is True
    broker_setting("TXBROKER_DATABASE", "default")
    assert router.allow_migrate("default", "txbroker") is None


@pytest.mark.django_db
def test_periodic_tasks_are_created_once_and_synced_on_request(broker_setting):
    from django_celery_beat.models import PeriodicTask

    broker_setting("TXBROKER_SWEEP_INTERVAL", "5")
    ensure_periodic_tasks()  # post_migrate ran it; a flushed test database may need it again
    assert ensure_periodic_tasks() == []
    tasks = {t.name: t for t in PeriodicTask.objects.filter(name__in=[CHECK_TASK_NAME, SWEEP_TASK_NAME])}
    assert tasks[CHECK_TASK_NAME].task == "txbroker.check_pass"
    assert tasks[SWEEP_TASK_NAME].interval.every == 5

    broker_setting("TXBROKER_SWEEP_INTERVAL", "2")
    assert ensure_periodic_tasks() == []  # an admin's edit is kept unless asked
    assert ensure_periodic_tasks(sync=True) == [f"synced {SWEEP_TASK_NAME} to every 2s"]
    assert PeriodicTask.objects.get(name=SWEEP_TASK_NAME).interval.every == 2


@pytest.mark.django_db(databases=["default", "txbroker"])
def test_migrations_match_the_models():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
