"""The embedded defaults: with no DATABASE_URL and no CELERY_BROKER_URL, web + worker +
beat started from the Procfile (SQLite, Celery's filesystem transport) carry a message from
a producer to its consumers. No PostgreSQL, no Redis."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from txbroker.testing import free_port
from txbroker.tests.processes import ROOT, TEST_BROKER_ENV, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def embedded_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(TEST_BROKER_ENV)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        DJANGO_VAR_DIR=str(var_dir),
        DJANGO_DEBUG="1",
        DJANGO_EXTRA_APPS="txbroker.tests.support",
        WEB_PORT=str(port),
        WEB_WORKERS="1",
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.pop("DJANGO_SECRET_KEY", None)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_procfile_carries_a_message_with_no_server(tmp_path):
    var_dir = tmp_path / "var"
    port = free_port()
    env = embedded_env(var_dir, port)
    manage(env, "migrate", "--no-input")
    manage(env, "txbroker_schedule", "--sync")
    log = open(tmp_path / "honcho.log", "wb")  # noqa: SIM115
    honcho = subprocess.Popen(
        [str(Path(sys.executable).parent / "honcho"), "start", "-f", "Procfile"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    db = var_dir / "db.sqlite3"

    def statuses() -> list[str]:
        with sqlite3.connect(db, timeout=30) as conn:
            return [r[0] for r in conn.execute("SELECT status FROM txbroker_delivery")]

    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/admin/login/"), timeout=90, what="web to answer")
        manage(
            env, "shell", "-c", "from txbroker.tests.support.hang import send_plain; send_plain('embedded')"
        )
        wait_for(lambda: statuses() == ["SUCCEEDED"] * 3, timeout=90, what="three deliveries SUCCEEDED")
        with sqlite3.connect(db) as conn:
            effects = conn.execute("SELECT consumer_group, count FROM txbroker_support_effect").fetchall()
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert sorted(effects) == [("test_all_group", 1), ("test_pay_group", 1), ("test_refund_group", 1)]
        assert journal == "wal"
        assert any((var_dir / "celery" / "queue").parent.iterdir())  # the filesystem transport's folder
    finally:
        os.killpg(honcho.pid, 15)
        honcho.wait(30)
        log.close()
    output = (tmp_path / "honcho.log").read_text(errors="replace")
    assert "transport:   filesystem://" in output  # the worker's banner
    assert "redis://" not in output and "postgres" not in output.lower()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own http URL
            return response.status == 200
    except OSError:  # not listening yet, or busy starting
        return False
