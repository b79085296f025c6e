"""The chaos command on RabbitMQ, small: a RabbitMQ node of the run's own (never the
machine's) as the broker of gunicorn, Celery workers and beat, restarted while payments go
on, with SIGKILLs and the protocol's fault points. Nothing lost, doubled or stuck."""

from __future__ import annotations

import shutil

import pytest

from harness.services import RabbitServer
from harness.tests.chaos_run import run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_small_chaos_run_with_rabbitmq_restarts_loses_doubles_and_strands_nothing(tmp_path):
    if not RabbitServer.SCRIPT.exists() and shutil.which("rabbitmq-server") is None:
        pytest.fail("rabbitmq-server is not installed (apt-get install rabbitmq-server; .ci/run installs it)")
    options = [
        "--broker=amqp",
        "--payments=60",
        "--concurrency=6",
        "--faults=kill,rabbitmq-restart",
        "--kill-every=3",
        "--rabbitmq-every=2",  # the first restart 1-3 s in: before the payments are done
        "--refund-share=0.2",
        "--seed=3",
    ]
    chaos = run_chaos(
        tmp_path, "txbroker_chaos_amqp_test", options, drop_env=("DJANGO_", "TXBROKER_", "CELERY_")
    )
    report = chaos.report
    assert chaos.returncode == 0, chaos.output
    assert (report["lost"], report["doubled"], report["stuck"], report["false_rollbacks"]) == (0, 0, 0, 0)
    run = report["designs"]["txbroker"]
    assert run["rabbitmq_restart"]["count"] >= 1, run["fault_timeline"]
    assert run["faults_injected"]["rabbitmq_restart"] == run["rabbitmq_restart"]["count"]
    # The node is gone with the run (the machine's RabbitMQ, if any, was never touched).
    assert not RabbitServer.attach(tmp_path / "rabbitmq").running()
