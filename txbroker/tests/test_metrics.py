"""/metrics (Prometheus text) and /healthz.

Gauges come from the database; counters and histograms recorded in Celery worker processes
reach the web process's /metrics through prometheus-client's multiprocess directory, which
a test here proves with a real worker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from txbroker import LocalTransactionState
from txbroker.tests import operator_data
from txbroker.tests.helpers import deliveries, send
from txbroker.tests.processes import ROOT, child_env, start_worker, wait_for
from txbroker.tests.support.models import Plan

plain_http = operator_data.plain_http
world = operator_data.world


def scrape(client) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_gauges_are_read_from_the_database(client, world):
    samples = scrape(client)  # anonymous, as Prometheus scrapes
    assert value(samples, "txbroker_messages", state="COMMITTED") == 2
    assert value(samples, "txbroker_messages", state="HALF") == 1
    assert value(samples, "txbroker_messages", state="ROLLED_BACK") == 1
    assert value(samples, "txbroker_messages", state="DISCARDED") == 1
    assert value(samples, "txbroker_deliveries", consumer_group="test_pay_group", status="SUCCEEDED") == 1
    assert value(samples, "txbroker_deliveries", consumer_group="test_pay_group", status="DEAD") == 1
    assert value(samples, "txbroker_backlog", consumer_group="test_pay_group") == 0
    assert ("txbroker_oldest_pending_age_seconds", (("consumer_group", "test_pay_group"),)) in samples

    from txbroker import operations

    operations.replay(world.dead, group="test_pay_group")
    samples = scrape(client)
    assert value(samples, "txbroker_backlog", consumer_group="test_pay_group") == 1
    assert value(samples, "txbroker_deliveries", consumer_group="test_pay_group", status="PENDING") == 1


def test_in_process_counters_and_histograms(client, transactional_db, broker_env, monkeypatch):
    before = scrape(client)
    operator_data.make_committed("m-ok")
    operator_data.make_dead("m-dead", monkeypatch, tag="other")  # test_all_group only, no retry
    send("m-half", answer=LocalTransactionState.UNKNOWN, check_immunity_seconds=0)
    from txbroker import checkback

    checkback.check_pass()
    after = scrape(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        delta("txbroker_delivery_attempts_total", consumer_group="test_pay_group", outcome="SUCCEEDED") == 1
    )
    assert delta("txbroker_delivery_attempts_total", consumer_group="test_all_group", outcome="DEAD") == 1
    assert delta("txbroker_checks_total", answer="COMMIT") == 1
    assert delta("txbroker_handler_duration_seconds_count", consumer_group="test_all_group") == 2
    assert delta("txbroker_commit_to_consumed_seconds_count", consumer_group="test_all_group") == 1
    assert (
        delta("txbroker_commit_to_consumed_seconds_bucket", consumer_group="test_all_group", le="+Inf") == 1
    )


@pytest.mark.integration
def test_counters_recorded_in_worker_processes_reach_metrics(
    client, transactional_db, broker_env, redis_client, beat, tmp_path, monkeypatch
):
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(prom_dir))
    redis_client.flushdb()
    # Beat's sweep re-enqueues the retry; this worker records into the shared directory.
    worker = start_worker(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(prom_dir))
    try:
        Plan.objects.create(key="mp-flaky", fail_times=1)
        ok = send("mp-ok").msg_id
        flaky = send("mp-flaky", tag="other").msg_id  # test_all_group: fails once, then succeeds
        wait_for(
            lambda: (
                set(deliveries(ok).values()) == {"SUCCEEDED"}
                and set(deliveries(flaky).values()) == {"SUCCEEDED"}
            ),
            timeout=60,
            what="deliveries done by the worker",
        )
        checked = send("mp-check", answer=LocalTransactionState.UNKNOWN, check_immunity_seconds=0).msg_id
        from txbroker.tasks import check_pass

        check_pass.delay()  # the worker asks the checker: COMMIT, then delivers it
        wait_for(
            lambda: value(scrape(client), "txbroker_checks_total", answer="COMMIT") >= 1,
            timeout=60,
            what="the worker's check pass counted",
        )
        wait_for(
            lambda: set(deliveries(checked).values()) == {"SUCCEEDED"},
            timeout=60,
            what="the checked message delivered",
        )
    finally:
        worker.stop()

    samples = scrape(client)
    assert (
        value(
            samples, "txbroker_delivery_attempts_total", consumer_group="test_all_group", outcome="SUCCEEDED"
        )
        == 3
    )
    assert (
        value(samples, "txbroker_delivery_attempts_total", consumer_group="test_all_group", outcome="RETRY")
        == 1
    )
    assert value(samples, "txbroker_handler_duration_seconds_count", consumer_group="test_all_group") == 4
    assert value(samples, "txbroker_commit_to_consumed_seconds_count", consumer_group="test_pay_group") == 2
    assert value(samples, "txbroker_messages", state="COMMITTED") == 3  # the gauges still come from the DB
    assert list(prom_dir.glob("*.db")), "the worker wrote its values to the shared directory"


# --- health ----------------------------------------------------------------------------------
def test_healthz_is_200_when_the_database_and_the_broker_answer(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "celery_broker": "ok"}}


def healthz_in_a_process(**env: str) -> tuple[int, dict]:
    """GET /healthz in a fresh process whose settings point at ``env``."""
    code = (
        "from django.test import Client; import json; r = Client().get('/healthz', secure=True); "
        "print(json.dumps({'status': r.status_code, 'body': r.json()}))"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=ROOT,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return answer["status"], answer["body"]


@pytest.mark.parametrize(
    ("env", "failing"),
    [
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}, "celery_broker"),
        ({"DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere"}, "database"),
    ],
)
def test_healthz_is_503_naming_what_failed(transactional_db, env, failing):
    status, body = healthz_in_a_process(**env)
    assert status == 503
    assert body["failing"] == [failing]
    assert body["checks"][failing].startswith("error: ")
    other = ({"database", "celery_broker"} - {failing}).pop()
    assert body["checks"][other] == "ok"
