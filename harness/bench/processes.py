"""The bench's child processes: a Celery worker pool it starts and stops, and the CPU time
of a process tree."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import psutil
from django.conf import settings
from django.db import connection

from harness.bench.hooks import READY_ENV
from harness.procs import worker_argv

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The URL of the database this process uses, for its children."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(params['NAME']).resolve()}"
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{params['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    apps = [a for a in env.get("DJANGO_EXTRA_APPS", "").split(",") if a.strip()]
    if "harness" not in apps:
        apps.append("harness")
    env.update(
        {
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_EXTRA_APPS": ",".join(apps),
            "NOTIFICATIONS_SMS_BACKEND": "harness.bench.backends.NullSmsBackend",
            # Simulations, knowingly (the bench may run with DEBUG off).
            "PAYMENTS_ALLOW_SIMULATED_GATEWAY": "1",
            "NOTIFICATIONS_ALLOW_CONSOLE_SMS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if "DJANGO_VAR_DIR" not in env:
        env["DJANGO_VAR_DIR"] = str(settings.VAR_DIR)
    env.update(extra)
    return env


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def named_cpu_seconds(name: str) -> float:
    """CPU seconds of every process on the machine called ``name`` (redis-server)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] and proc.info["name"].startswith(name) and proc.info["cpu_times"]:
            total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return total


class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving one database, sampled while a run
    goes (a backend's last sample stands for it after it exits): other databases' work on
    the same server is left out."""

    def __init__(self, database: str) -> None:
        self.marker = f" {database} "
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.started = False

    def sample(self) -> None:
        for proc in psutil.process_iter(["cmdline", "cpu_times"]):
            title = " ".join(proc.info["cmdline"] or []) + " "
            times = proc.info["cpu_times"]
            if not title.startswith("postgres:") or self.marker not in title or times is None:
                continue
            self.last[proc.pid] = times.user + times.system
            if self.started:
                self.first.setdefault(proc.pid, 0.0)  # connected during the run

    def start(self) -> None:
        self.sample()
        self.first = dict(self.last)
        self.started = True

    def seconds(self) -> float:
        return sum(self.last[pid] - self.first.get(pid, 0.0) for pid in self.last)


def pool_rss(pid: int) -> list[int]:
    """Resident memory (bytes) of each pool child of a Celery worker."""
    try:
        return [child.memory_info().rss for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class Worker:
    """``celery -A config worker`` in its own session, its log in ``log_dir``; or ``argv``
    (a peer's relay or worker), ready when ``ready()`` says so."""

    def __init__(
        self,
        log_dir: Path,
        *,
        concurrency: int,
        env: dict[str, str],
        name: str = "bench",
        extra: tuple[str, ...] = (),
        argv: Optional[list[str]] = None,
        ready: Optional[Callable[[], bool]] = None,
    ) -> None:
        self.log_path = log_dir / f"worker-{name}.log"
        self.ready_dir = log_dir / f"ready-{name}"
        self.ready_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.ready_dir.iterdir():
            stale.unlink()
        self._ready = ready or (lambda: any(self.ready_dir.iterdir()))
        argv = argv or worker_argv(name=name, concurrency=concurrency, extra=("--without-heartbeat", *extra))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**env, READY_ENV: str(self.ready_dir)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(
            f"the bench worker {self.log_path.name} did not start; its log:\n{self.log()[-3000:]}"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> Optional[int]:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.popen.returncode
