"""/metrics (Prometheus text) and /healthz.

Gauges come from the database, read at most once per TXBROKER_METRICS_CACHE_SECONDS per
process; counters and histograms recorded in Celery worker processes reach the web process's
/metrics through prometheus-client's multiprocess directory, which a test here proves with a
real worker. /metrics answers local clients, or the bearer of METRICS_BEARER_TOKEN; /healthz
tells the public its status only, staff which check failed, nobody a host or a URL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from txbroker import LocalTransactionState, metrics, views
from txbroker.db import broker_db
from txbroker.tests import operator_data
from txbroker.tests.helpers import deliveries, send
from txbroker.tests.processes import child_env, manage_argv, project_dir, start_worker, wait_for
from txbroker.tests.support.models import Plan

plain_http = operator_data.plain_http
world = operator_data.world


@pytest.fixture(autouse=True)
def fresh_gauges(monkeypatch, broker_setting):
    """Gauges read at every scrape here (a test of the cache sets its own period), and no
    reading left over from another test."""
    broker_setting("TXBROKER_METRICS_CACHE_SECONDS", "0")
    monkeypatch.setattr(metrics, "_gauges", None)


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


def test_in_process_counters_and_histograms(client, transactional_db, broker_env, broker_setting):
    before = scrape(client)
    operator_data.make_committed("m-ok")
    operator_data.make_dead("m-dead", broker_setting, tag="other")  # test_all_group only, no retry
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


# --- who may scrape --------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_local_clients_may_scrape(client, db, address):
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200


@pytest.mark.parametrize(
    ("address", "headers"),
    [
        ("10.0.0.7", {}),
        ("203.0.113.9", {}),
        ("::2", {}),
        # A reverse proxy on this host relays the public from loopback: not a local client.
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}),
        ("127.0.0.1", {"HTTP_X_REAL_IP": "203.0.113.9"}),
        ("127.0.0.1", {"HTTP_FORWARDED": "for=203.0.113.9"}),
    ],
)
def test_other_clients_get_403_and_no_metrics(client, db, address, headers):
    response = client.get("/metrics", REMOTE_ADDR=address, **headers)
    assert response.status_code == 403
    assert response.json() == {"detail": views.METRICS_FORBIDDEN}
    assert b"txbroker_" not in response.content


def test_with_a_bearer_token_only_its_bearer_may_scrape_from_anywhere(client, db, settings):
    settings.METRICS_BEARER_TOKEN = "s3cret-scrape-token"

    bearer = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token"
    )
    refused = [
        client.get("/metrics", REMOTE_ADDR="127.0.0.1"),  # local, but the token is required now
        client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer wrong"),
        client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Token s3cret-scrape-token"),
        client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-scrape-tokenX"),
    ]

    assert bearer.status_code == 200
    assert b"txbroker_messages" in bearer.content
    for response in refused:
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert response.json() == {"detail": views.METRICS_UNAUTHORIZED}


def test_the_token_is_compared_in_constant_time(client, db, settings, monkeypatch):
    settings.METRICS_BEARER_TOKEN = "s3cret-scrape-token"
    compared = []
    monkeypatch.setattr(views, "constant_time_compare", lambda a, b: compared.append((a, b)) or a == b)

    client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess")

    assert compared == [("guess", "s3cret-scrape-token")]


# --- what a scrape costs ------------------------------------------------------------------------
def broker_queries() -> CaptureQueriesContext:
    return CaptureQueriesContext(connections[broker_db()])


def test_many_scrapes_read_the_database_gauges_once_per_period(client, world, monkeypatch, broker_setting):
    broker_setting("TXBROKER_METRICS_CACHE_SECONDS", "30")
    clock = [1000.0]
    monkeypatch.setattr(metrics, "_clock", lambda: clock[0])

    with broker_queries() as first:
        scrape(client)
    with broker_queries() as following:
        for _ in range(50):
            samples = scrape(client)
            clock[0] += 0.5  # 25 s of scrapes, every half second
    clock[0] += 5  # past the period
    with broker_queries() as next_period:
        scrape(client)
        scrape(client)

    # The database's clock, three grouped counts and the gRPC clients' count, once.
    assert 1 <= len(first) <= 5
    assert len(following) == 0
    assert len(next_period) == len(first)
    assert value(samples, "txbroker_messages", state="COMMITTED") == 2


def test_cached_gauges_are_served_whatever_the_table_size(client, world, broker_setting):
    """A timing-free bound: within the period a scrape costs no query, so it does not grow
    with the tables; the gauges it serves were read at the period's start."""
    broker_setting("TXBROKER_METRICS_CACHE_SECONDS", "3600")
    before = scrape(client)
    operator_data.bulk_insert_messages(2000)

    with broker_queries() as queries:
        after = scrape(client)

    assert len(queries) == 0
    assert value(after, "txbroker_messages", state="COMMITTED") == value(
        before, "txbroker_messages", state="COMMITTED"
    )
    metrics._gauges = None  # a new period: the new rows are counted
    assert (
        value(scrape(client), "txbroker_messages", state="COMMITTED")
        == value(before, "txbroker_messages", state="COMMITTED") + 2000
    )


