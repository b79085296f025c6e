"""The real processes of a chaos or bench run, and the services they use.

Shared by ``chaos`` and ``bench``: a child process with its log file (:class:`Proc`), the
environment every child gets (:func:`service_env`), starters for gunicorn, Celery workers
and beat; the private Redis server and throwaway PostgreSQL database they use are in
``harness.services``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parent.parent

# Short broker intervals: a crash is settled within seconds, not RocketMQ's minutes.
FAST_BROKER_ENV = {
    "TXBROKER_CHECK_INTERVAL": "1",
    "TXBROKER_TRANSACTION_TIMEOUT": "2",
    "TXBROKER_SWEEP_INTERVAL": "1",
    "TXBROKER_RETRY_DELAYS": "0.5s 1s 2s 3s 5s",
    "TXBROKER_CLAIM_TIMEOUT": "5",
    "TXBROKER_TASK_BUDGET": "5",
}


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or predicate}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- processes --------------------------------------------------------------------------------
class Proc:
    """A child process in its own process group, its output in ``<log_dir>/<name>.log``.

    Under ``faketime`` (see :func:`faketime_argv`) the group's leader is faketime, which
    forks the real program and waits for it: :attr:`main_pid` is the program's pid, and
    :meth:`children` are the program's children (a Celery worker's pool processes)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._wrapped = Path(argv[0]).name == "faketime"
        self._main_pid: int | None = None
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def main_pid(self) -> int:
        """The program's pid: the group leader's, or faketime's child once it forked."""
        if not self._wrapped:
            return self.pid
        if self._main_pid is None:
            kids = _children_of(self.pid)
            if not kids:
                return self.pid
            self._main_pid = kids[0]
        return self._main_pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        main = self.main_pid
        return [] if self._wrapped and main == self.pid else _children_of(main)

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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole group (what a supervisor does when the main process died)."""
        self.signal_group(signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL after ``timeout``."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(timeout=10)
        else:
            self.signal_group(signal.SIGKILL)  # children left behind by a killed leader
        self._log.close()


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


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
    env.update(FAST_BROKER_ENV)
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
    """``celery -A config worker`` with a prefork pool, as every harness and test starts it."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "--without-mingle",
        "--without-gossip",
        f"--hostname={name}-{os.getpid()}@%h",
        *extra,
    ]


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
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own server
            return response.status == 200
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
