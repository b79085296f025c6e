"""The chaos command on RabbitMQ, small: a RabbitMQ node of the run's own (never the
machine's) as the broker of gunicorn, Celery workers and beat, restarted while payments go
on, with SIGKILLs and the protocol's fault points. Nothing lost, doubled or stuck."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.procs import ROOT
from harness.services import RabbitServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_small_chaos_run_with_rabbitmq_restarts_loses_doubles_and_strands_nothing(tmp_path):
    if not RabbitServer.SCRIPT.exists() and shutil.which("rabbitmq-server") is None:
        pytest.fail("rabbitmq-server is not installed (apt-get install rabbitmq-server; .ci/run installs it)")
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TXBROKER_", "CELERY_"))}
    env.update({"DJANGO_DEBUG": "1", "DJANGO_EXTRA_APPS": "harness"})
    argv = [
        sys.executable,
        "manage.py",
        "chaos",
        "--broker=amqp",
        "--payments=40",
        "--concurrency=6",
        "--faults=kill,rabbitmq-restart",
        "--kill-every=3",
        "--rabbitmq-every=6",
        "--refund-share=0.2",
        "--seed=3",
        f"--json={report_path}",
        f"--run-dir={tmp_path}",
        "--database-url=postgres://postgres@127.0.0.1:5432/txbroker_chaos_amqp_test",
    ]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout[-6000:] + result.stderr[-4000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    assert result.returncode == 0, output
    assert (report["lost"], report["doubled"], report["stuck"], report["false_rollbacks"]) == (0, 0, 0, 0)
    run = report["designs"]["txbroker"]
    assert run["rabbitmq_restart"]["count"] >= 1, run["fault_timeline"]
    assert run["faults_injected"]["rabbitmq_restart"] == run["rabbitmq_restart"]["count"]
    # The node is gone with the run (the machine's RabbitMQ, if any, was never touched).
    assert not RabbitServer.attach(tmp_path / "rabbitmq").running()