# --- health ----------------------------------------------------------------------------------
# txbroker's own /healthz (txbroker.views.healthz_view), as a project without
# django-health-check serves it; this project's (config.health) is tested in config/tests.
TXBROKER_URLS = "txbroker.tests.project.urls"


@pytest.mark.urls(TXBROKER_URLS)
def test_healthz_is_200_with_the_status_only_for_the_public(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.urls(TXBROKER_URLS)
def test_healthz_shows_each_check_to_staff_by_session_or_token(client, db):
    staff = operator_data.make_user("health-staff", staff=True)
    customer = operator_data.make_user("health-customer", staff=False)

    client.force_login(customer)
    assert client.get("/healthz").json() == {"status": "ok"}
    client.force_login(staff)
    assert client.get("/healthz").json() == {
        "status": "ok",
        "checks": {"database": "ok", "celery_broker": "ok"},
    }
    client.logout()
    token = Token.objects.create(user=staff).key
    by_token = client.get("/healthz", HTTP_AUTHORIZATION=f"Token {token}")
    assert by_token.json()["checks"] == {"database": "ok", "celery_broker": "ok"}
    assert client.get("/healthz", HTTP_AUTHORIZATION="Token not-a-token").json() == {"status": "ok"}


HEALTHZ_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

@override_settings(ROOT_URLCONF=URLS)
def get(client):
    r = client.get('/healthz', secure=True)
    return {'status': r.status_code, 'body': r.json(), 'text': r.content.decode()}

answers = {'public': get(Client())}
staff = get_user_model().objects.filter(username='health-staff').first() if STAFF else None
if staff is not None:
    client = Client()
    client.force_login(staff)
    answers['staff'] = get(client)
print(json.dumps(answers))
"""


def healthz_in_a_process(*, staff: bool, urls: str = TXBROKER_URLS, **env: str) -> dict[str, dict]:
    """GET /healthz (of the URLconf ``urls``) in a fresh process whose settings point at
    ``env``: as the public, and (``staff``) as the staff user the test made."""
    code = HEALTHZ_SCRIPT.replace("STAFF", str(staff)).replace("URLS", repr(urls))
    result = subprocess.run(
        manage_argv("shell", "--no-imports", "-c", code),
        cwd=project_dir(),
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# Nothing that locates a server: the closed ports below, their hosts, the URLs, names, roles.
REVEALING = ("127.0.0.1", "localhost", ":1", "redis://", "postgres", "nowhere", "5432", "6379")


def test_a_failing_check_is_503_with_the_status_only_for_the_public_and_named_for_staff(transactional_db):
    operator_data.make_user("health-staff", staff=True)

    answers = healthz_in_a_process(staff=True, CELERY_BROKER_URL="redis://127.0.0.1:1/0")

    public, staff = answers["public"], answers["staff"]
    assert (public["status"], public["body"]) == (503, {"status": "unavailable"})
    assert staff["status"] == 503
    assert staff["body"]["failing"] == ["celery_broker"]
    assert staff["body"]["checks"]["database"] == "ok"
    assert staff["body"]["checks"]["celery_broker"].startswith("error: ")
    for answer in (public, staff):
        assert not any(word in answer["text"] for word in REVEALING), answer["text"]


def test_a_database_outage_is_503_with_the_status_only(transactional_db):
    answers = healthz_in_a_process(staff=False, DATABASE_URL="postgres://postgres@127.0.0.1:1/nowhere")

    public = answers["public"]
    assert (public["status"], public["body"]) == (503, {"status": "unavailable"})
    assert not any(word in public["text"] for word in REVEALING), public["text"]


WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # not installed: importing it raises ImportError
import django
django.setup()
from txbroker import checkback, delivery, metrics
metrics.observe_delivery("g", "SUCCEEDED", 1.0)
metrics.observe_check_pass({"COMMITTED": 1})
print("ENABLED", metrics.ENABLED)
"""


def test_the_broker_runs_without_prometheus_client_and_records_nothing(db):
    """prometheus-client is the `metrics` extra: the core imports and records without it."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PROMETHEUS],
        cwd=project_dir(),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ENABLED False"
