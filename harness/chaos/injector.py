"""Faults from outside while the load runs (the kinds of :mod:`harness.chaos.faults`):
SIGKILLs, Redis wipes, PostgreSQL terminations and crashes, frozen processes; and the
supervisor that restarts what died. Every fault is counted by kind and put on a timeline;
every freeze is kept as a window per pid."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from harness.chaos.cluster import Cluster
from harness.chaos.faults import FREEZE_AT_ONCE, FaultPlan
from harness.services import PrivatePostgres, RabbitServer, _admin_connect, pg_terminate, redis_wipe

logger = logging.getLogger("harness.chaos")

# Backends of the run's database inside a transaction, with the client port that maps
# them to a local process.
IN_TRANSACTION_SQL = (
    "SELECT pid, client_port, xact_start, state, left(query, 120) FROM pg_stat_activity "
    "WHERE datname = %s AND xact_start IS NOT NULL AND client_port IS NOT NULL "
    "AND pid <> pg_backend_pid()"
)
# How long a freeze looks for a process inside a transaction before giving up this turn.
FREEZE_SEARCH_SECONDS = 3.0
PG_START_TIMEOUT = 120.0


@dataclass
class FreezeWindow:
    """One process stopped with SIGSTOP: from ``started`` to ``ended`` (``time.time()``)."""

    pid: int
    what: str  # gunicorn worker, worker1 pool process
    started: float
    planned_seconds: float
    in_transaction: bool  # its session was still in the same transaction once stopped
    query: str
    kept: bool = False  # kept frozen until the load ended
    ended: float | None = None
    end: str = ""  # thawed, died, end of load

    @property
    def seconds(self) -> float:
        return (self.ended or time.time()) - self.started

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 1)}


@dataclass
class PgCrash:
    at: float
    restarted_at: float | None = None  # pg_ctl start issued
    up_at: float | None = None  # first connection accepted

    @property
    def downtime(self) -> float:
        return (self.up_at or time.time()) - self.at


@dataclass
class Injector:
    cluster: Cluster
    database_url: str
    redis_url: str
    redis_whole_server: bool
    plan: FaultPlan
    rng: random.Random
    postgres: PrivatePostgres | None = None  # the run's own server, for pg-crash
    rabbitmq: RabbitServer | None = None  # the run's own broker, for rabbitmq-restart
    # Each RabbitMQ restart: (stopped at, accepting connections again at), time.time().
    rabbitmq_restarts: list[tuple[float, float]] = field(default_factory=list)
    injected: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    freezes: list[FreezeWindow] = field(default_factory=list)
    crashes: list[PgCrash] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _faults_on: threading.Event = field(default_factory=threading.Event)
    # Held while a fault is injected: stop_faults() waits for it, then cleans up.
    _fault_lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self.plan.on("pg-crash") and self.postgres is None:
            raise ValueError("pg-crash needs the run's own PostgreSQL cluster")
        if self.plan.on("rabbitmq-restart") and self.rabbitmq is None:
            raise ValueError("rabbitmq-restart needs the run's own RabbitMQ node")
        self._faults_on.set()
        self._thread = threading.Thread(target=self._loop, name="chaos-injector", daemon=True)
        self._thread.start()

    def stop_faults(self) -> None:
        """No more faults from outside (every frozen process thawed, the database up); the
        supervisor keeps running."""
        self._faults_on.clear()
        with self._fault_lock:
            self._thaw_all("end of load")
            self._pg_ensure_up()
            if self.rabbitmq is not None and not self.rabbitmq.running():
                self.rabbitmq.start()

    def stop(self) -> None:
        self._faults_on.clear()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self._thaw_all("end of load")

    def _jitter(self, every: float) -> float:
        return every * self.rng.uniform(0.5, 1.5)

    def _note(self, kind: str, n: int = 1) -> None:
        self.injected[kind] += n
        self.timeline.append((time.time(), kind))

    def _loop(self) -> None:
        now = time.monotonic()
        due = {
            "kill": now + self._jitter(self.plan.kill_every),
            "redis-wipe": now + self._jitter(self.plan.redis_every),
            "rabbitmq-restart": now + self._jitter(self.plan.rabbitmq_every),
            "pg-cut": now + self._jitter(self.plan.pg_every),
            "freeze": now + self._jitter(self.plan.freeze_every) / 2,
            "pg-crash": now + self._jitter(self.plan.pg_crash_every),
        }
        every = {
            "kill": self.plan.kill_every,
            "redis-wipe": self.plan.redis_every,
            "rabbitmq-restart": self.plan.rabbitmq_every,
            "pg-cut": self.plan.pg_every,
            "freeze": self.plan.freeze_every,
            "pg-crash": self.plan.pg_crash_every,
        }
        while not self._stop.wait(0.2):
            try:
                self.cluster.supervise()
            except Exception as exc:  # noqa: BLE001 - a failed restart is retried next tick
                self.errors.append(f"supervise: {exc}")
                logger.warning("supervisor: %s", exc)
            with self._fault_lock:
                if self._faults_on.is_set():
                    self._tick(due, every)

    def _tick(self, due: dict[str, float], every: dict[str, float]) -> None:
        try:
            self._thaw_due()
            self._pg_restart_due()
        except Exception as exc:  # noqa: BLE001 - retried next tick
            self.errors.append(f"thaw/restart: {type(exc).__name__}: {exc}")
            logger.warning("injector: %s", exc)
        now = time.monotonic()
        for kind, when in due.items():
            if not self.plan.on(kind) or now < when:
                continue
            due[kind] = now + self._jitter(every[kind])
            if self._pg_down() and kind in ("pg-cut", "freeze", "pg-crash"):
                continue  # nothing to cut, freeze or crash while the server is down
            try:
                self._inject(kind)
            except Exception as exc:  # noqa: BLE001 - a fault not injected is reported, not fatal
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                logger.warning("injector: %s: %s", kind, exc)

    def _inject(self, kind: str) -> None:
        if kind == "kill":
            spare = frozenset(w.pid for w in self._frozen())
            if self.cluster.sigkill_web_worker(self.rng, spare=spare):
                self._note("sigkill_gunicorn_worker")
            killed = self.cluster.sigkill_celery(self.rng, spare=spare)
            if killed:
                self._note(killed)
        elif kind == "redis-wipe":
            dropped = redis_wipe(self.redis_url, whole_server=self.redis_whole_server)
            self._note("redis_flushall")
            self.injected["redis_clients_killed"] += dropped
        elif kind == "rabbitmq-restart":
            # Stopped and started within this tick (the supervisor waits meanwhile): RabbitMQ
            # is down for its shutdown and its boot, several seconds.
            stopped = time.time()
            self._note("rabbitmq_restart")
            self.rabbitmq.restart()
            self.rabbitmq_restarts.append((stopped, time.time()))
        elif kind == "pg-cut":
            terminated = pg_terminate(self.database_url)
            self._note("pg_terminate_backend")
            self.injected["pg_backends_terminated"] += terminated
        elif kind == "freeze":
            self._freeze_one()
        elif kind == "pg-crash":
            self._pg_crash()

    # --- freeze ---------------------------------------------------------------------------
    def _frozen(self) -> list[FreezeWindow]:
        return [w for w in self.freezes if w.ended is None]

    def _freeze_one(self) -> None:
        """SIGSTOP one web worker or pool process whose session is inside a transaction: the
        oldest open transaction of the candidates' sessions (the likeliest to be still open
        a moment later), checked again once the process is stopped; a process whose
        transaction ended meanwhile is thawed at once and the search goes on."""
        frozen = self._frozen()
        if len(frozen) >= FREEZE_AT_ONCE:
            return
        keep = not any(w.kept for w in self.freezes)
        conn, name = _admin_connect(self.database_url)
        try:
            deadline = time.monotonic() + FREEZE_SEARCH_SECONDS
            ports: dict[int, tuple[int, str]] = {}
            ports_at = 0.0
            while time.monotonic() < deadline and self._faults_on.is_set():
                if time.monotonic() - ports_at > 0.5:
                    ports = self._client_ports(exclude={w.pid for w in frozen})
                    ports_at = time.monotonic()
                with conn.cursor() as cursor:
                    cursor.execute(IN_TRANSACTION_SQL, [name])
                    rows = [row for row in cursor.fetchall() if row[1] in ports]
                if not rows:
                    time.sleep(0.02)
                    continue
                backend, port, xact_start, _state, query = min(rows, key=lambda row: row[2])
                pid, what = ports[port]
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                window = FreezeWindow(
                    pid=pid,
                    what=what,
                    started=time.time(),
                    planned_seconds=0.0,
                    in_transaction=True,
                    query=query,
                )
                self.freezes.append(window)
                if not self._still_in_transaction(conn, backend, xact_start):
                    window.in_transaction = False
                    self._thaw(window, "thawed at once (its transaction had ended)")
                    self.injected["freeze_missed"] += 1
                    continue
                # One kept frozen until the load ends: a pool process (gunicorn would kill a
                # web worker after its 30 s timeout anyway).
                window.kept = keep and what != "gunicorn worker"
                low, high = self.plan.freeze_range
                window.planned_seconds = -1.0 if window.kept else round(self.rng.uniform(low, high), 1)
                self._note("freeze")
                logger.warning("chaos: froze %s pid %s (backend %s in a transaction)", what, pid, backend)
                return
            self.injected["freeze_no_transaction_found"] += 1
        finally:
            conn.close()

    def _client_ports(self, *, exclude: set[int]) -> dict[int, tuple[int, str]]:
        """Local port of each database connection of the freeze candidates -> (pid, what)."""
        import psutil

        ports: dict[int, tuple[int, str]] = {}
        for pid, what in self.cluster.freeze_candidates().items():
            if pid in exclude:
                continue
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            for connection in connections:
                if connection.raddr and connection.raddr.port == self._database_port:
                    ports[connection.laddr.port] = (pid, what)
        return ports

    @property
    def _database_port(self) -> int:
        return urlsplit(self.database_url).port or 5432

    @staticmethod
    def _still_in_transaction(conn, backend: int, xact_start) -> bool:
        with conn.cursor() as cursor:
            cursor.execute("SELECT xact_start FROM pg_stat_activity WHERE pid = %s", [backend])
            row = cursor.fetchone()
        return row is not None and row[0] == xact_start

    def _thaw_due(self) -> None:
        """Thaw what is due; a frozen process that died meanwhile (gunicorn's timeout, a
        hard time limit, its group killed) ends its window now."""
        now = time.time()
        for window in self._frozen():
            if not _alive(window.pid):
                window.end, window.ended = "died", now
            elif not window.kept and now - window.started >= window.planned_seconds:
                self._thaw(window, "thawed")

    def _thaw(self, window: FreezeWindow, end: str) -> None:
        try:
            os.kill(window.pid, signal.SIGCONT)
            window.end = end
        except ProcessLookupError:
            window.end = "died"
        window.ended = time.time()

    def _thaw_all(self, end: str) -> None:
        for window in self._frozen():
            self._thaw(window, end)

    # --- pg-crash ---------------------------------------------------------------------------
    def _pg_down(self) -> bool:
        return bool(self.crashes) and self.crashes[-1].up_at is None

    def _pg_crash(self) -> None:
        assert self.postgres is not None
        self.postgres.crash()
        self.crashes.append(PgCrash(at=time.time()))
        self._note("pg_crash")
        logger.warning("chaos: PostgreSQL crashed (pg_ctl stop -m immediate)")

    def _pg_restart_due(self) -> None:
        if not self._pg_down():
            return
        crash = self.crashes[-1]
        if crash.restarted_at is None:
            if time.time() - crash.at >= self.plan.pg_crash_down:
                assert self.postgres is not None
                self.postgres.start(wait=False)
                crash.restarted_at = time.time()
        elif self.postgres is not None and self.postgres.ready():
            crash.up_at = time.time()

    def _pg_ensure_up(self) -> None:
        if not self._pg_down():
            return
        crash = self.crashes[-1]
        assert self.postgres is not None
        if crash.restarted_at is None:
            self.postgres.start(wait=False)
            crash.restarted_at = time.time()
        deadline = time.monotonic() + PG_START_TIMEOUT
        while not self.postgres.ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the run's PostgreSQL did not come back after a crash")
            time.sleep(0.1)
        crash.up_at = time.time()

    def report(self) -> dict[str, Any]:
        """Freeze windows and crashes, for the run's report."""
        held = [w for w in self.freezes if w.in_transaction]
        downtimes = [c.downtime for c in self.crashes]
        return {
            "freeze": {
                "count": len(held),
                "missed": len(self.freezes) - len(held),
                "by_end": dict(Counter(w.end or "frozen" for w in held)),
                "longest_seconds": round(max((w.seconds for w in held), default=0.0), 1),
                "kept_seconds": round(sum(w.seconds for w in held if w.kept), 1),
                "windows": [w.as_dict() for w in held],
            },
            "pg_crash": {
                "crashes": len(self.crashes),
                "downtime_total_seconds": round(sum(downtimes), 1),
                "downtime_max_seconds": round(max(downtimes, default=0.0), 1),
                "downtimes_seconds": [round(d, 1) for d in downtimes],
            },
        }


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
