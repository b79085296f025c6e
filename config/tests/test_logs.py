"""The logs: quiet by default (the periodic passes' routine Celery records at DEBUG; one
line per 4xx), JSON with DJANGO_LOG_FORMAT=json carrying a delivery's msg_id, topic,
consumer_group and attempt as fields, failed and dead deliveries with their traceback, and
the fault-injection warning saying what each point does."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from celery.app import trace as celery_trace
from django.test import Client

from config.logs import QuietPeriodicPasses, json_formatter
from txbroker import delivery, faults
from txbroker.tests.helpers import send
from txbroker.tests.processes import project_dir
from txbroker.tests.support.models import Plan

IDLE = "{'reclaimed': 0, 'due': 0, 'enqueued': 0}"
BUSY = "{'reclaimed': 0, 'due': 3, 'enqueued': 1}"


def celery_success(task: str, returned: str) -> None:
    """What a worker logs when a task succeeds (Celery's own function)."""
    celery_trace.info(
        celery_trace.LOG_SUCCESS, {"id": "t-1", "name": task, "return_value": returned, "runtime": 0.01}
    )


def celery_received(task: str) -> None:
    logging.getLogger("celery.worker.strategy").info(
        celery_trace.LOG_RECEIVED, {"id": "t-1", "name": task}, extra={"data": {"id": "t-1", "name": task}}
    )


def beat_sends(entry: str, task: str) -> None:
    logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", entry, task)


def test_the_quiet_filter_is_on_celerys_loggers():
    for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
        quiet = [f for f in logging.getLogger(name).filters if isinstance(f, QuietPeriodicPasses)]
        assert quiet and "txbroker.sweep" in quiet[0].tasks, name


def test_a_periodic_pass_that_did_nothing_logs_nothing_at_info(caplog):
    caplog.set_level(logging.INFO)
    beat_sends("txbroker: delivery sweep", "txbroker.sweep")
    celery_received("txbroker.sweep")
    celery_success("txbroker.sweep", IDLE)
    celery_success("payments.charge_reconcile", "{'older_than': 600.0, 'dry_run': False, 'examined': 0}")
    assert caplog.records == []


def test_a_pass_that_did_something_and_other_tasks_still_log_at_info(caplog):
    caplog.set_level(logging.INFO)
    celery_success("txbroker.sweep", BUSY)
    celery_received("some.other_task")
    beat_sends("nightly report", "some.other_task")
    assert [(r.levelname, r.getMessage()[:30]) for r in caplog.records] == [
        ("INFO", "Task txbroker.sweep[t-1] succe"),
        ("INFO", "Task some.other_task[t-1] rece"),
        ("INFO", "Scheduler: Sending due task ni"),
    ]


def test_the_quiet_records_are_there_at_debug(caplog):
    caplog.set_level(logging.DEBUG)
    beat_sends("txbroker: delivery sweep", "txbroker.sweep")
    celery_success("txbroker.sweep", IDLE)
    assert [r.levelname for r in caplog.records] == ["DEBUG", "DEBUG"]


def handlers_below_root(logger: logging.Logger, record: logging.LogRecord) -> list[logging.Handler]:
    """The handlers that would write a record on its way up to the root logger (whose
    handler writes every record once)."""
    reached = []
    while logger is not None and logger is not logging.root:
        reached += [h for h in logger.handlers if record.levelno >= h.level and h.filter(record)]
        logger = logger.parent if logger.propagate else None
    return reached


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_a_4xx_is_one_log_line(caplog, settings, debug):
    settings.DEBUG = debug  # Django's own console handler wrote only with DEBUG on
    caplog.set_level(logging.INFO)
    response = Client().get("/api/no-such-thing/")
    assert response.status_code == 404
    records = [r for r in caplog.records if r.name == "django.request"]
    assert len(records) == 1
    assert handlers_below_root(logging.getLogger("django.request"), records[0]) == []
    assert logging.getLogger("django.request").propagate and logging.getLogger("django").propagate


@pytest.mark.django_db
def test_the_front_page_is_a_page_not_a_404():
    response = Client().get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'href="/api/docs/"' in body and 'href="/admin/"' in body


@pytest.fixture
def failing(broker_setting, broker_env):
    Plan.objects.create(key="log-retry", fail_times=99)
    Plan.objects.create(key="log-dead", fail_times=99)


@pytest.mark.django_db(transaction=True)
def test_failed_and_dead_deliveries_are_logged_with_exc_info_and_fields(failing, broker_setting, caplog):
    caplog.set_level(logging.WARNING, logger="txbroker.delivery")
    retried = send("log-retry", tag="other").msg_id  # only test_all_group
    delivery.deliver_due(budget_seconds=5)
    broker_setting("TXBROKER_MAX_RECONSUME_TIMES", "0")
    dead = send("log-dead", tag="other").msg_id
    delivery.deliver_due(budget_seconds=5)
    records = {r.msg_id: r for r in caplog.records if r.name == "txbroker.delivery"}
    for msg_id, level in ((retried, "WARNING"), (dead, "ERROR")):
        record = records[msg_id]
        assert record.levelname == level
        assert (record.topic, record.consumer_group, record.attempt) == ("test_topic", "test_all_group", 1)
        assert record.exc_info and record.exc_info[0] is RuntimeError
        assert "planned failure 1 of 99" in caplog.text

    # The same records as JSON: one object per line, the fields and the traceback in it.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter())
    for record in records.values():
        handler.handle(record)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {line["msg_id"] for line in lines} == {retried, dead}
    for line in lines:
        assert line["topic"] == "test_topic" and line["consumer_group"] == "test_all_group"
        assert line["attempt"] == 1 and line["levelname"] in {"WARNING", "ERROR"}
        assert "Traceback" in line["exc_info"] and "RuntimeError: planned failure" in line["exc_info"]


def run_django(code: str, *, unset: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=project_dir(),
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_django_log_format_json_writes_one_json_object_per_record():
    code = (
        "import logging; logging.getLogger('txbroker.delivery').warning("
        "'delivery failed', extra={'msg_id': 'm1', 'topic': 't', 'consumer_group': 'g', 'attempt': 2})"
    )
    done = run_django(code, DJANGO_LOG_FORMAT="json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (line,) = [x for x in lines if x.get("name") == "txbroker.delivery"]
    assert line["message"] == "delivery failed" and line["levelname"] == "WARNING"
    assert (line["msg_id"], line["topic"], line["consumer_group"], line["attempt"]) == ("m1", "t", "g", 2)
    assert "No hostname was supplied" not in done.stderr


def test_an_unknown_log_format_is_refused():
    done = run_django("pass", DJANGO_LOG_FORMAT="xml")
    assert done.returncode != 0 and 'DJANGO_LOG_FORMAT must be "plain" or "json"' in done.stderr


def test_no_hostname_warning_from_the_embedded_queue(tmp_path):
    """The embedded defaults (no DATABASE_URL, no CELERY_BROKER_URL): the filesystem queue."""
    code = "from txbroker import wakeup; wakeup.wake_deliveries(coalesce=False); print('woken')"
    done = run_django(
        code,
        unset=("DATABASE_URL", "CELERY_BROKER_URL", "TXBROKER_DATABASE_URL"),
        DJANGO_VAR_DIR=str(tmp_path),
    )
    assert "woken" in done.stdout, done.stderr
    assert "No hostname was supplied" not in done.stderr


def test_the_fault_warning_says_what_each_point_does(broker_setting, caplog):
    broker_setting("TXBROKER_FAULTS", "handler_first_attempt_error=0.5,after_half_stored=0.05")
    faults.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="txbroker.faults"):
            faults.active_faults()
    finally:
        broker_setting("TXBROKER_FAULTS", None)
        faults.reset()
    (text,) = [r.getMessage() for r in caplog.records if r.name == "txbroker.faults"]
    raising, killing = text.split("; ")
    assert "handler_first_attempt_error=0.5: a handler's first attempt raises InjectedFault" in raising
    assert "exit" not in raising and "kill" not in raising
    assert "after_half_stored=0.05: the process exits at once" in killing
