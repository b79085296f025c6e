"""The chaos command, small: 100 payments through real gunicorn, Celery workers and beat
while processes are SIGKILLed, Redis is wiped and PostgreSQL connections are cut. txbroker
loses, doubles and leaves stuck nothing; the naive design, under the same faults, loses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.procs import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_small_chaos_run_loses_nothing_doubles_nothing_leaves_nothing_stuck(tmp_path):
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TXBROKER_"))}
    env.update({"DJANGO_DEBUG": "1", "DJANGO_EXTRA_APPS": "harness"})
    argv = [
        sys.executable,
        "manage.py",
        "chaos",
        "--payments=100",
        "--concurrency=8",
        "--baseline",
        "--kill-every=2",
        "--redis-every=6",
        "--pg-every=5",
        "--seed=5",
        f"--json={report_path}",
        f"--run-dir={tmp_path}",
        # Not the developer's chaos database: a run of `make chaos` may be going on.
        "--database-url=postgres://postgres@127.0.0.1:5432/txbroker_chaos_test",
    ]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    report = json.loads(report_path.read_text())
    assert (report["lost"], report["doubled"], report["stuck"]) == (0, 0, 0)
    assert all(isinstance(report[k], int) for k in ("lost", "doubled", "stuck"))
    txbroker, naive = report["designs"]["txbroker"], report["designs"]["naive"]
    assert txbroker["payments"]["attempted"] == 100
    assert txbroker["payments"]["succeeded"] > 50
    assert txbroker["payments"]["declined"] > 0
    assert txbroker["settle"]["settled"]
    faults = txbroker["faults_injected"]
    for kind in (
        "sigkill_gunicorn_worker",
        "redis_flushall",
        "pg_terminate_backend",
        "handler_first_attempt_error",
        "handler_before_commit",
    ):
        assert faults.get(kind, 0) > 0, f"no {kind} in {faults}"
    assert faults.get("sigkill_celery_pool_process", 0) + faults.get("sigkill_celery_worker_main", 0) > 0
    # The contrast: the same faults lose effects of the naive design.
    assert naive["lost"] > 0
    assert "txbroker: 0 lost, 0 doubled, 0 stuck" in result.stdout
