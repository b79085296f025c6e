"""The real processes of a chaos or bench run, and the services they use.

Shared by ``chaos`` and ``bench``: a child process with its log file (:class:`Proc`), the
environment every child gets (:func:`service_env`), starters for gunicorn, Celery workers
and beat; the private Redis server and throwaway PostgreSQL database they use are in
``harness.services``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from txbroker import testing
from txbroker.testing import free_port, wait_until

__all__ = ["CHAOS_BROKER_ENV", "ROOT", "Proc", "free_port", "wait_until", "worker_argv"]

ROOT = Path(__file__).resolve().parent.parent

# The chaos and bench processes' broker intervals: a crash is settled within seconds, not
# RocketMQ's minutes (txbroker's own tests use shorter ones, txbroker.tests.processes).
CHAOS_BROKER_ENV = {
    "TXBROKER_CHECK_INTERVAL": "1",
    "TXBROKER_TRANSACTION_TIMEOUT": "2",
    "TXBROKER_SWEEP_INTERVAL": "1",
    "TXBROKER_RETRY_DELAYS": "0.5s 1s 2s 3s 5s",
    "TXBROKER_CLAIM_TIMEOUT": "5",
    "TXBROKER_TASK_BUDGET": "5",
}


class Proc(testing.Proc):
    """txbroker's test process (:class:`txbroker.testing.Proc`), started in the repository's
    root, that can also list every live process of its group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        super().__init__(name, argv, env, log_dir, cwd=ROOT)

    def group_pids(self) -> list[int]:
        """Every live process of this group (children whose parent died included)."""
        import psutil

        pids = []
        for process in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(process.info["pid"]) == self.pid:
                    pids.append(process.info["pid"])
            except (ProcessLookupError, PermissionError):
                continue
        return pids


# Python 3.11's time.sleep() is clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which
# libfaketime 0.9.10 breaks when monotonic time is left alone (FAKETIME_DONT_FAKE_MONOTONIC):
# every sleep raises OSError EINVAL (wolfcw/libfaketime#426). The processes run under
# faketime import this folder's sitecustomize, which falls back to a relative wait.
FAKETIME_SHIM_DIR = ROOT / "harness" / "faketime"


def faketime_argv(
    argv: list[str], env: dict[str, str], offset_seconds: float
) -> tuple[list[str], dict[str, str]]:
    """``argv`` and ``env`` to run it under Debian's faketime with its clock
    ``offset_seconds`` off, monotonic time untouched (as NTP leaves it)."""
    if shutil.which("faketime") is None:
        raise RuntimeError("faketime is not installed (apt-get install faketime)")
    python_path = os.pathsep.join(p for p in (str(FAKETIME_SHIM_DIR), env.get("PYTHONPATH", "")) if p)
    env = {**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": python_path}
    return ["faketime", "-f", f"{offset_seconds:+g}s", *argv], env


def service_env(
    *,
    database_url: str,
    broker_url: str,
    run_dir: Path,
    faults: str = "",
    extra: Optional[dict[str, str]] = None,
) -> dict[str, str]:
    """The environment of every child: production-like settings (DEBUG off) on the run's
    own database and Redis, the harness app installed, fast broker intervals."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TXBROKER_", "DJANGO_", "PAYMENTS_", "NOTIFICATIONS_"))
    }
    env.update(CHAOS_BROKER_ENV)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker_url,
            "DJANGO_EXTRA_APPS": "harness",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "harness-run-only-not-a-secret-" + "x" * 40,
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_VAR_DIR": str(run_dir / "var"),
            "DJANGO_LOG_LEVEL": "WARNING",
            # The load is the point: no throttling in the way.
            "DJANGO_THROTTLE_AUTH_TOKEN_RATE": "100000/second",
            "DJANGO_THROTTLE_ORDERS_RATE": "100000/second",
            "DJANGO_THROTTLE_PAYMENTS_RATE": "100000/second",
            "NOTIFICATIONS_SMS_BACKEND": "notifications.backends.FileSmsBackend",
            "NOTIFICATIONS_SMS_FILE_PATH": str(run_dir / "sms.jsonl"),
            # DEBUG is off: the simulated gateway and SMS backend run only when allowed.
            "PAYMENTS_ALLOW_SIMULATED_GATEWAY": "1",
            "NOTIFICATIONS_ALLOW_CONSOLE_SMS": "1",
            "PAYMENTS_IN_PROGRESS_WAIT": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if faults:
        env["TXBROKER_FAULTS"] = faults
    env.update(extra or {})
    return env


def start_gunicorn(
    log_dir: Path, env: dict[str, str], *, port: int, workers: int = 4, threads: int = 4, name: str = "web"
) -> Proc:
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        f"--threads={threads}",
        "--worker-class=gthread",
        "--timeout=30",
        "--graceful-timeout=5",
    ]
    proc = Proc(name, argv, env, log_dir)
    wait_until(
        lambda: not proc.alive() or http_ok(f"http://127.0.0.1:{port}/healthz"),
        timeout=60,
        what=f"{name} to answer",
    )
    if not proc.alive():
        raise RuntimeError(f"{name} exited:\n{proc.log()[-3000:]}")
    return proc


def worker_argv(
    *, name: str, concurrency: int, loglevel: str = "WARNING", extra: tuple[str, ...] = ()
) -> list[str]:
    """``celery -A config worker`` (:func:`txbroker.testing.worker_argv`), as every harness and
    test starts it."""
    return testing.worker_argv(
        app="config", name=name, concurrency=concurrency, loglevel=loglevel, extra=extra
    )


def start_worker(
    log_dir: Path,
    env: dict[str, str],
    *,
    name: str = "worker",
    concurrency: int = 2,
    queues: str = "",
    clock_offset: float = 0.0,
) -> Proc:
    argv = worker_argv(name=name, concurrency=concurrency, extra=(f"--queues={queues}",) if queues else ())
    if clock_offset:
        argv, env = faketime_argv(argv, env, clock_offset)
    proc = Proc(name, argv, env, log_dir)
    # With --loglevel=WARNING "ready." is not printed: wait for the pool instead.
    wait_until(
        lambda: not proc.alive() or len(proc.children()) >= concurrency, timeout=60, what=f"{name} pool"
    )
    if not proc.alive():
        raise RuntimeError(f"{name} exited:\n{proc.log()[-3000:]}")
    return proc


def start_beat(log_dir: Path, env: dict[str, str], *, name: str = "beat", clock_offset: float = 0.0) -> Proc:
    """Celery beat on django-celery-beat's tables (run ``ensure_periodic_tasks`` first)."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "beat",
        "--loglevel=WARNING",
        f"--schedule={Path(log_dir) / 'beat-schedule'}",
        "--max-interval=1",
    ]
    if clock_offset:
        argv, env = faketime_argv(argv, env, clock_offset)
    return Proc(name, argv, env, log_dir)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether the web process answers ``url`` at all: /healthz answers 503 while no worker
    answers its ping, and the server is up all the same."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - our own server
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, urllib.error.URLError):
        return False


def manage(args: list[str], env: dict[str, str], *, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``manage.py <args>`` in a child with ``env``; raise with its output on failure."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
    return result
