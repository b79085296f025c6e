"""Real processes for integration tests: Celery workers and beat against the test database
and Redis, plus polling helpers. Never a bare sleep: wait for a condition with a deadline.

The processes run the settings module this test session runs (``DJANGO_SETTINGS_MODULE``:
txbroker's own test project, or the project's test settings when the whole suite runs) and
that settings' Celery app (``TXBROKER_TESTS_CELERY_APP``, the module ``celery -A`` loads)."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import redis as redis_lib
from django.conf import settings
from django.db import connection

from txbroker.testing import Proc, free_port, wait_until, worker_argv

# The folder that holds the txbroker package (the repository's root in a checkout).
ROOT = Path(__file__).resolve().parents[2]

# Short intervals so that retries, checks and sweeps happen within a test's patience.
TEST_BROKER_ENV = {
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
    try:
        return wait_until(predicate, timeout=timeout, interval=interval, what=what)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def test_database_url() -> str:
    """The URL of the database the test runner created, for child processes."""
    params = connection.settings_dict
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    user = params.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{params['NAME']}"


def celery_app() -> str:
    """The module ``celery -A`` loads for the settings under test."""
    return settings.TXBROKER_TESTS_CELERY_APP


def settings_module() -> str:
    """The settings module of this test session (pytest-django puts ``--ds`` there;
    ``settings.SETTINGS_MODULE`` is None while a test overrides settings)."""
    return os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE


def project_dir() -> Path:
    """Where child processes start: the folder holding the settings module's top package,
    so that ``celery -A`` and ``python -m django`` import it."""
    top = importlib.import_module(settings_module().partition(".")[0])
    return Path(top.__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TEST_BROKER_ENV)
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "DJANGO_SETTINGS_MODULE": settings_module(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def manage_argv(*args: str) -> list[str]:
    """A management command in a child process (``python -m django``: the settings module
    comes from :func:`child_env`)."""
    return [sys.executable, "-m", "django", *args]


def skewed(argv: list[str], offset_seconds: float) -> list[str]:
    """``argv`` run under Debian's faketime with its clock ``offset_seconds`` off; pass
    ``FAKETIME_ENV`` in its environment."""
    if shutil.which("faketime") is None:
        pytest.fail("faketime is not installed (apt-get install faketime; .ci/run installs it)")
    return ["faketime", "-f", f"{offset_seconds:+g}s", *argv]


# The monotonic clock is shifted too: with FAKETIME_DONT_FAKE_MONOTONIC=1, Debian 12's
# libfaketime 0.9.10 makes Python's time.sleep() fail with EINVAL (clock_nanosleep on the
# monotonic clock), which kills Celery's timer threads. A shifted monotonic clock changes
# nothing here: it is only ever compared within one process.
FAKETIME_ENV: dict[str, str] = {}


def start_worker(
    log_dir: Path,
    name: str = "worker",
    concurrency: int = 2,
    *,
    clock_offset: float = 0,
    wrap: Optional[Callable[[list[str]], list[str]]] = None,
    **env: str,
) -> Proc:
    """A Celery worker on the test database (``wrap``: its command line run under another,
    as txbroker.tests.spans.traced does)."""
    # INFO: the test waits for Celery's "ready." line.
    argv = worker_argv(app=celery_app(), name=name, concurrency=concurrency, loglevel="INFO")
    if wrap is not None:
        argv = wrap(argv)
    if clock_offset:
        argv, env = skewed(argv, clock_offset), {**FAKETIME_ENV, **env}
    proc = Proc(name, argv, child_env(**env), log_dir, cwd=project_dir())
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
        celery_app(),
        "beat",
        "--loglevel=INFO",
        f"--schedule={log_dir / 'beat-schedule'}",
        "--max-interval=1",
    ]
    return Proc("beat", argv, child_env(**env), log_dir, cwd=project_dir())


def broker_is_redis() -> bool:
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))


def queue_name() -> str:
    """The Celery queue tasks go to (``CELERY_QUEUE``; a test run's own on RabbitMQ)."""
    return getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")


def _on_queue(action: Callable[[Any, str], int]) -> int:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=5) as conn:
        try:
            return action(conn.default_channel, queue_name())
        except conn.channel_errors:  # no such queue: nothing was ever published to it
            return 0


