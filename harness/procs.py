"""The real processes of a chaos or bench run, and the services they use.

Shared by ``chaos`` and ``bench``: a child process with its log file (:class:`Proc`), the
environment every child gets (:func:`service_env`), starters for gunicorn, Celery workers
and beat, a private Redis server, and a throwaway PostgreSQL database. Nothing here
touches the developer's database or Redis: a run names its own.
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
from urllib.parse import urlsplit, urlunsplit

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


# --- Redis --------------------------------------------------------------------------------------
class RedisServer:
    """A private redis-server that keeps nothing on disk, on a free port: the run can wipe
    it (FLUSHALL) without touching anybody else's data."""

    def __init__(self, log_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = Proc(
            "redis",
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            dict(os.environ),
            log_dir,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        wait_until(self.ping, timeout=20, what="redis-server")

    def ping(self) -> bool:
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.stop(timeout=5)


def redis_wipe(url: str, *, whole_server: bool) -> int:
    """Lose everything, as a restart of a Redis that keeps nothing on disk: FLUSHALL (or
    FLUSHDB on a shared server) and drop every client connection (of that db only on a
    shared server). Returns the number of connections dropped."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        me = client.client_id()
        db = client.connection_pool.connection_kwargs.get("db", 0)
        if whole_server:
            client.flushall()
        else:
            client.flushdb()
        dropped = 0
        for info in client.client_list():
            if int(info["id"]) == me or (not whole_server and int(info.get("db", -1)) != db):
                continue
            try:
                dropped += int(client.execute_command("CLIENT", "KILL", "ID", info["id"]))
            except redis.ResponseError:
                pass  # gone already
        return dropped
    finally:
        client.close()


# --- PostgreSQL ---------------------------------------------------------------------------------
def _admin_url(database_url: str) -> tuple[str, str]:
    """The maintenance database's URL (``postgres``) and the database's name."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if parts.scheme not in {"postgres", "postgresql", "pgsql"} or not name:
        raise ValueError(f"not a PostgreSQL database URL: {database_url!r}")
    return urlunsplit(parts._replace(path="/postgres")), name


def _admin_connect(database_url: str):
    import psycopg2

    url, name = _admin_url(database_url)
    conn = psycopg2.connect(url, connect_timeout=10)
    conn.autocommit = True
    return conn, name


def database_recreate(database_url: str) -> None:
    """Drop (if present) and create the database: a run starts from nothing."""
    from psycopg2 import sql

    conn, name = _admin_connect(database_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def database_drop(database_url: str) -> None:
    from psycopg2 import sql

    conn, name = _admin_connect(database_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def pg_terminate(database_url: str, *, except_pids: tuple[int, ...] = ()) -> int:
    """``pg_terminate_backend`` every connection to the database (an outage of the
    database, or a failover, as the application sees it). Returns how many."""
    conn, name = _admin_connect(database_url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))",
                [name, list(except_pids)],
            )
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


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


class PrivatePostgres:
    """A PostgreSQL cluster of the run's own: ``initdb`` in a fresh folder under the system's
    temporary directory (the ``postgres`` user must reach it: a pytest ``tmp_path`` is
    private to root), started with ``pg_ctl`` on a free port, so that a chaos run can crash
    it (``pg_ctl stop -m immediate``: every server process killed, no checkpoint, crash
    recovery at the next start) without touching the machine's server. As root, every
    cluster command runs as the ``postgres`` user (initdb refuses root)."""

    def __init__(self, base_dir: Path, *, port: int = 0) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self.port = port or free_port()
        self.bindir = Path(
            subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )

    @classmethod
    def create(cls) -> PrivatePostgres:
        import tempfile

        cluster = cls(Path(tempfile.mkdtemp(prefix="txbroker-chaos-pg-")))
        if os.geteuid() == 0:
            shutil.chown(cluster.base_dir, "postgres", "postgres")
        cluster._run(
            "initdb", "-D", str(cluster.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        settings = {
            "port": cluster.port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{cluster.base_dir}'",
            "max_connections": 200,
            # A crash here is of the server's processes (the operating system keeps its
            # page cache), so skipping fsync loses nothing and spares a shared disk.
            "fsync": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        with open(cluster.data_dir / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        cluster.start()
        return cluster

    def _run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, cwd=self.base_dir, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        return result

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def start(self, *, wait: bool = True) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w" if wait else "-W", "start"
        )

    def crash(self) -> None:
        """Every server process killed at once, as by a power cut of the server."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop")

    def ready(self) -> bool:
        import psycopg2

        try:
            conn = psycopg2.connect(self.url("postgres"), connect_timeout=1)
        except psycopg2.Error:
            return False
        conn.close()
        return True

    def running(self) -> bool:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status"]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "stop")

    def remove(self, *, log_to: Path | None = None) -> None:
        """Stop the server and delete its folder (its log copied to ``log_to`` first)."""
        self.stop()
        if log_to is not None and self.log_path.exists():
            shutil.copyfile(self.log_path, log_to)
        shutil.rmtree(self.base_dir, ignore_errors=True)
