"""The services of a chaos or bench run: a private Redis server and a throwaway
PostgreSQL database (with its own server when asked). Nothing here touches the developer's
database or Redis: a run names its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from harness.procs import Proc, free_port, wait_until


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


# --- RabbitMQ -----------------------------------------------------------------------------------
class RabbitServer:
    """A private RabbitMQ node for a run with the ``amqp`` broker: a node name, AMQP and
    distribution ports, database, logs and Erlang cookie of its own, all in ``base_dir``, so
    that the ``rabbitmq-restart`` fault can stop and start it without touching the machine's
    RabbitMQ. Its state lives in files (the node's pid in ``rabbitmq.pid``), so a child
    process can restart the server its parent created (``RabbitServer(base_dir, port=...)``)."""

    SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")

    def __init__(self, base_dir: Path, *, port: int = 0, dist_port: int = 0) -> None:
        if not self.SCRIPT.exists():
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self.base_dir = Path(base_dir).resolve()
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.pid_file = self.base_dir / "rabbitmq.pid"
        self.log_path = self.base_dir / "rabbitmq-server.log"
        self._popen: subprocess.Popen | None = None

    @classmethod
    def create(cls, base_dir: Path) -> RabbitServer:
        server = cls(base_dir)
        server.base_dir.mkdir(parents=True, exist_ok=True)
        (server.base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{server.port}\nloopback_users = none\n", encoding="utf-8"
        )
        (server.base_dir / "enabled_plugins").write_text("[].\n", encoding="utf-8")
        ports = {"port": server.port, "dist_port": server.dist_port}
        (server.base_dir / "ports.json").write_text(json.dumps(ports), encoding="utf-8")
        server.start()
        return server

    @classmethod
    def attach(cls, base_dir: Path) -> RabbitServer:
        """The node :meth:`create` made in ``base_dir`` (from another process)."""
        ports = json.loads((Path(base_dir) / "ports.json").read_text(encoding="utf-8"))
        return cls(base_dir, port=ports["port"], dist_port=ports["dist_port"])

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        return {
            **os.environ,
            # The Erlang cookie is made in HOME on first start.
            "HOME": str(base),
            "RABBITMQ_NODENAME": f"txb-chaos-{self.port}@localhost",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            # Not the machine's rabbitmq-env.conf (its node name and listeners).
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",
        }

    def start(self, *, timeout: float = 120) -> None:
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                [str(self.SCRIPT)],
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(self._popen.pid), encoding="utf-8")
        wait_until(self.ready, timeout=timeout, interval=0.5, what="rabbitmq-server")

    def ready(self) -> bool:
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=2) as conn:
                conn.connect()
            return True
        except Exception:  # noqa: BLE001 - not accepting AMQP connections yet
            return False

    def _group(self) -> int | None:
        try:
            return int(self.pid_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """Some process of the node's group is alive (a zombie is not: the start script
        exits first, and its parent may be another process that has not reaped it)."""
        group = self._group()
        if group is None:
            return False
        if self._popen is not None:
            self._popen.poll()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after it.
                fields = stat.read_text(encoding="utf-8").rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                return True
        return False

    def stop(self, *, timeout: float = 60) -> None:
        """Stop the node as a service manager would (SIGTERM: RabbitMQ shuts down cleanly,
        durable queues and persistent messages kept on disk); SIGKILL what is left."""
        import signal

        group = self._group()
        if group is None or not self.running():
            return
        os.killpg(group, signal.SIGTERM)
        try:
            wait_until(lambda: not self.running(), timeout=timeout, interval=0.2, what="rabbitmq to stop")
        except TimeoutError:
            os.killpg(group, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()