def queued_tasks() -> int:
    """Tasks waiting in the Celery queue (not those a worker holds), on any broker: a
    passive declare answers the queue's ready message count."""
    return _on_queue(lambda channel, name: channel.queue_declare(queue=name, passive=True).message_count)


def purge_queue() -> int:
    """Drop every task waiting in the Celery queue; the number dropped."""
    return _on_queue(lambda channel, name: channel.queue_purge(name) or 0)


def lose_queued_tasks() -> None:
    """Every queued task gone, as after a broker restart that kept nothing: the Redis
    database emptied (the wake-up mark with it), or the RabbitMQ queue purged."""
    if broker_is_redis():
        client = redis_lib.Redis.from_url(settings.CELERY_BROKER_URL)
        client.flushdb()
        client.close()
    else:
        purge_queue()


@pytest.fixture
def redis_client() -> Iterator[redis_lib.Redis]:
    """A client of the Redis broker; tests that need one (they wipe Redis, read its keys)
    are skipped on any other broker."""
    if not broker_is_redis():
        pytest.skip("needs a Redis broker (CELERY_BROKER_URL=redis://...)")
    client = redis_lib.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


@pytest.fixture
def broker_setting(monkeypatch, settings) -> Callable[[str, Optional[str]], None]:
    """``broker_setting(name, value)`` for this test: a ``TXBROKER_*`` Django setting in this
    process (txbroker reads settings only) and the environment variable of the same name for
    the processes the test starts (their settings map it onto theirs); ``None`` goes
    back to the default. Both are restored after the test."""

    def put(name: str, value: Optional[str]) -> None:
        if value is None:
            monkeypatch.delenv(name, raising=False)
            if name.startswith("TXBROKER_") and hasattr(settings, name):
                delattr(settings, name)
            return
        monkeypatch.setenv(name, value)
        if name.startswith("TXBROKER_"):
            setattr(settings, name, value)

    return put


@pytest.fixture
def broker_env(broker_setting) -> dict[str, str]:
    """The fast TXBROKER_* intervals in this process too."""
    for key, value in TEST_BROKER_ENV.items():
        broker_setting(key, value)
    return TEST_BROKER_ENV


@pytest.fixture
def clean_queue() -> None:
    """No task left over from an earlier test: the Redis database emptied (the wake-up
    mark with it), or the RabbitMQ queue purged."""
    lose_queued_tasks()


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
        proc = Proc(name, argv, child_env(**env), tmp_path, cwd=project_dir())
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


# --- the gRPC endpoint (manage.py txbroker_grpc) -------------------------------------------
GRPC_ACCESS_KEY = "txbroker-tests"
GRPC_SECRET = "txbroker-tests-secret"


@dataclass
class GrpcServer:
    """A running ``manage.py txbroker_grpc``: where official clients reach it, and the
    credentials it accepts."""

    endpoint: str
    access_key: str
    secret: str
    proc: Proc


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_grpc(
    log_dir: Path,
    name: str = "grpc",
    *,
    port: Optional[int] = None,
    extra_args: tuple[str, ...] = (),
    **env: str,
) -> GrpcServer:
    """``manage.py txbroker_grpc`` on 127.0.0.1 (a free port unless given) against the test
    database, with the test credentials (unless TXBROKER_GRPC_CREDENTIALS is given), once
    it accepts connections."""
    port = port or free_port()
    env = {"TXBROKER_GRPC_CREDENTIALS": f"{GRPC_ACCESS_KEY}:{GRPC_SECRET}", **env}
    argv = manage_argv("txbroker_grpc", "--bind", f"127.0.0.1:{port}", *extra_args)
    proc = Proc(name, argv, child_env(**env), log_dir, cwd=project_dir())
    wait_for(
        lambda: not proc.alive() or ("serving on" in proc.log() and _accepts(port)),
        timeout=30,
        what=f"{name} accepting on port {port}",
    )
    assert proc.alive(), f"{name} exited:\n{proc.log()[-3000:]}"
    return GrpcServer(endpoint=f"127.0.0.1:{port}", access_key=GRPC_ACCESS_KEY, secret=GRPC_SECRET, proc=proc)


@pytest.fixture
def grpc_server(transactional_db, broker_env, tmp_path) -> Iterator[GrpcServer]:
    """A real ``manage.py txbroker_grpc`` process on the test database (credentials
    ``.access_key``/``.secret``), stopped after the test."""
    server = start_grpc(tmp_path)
    yield server
    server.proc.stop()
