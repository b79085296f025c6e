"""Real processes for integration tests: Celery workers and beat against the test database
and Redis, plus polling helpers. Never a bare sleep: wait for a condition with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]

# Short intervals so that retries, checks and sweeps happen within a test's patience.
FAST_BROKER_ENV = {
    "TXBROKER_CHECK_INTERVAL": "1",
    "TXBROKER_TRANSACTION_TIMEOUT": "1",
    "TXBROKER_SWEEP_INTERVAL": "1",
    "TXBROKER_RETRY_DELAYS": "0.2s 0.4s 0.6s",
    "TXBROKER_CLAIM_TIMEOUT": "3",
}


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}")


def test_database_url() -> str:
    """The URL of the database the test runner created, for child processes."""
    params = connection.settings_dict
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    user = params.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{params['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FAST_BROKER_ENV)
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Proc:
    """A child process group with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        self._log.close()


def start_worker(
    log_dir: Path, name: str = "worker", concurrency: int = 2, pool: str = "prefork", **env: str
) -> Proc:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel=INFO",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "--without-mingle",
        "--without-gossip",
        f"--hostname={name}-{os.getpid()}@%h",
    ]
    proc = Proc(name, argv, child_env(**env), log_dir)
    wait_for(
        lambda: "ready." in proc.log() or proc.popen.poll() is not None, timeout=60, what=f"{name} ready"
    )
    assert proc.popen.poll() is None, f"{name} exited:\n{proc.log()[-3000:]}"
    return proc


def start_beat(log_dir: Path, **env: str) -> Proc:
    from txbroker.schedule import ensure_periodic_tasks

    ensure_periodic_tasks(sync=True)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "beat",
        "--loglevel=INFO",
        f"--schedule={log_dir / 'beat-schedule'}",
        "--max-interval=1",
    ]
    return Proc("beat", argv, child_env(**env), log_dir)


@pytest.fixture
def redis_client() -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


@pytest.fixture
def broker_env(monkeypatch) -> dict[str, str]:
    """The fast TXBROKER_* intervals in this process too."""
    for key, value in FAST_BROKER_ENV.items():
        monkeypatch.setenv(key, value)
    return FAST_BROKER_ENV


@pytest.fixture
def clean_queue(redis_client) -> None:
    redis_client.flushdb()


@pytest.fixture
def worker(transactional_db, broker_env, clean_queue, tmp_path) -> Iterator[Proc]:
    """A real Celery worker process (prefork, two children) on the test database."""
    proc = start_worker(tmp_path)
    yield proc
    proc.stop()


@pytest.fixture
def beat(transactional_db, broker_env, tmp_path) -> Iterator[Proc]:
    """A real Celery beat process running the check-back and sweep tasks every second."""
    proc = start_beat(tmp_path)
    yield proc
    proc.stop()


@pytest.fixture
def processes(tmp_path) -> Iterator[Callable[..., Proc]]:
    """Start extra processes by hand; all are stopped at the end of the test."""
    started: list[Proc] = []

    def start(name: str, argv: list[str], **env: str) -> Proc:
        proc = Proc(name, argv, child_env(**env), tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
