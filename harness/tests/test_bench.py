"""The bench in its smallest configuration: it must finish and consume every payment in
every design (no timing is asserted: CI machines vary)."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from harness.bench.report import best_peer, ratios
from harness.bench.runner import percentile
from txbroker.tests.processes import ROOT, child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.django_db(transaction=True)
def test_a_small_bench_runs_every_design_to_full_consumption(tmp_path, clean_queue):
    out = tmp_path / "bench.json"
    plot = tmp_path / "latency.png"
    # In its own process, on the test database: the bench points its process's Celery at a
    # private redis-server, which must not leak into the rest of the suite.
    argv = [sys.executable, "manage.py", "bench", "--payments=30", "--concurrency=2", "--workers=2"]
    argv += [f"--json={out}", f"--plot={plot}", f"--work-dir={tmp_path / 'work'}", "--timeout=120"]
    done = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stdout = io.StringIO(done.stdout)
    document = json.loads(out.read_text())
    assert set(document["ratios"]) == {"txbroker_vs_naive", "txbroker_vs_raw", "txbroker_vs_best_peer"}
    assert all(isinstance(v, float) and v > 0 for v in document["ratios"].values())
    assert set(document["designs"]) == {"raw", "naive", "txbroker", "txbroker_half"}
    for name, run in document["designs"].items():
        assert (run["payments"], run["failed"]) == (30, 0), (name, run["failures"])
        assert run["payments_per_s"] > 0
        assert set(run["latency_ms"]) == {"orders", "points", "notifications", "all"}
        assert run["latency_ms"]["all"]["p99"] is not None
        assert run["statements_per_payment"]["total"] > 0
        assert run["transactions_per_payment"]["total"] > 0
    # Only txbroker and naive use the worker pool; raw consumes in process.
    assert document["designs"]["raw"]["statements_per_payment"]["worker"] == 0
    assert document["designs"]["txbroker"]["statements_per_payment"]["worker"] > 0
    assert document["designs"]["txbroker_half"]["rate_limit"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "txbroker/naive" in stdout.getvalue()


@pytest.mark.parametrize("design", ["celery_outbox", "procrastinate"])
@pytest.mark.django_db(transaction=True)
def test_a_peer_runs_through_the_bench_to_full_consumption(design, tmp_path, clean_queue):
    from notifications.models import Notification
    from orders.models import Order
    from points.models import PointsRecord

    out = tmp_path / "bench.json"
    argv = [sys.executable, "manage.py", "bench", "--payments=24", "--concurrency=2", "--workers=2"]
    argv += [f"--designs={design}", "--no-half-rate", f"--json={out}", f"--work-dir={tmp_path / 'work'}"]
    argv += ["--timeout=60"]
    done = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())
    assert set(document["ratios"]) == {"txbroker_vs_naive", "txbroker_vs_raw", "txbroker_vs_best_peer"}
    run = document["designs"][design]
    assert (run["payments"], run["failed"]) == (24, 0), run["failures"]
    assert run["workers"] == 2 and run["statements_per_payment"]["worker"] > 0
    assert run["note"]  # what it does not do that txbroker does
    # Every payment consumed by each of the three groups, by the peer's own processes.
    assert Order.objects.filter(status=Order.Status.PAID).count() == 24
    assert PointsRecord.objects.count() == 24
    assert Notification.objects.count() == 24


def test_txbroker_is_compared_with_its_fastest_peer():
    runs = {
        "raw": {"payments_per_s": 400.0},
        "naive": {"payments_per_s": 100.0},
        "celery_outbox": {"payments_per_s": 160.0},
        "procrastinate": {"payments_per_s": None},
        "txbroker": {"payments_per_s": 80.0},
    }
    assert best_peer(runs) == "celery_outbox"
    assert ratios(runs) == {"txbroker_vs_naive": 0.8, "txbroker_vs_raw": 0.2, "txbroker_vs_best_peer": 0.5}
    assert ratios({"txbroker": {"payments_per_s": 80.0}})["txbroker_vs_best_peer"] is None


@pytest.mark.django_db
def test_the_bench_refuses_a_database_that_is_not_a_bench_one():
    from django.db import connection

    original = connection.settings_dict["NAME"]
    connection.settings_dict["NAME"] = "txbroker"
    try:
        with pytest.raises(CommandError, match="empties its tables"):
            call_command("bench", payments=1, stdout=io.StringIO())
    finally:
        connection.settings_dict["NAME"] = original


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert percentile([], 50) is None


@pytest.mark.django_db(transaction=True)
def test_the_ordered_design_consumes_each_message_group_in_commit_order(tmp_path, clean_queue):
    from harness.bench.designs import ORDERED_GROUPS
    from txbroker.models import Delivery

    out = tmp_path / "bench.json"
    argv = [sys.executable, "manage.py", "bench", "--payments=300", "--concurrency=2", "--workers=2"]
    argv += ["--designs=txbroker,txbroker_ordered", "--no-half-rate", f"--json={out}"]
    argv += [f"--work-dir={tmp_path / 'work'}", "--timeout=240"]
    done = subprocess.run(argv, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["designs"]["txbroker_ordered"]["payments"] == 300
    assert document["designs"]["txbroker_ordered"]["failed"] == 0
    assert document["ratios"]["ordered_vs_unordered"] > 0

    # The last design's rows are still there: per consumer group and message group, the
    # deliveries succeeded one after another in their sequence (commit) order.
    rows = Delivery.objects.exclude(message_group="").values_list(
        "consumer_group", "message_group", "sequence", "started_at", "succeeded_at", "status"
    )
    by_group: dict = {}
    for group, message_group, sequence, started, succeeded, status in rows:
        assert status == Delivery.Status.SUCCEEDED
        by_group.setdefault((group, message_group), []).append((sequence, started, succeeded))
    assert len({mg for _, mg in by_group}) == ORDERED_GROUPS
    assert len(by_group) == 3 * ORDERED_GROUPS
    for key, deliveries in by_group.items():
        deliveries.sort()
        assert [s for s, _, _ in deliveries] == list(range(1, len(deliveries) + 1)), key
        for (_, _, before_done), (_, after_started, _) in itertools.pairwise(deliveries):
            assert before_done <= after_started, key
