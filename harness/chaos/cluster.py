"""The run's processes under a supervisor: gunicorn (several workers), two Celery workers,
beat. A process whose main process died is cleaned up (its whole group) and started again,
as systemd's ``Restart=always`` would; every restart is counted.

Some processes may run with a skewed clock (``clock_offsets``, by name: faketime, also
after a restart). Every process the harness itself kills or stops is written down with
when and why (:attr:`Cluster.deaths`): the false-rollback check needs to know which
producers were alive."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.procs import Proc, free_port, start_beat, start_gunicorn, start_worker


@dataclass
class Managed:
    role: str  # web, worker, beat
    name: str
    start: Callable[[str, dict[str, str]], Proc]
    proc: Proc
    generation: int = 0


@dataclass(frozen=True)
class Death:
    """A process that ended: its pid, when (``time.time()``; None when unknown), why."""

    pid: int
    at: float | None
    cause: str


@dataclass
class Cluster:
    log_dir: Path
    env: dict[str, str]
    web_workers: int = 4
    web_threads: int = 4
    worker_concurrency: int = 3
    clock_offsets: dict[str, float] = field(default_factory=dict)  # managed name -> seconds ahead
    port: int = field(default_factory=free_port)
    managed: list[Managed] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    deaths: list[Death] = field(default_factory=list)
    # log file -> seconds its timestamps run ahead (processes started under faketime)
    log_offsets: dict[Path, float] = field(default_factory=dict)
    skewed_starts: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._add("web", "web", self._start_web)
        for n in (1, 2):
            self._add("worker", f"worker{n}", self._start_worker)
        self._add("beat", "beat", self._start_beat)

    def _offset(self, name: str) -> float:
        return self.clock_offsets.get(name.split("-")[0], 0.0)

    def _started(self, proc: Proc, name: str) -> Proc:
        offset = self._offset(name)
        if offset:
            self.log_offsets[proc.log_path] = offset
            self.skewed_starts += 1
        return proc

    def _start_web(self, name: str, env: dict[str, str]) -> Proc:
        return start_gunicorn(
            self.log_dir, env, port=self.port, workers=self.web_workers, threads=self.web_threads, name=name
        )

    def _start_worker(self, name: str, env: dict[str, str]) -> Proc:
        proc = start_worker(
            self.log_dir,
            env,
            name=name,
            concurrency=self.worker_concurrency,
            clock_offset=self._offset(name),
        )
        return self._started(proc, name)

    def _start_beat(self, name: str, env: dict[str, str]) -> Proc:
        return self._started(start_beat(self.log_dir, env, name=name, clock_offset=self._offset(name)), name)

    def _add(self, role: str, name: str, start: Callable[[str, dict[str, str]], Proc]) -> None:
        self.managed.append(Managed(role, name, start, start(name, self.env)))

    def of_role(self, role: str) -> list[Managed]:
        return [m for m in self.managed if m.role == role]

    def _record_group(self, proc: Proc, cause: str) -> None:
        now = time.time()
        for pid in proc.group_pids():
            self.deaths.append(Death(pid, now, cause))

    def supervise(self) -> None:
        """Restart every managed process whose main process has died."""
        with self._lock:
            for managed in self.managed:
                if managed.proc.alive():
                    continue
                self._record_group(
                    managed.proc, f"{managed.name}: process group SIGKILLed (its main process died)"
                )
                managed.proc.kill()  # what is left of its group
                managed.generation += 1
                self.restarts[managed.role] += 1
                managed.proc = managed.start(f"{managed.name}-r{managed.generation}", self.env)

    def replace_all(self, env: dict[str, str], roles: tuple[str, ...]) -> None:
        """Start new processes of ``roles`` with ``env``, then stop the old ones warmly
        (SIGTERM): how the faults are switched off without a gap."""
        with self._lock:
            self.env = env
            for managed in [m for m in self.managed if m.role in roles]:
                old = managed.proc
                managed.generation += 1
                self._record_group(old, f"{managed.name}: stopped (SIGTERM) to switch the faults off")
                if managed.role == "web":
                    old.stop()  # the port is the web's: stop first (the load is over)
                    managed.proc = managed.start(f"{managed.name}-calm", env)
                else:
                    managed.proc = managed.start(f"{managed.name}-calm", env)
                    old.stop()

    def stop(self) -> None:
        with self._lock:
            for managed in self.managed:
                self._record_group(managed.proc, f"{managed.name}: stopped at the end of the run")
                managed.proc.stop()

    def sigkill_web_worker(self, rng: random.Random, *, spare: frozenset[int] = frozenset()) -> bool:
        """SIGKILL one gunicorn worker (the arbiter starts another), never one of ``spare``
        (the frozen ones: a freeze has its own end)."""
        web = self.of_role("web")[0].proc
        children = [pid for pid in web.children() if pid not in spare]
        if not children:
            return False
        self._sigkill(rng.choice(children), "injector SIGKILL of a gunicorn worker")
        return True

    def sigkill_celery(
        self, rng: random.Random, *, main_share: float = 0.2, spare: frozenset[int] = frozenset()
    ) -> str | None:
        """SIGKILL a random Celery worker process: usually a pool process (the worker forks
        another), sometimes a worker's main process (the supervisor restarts it). Never one
        of ``spare`` (the frozen ones: a freeze has its own end), nor the main process of a
        worker that has one (its group dies with it): another worker's main process then,
        or a pool process. None when nothing was killed."""
        with self._lock:
            workers = self.of_role("worker")
            managed = rng.choice(workers)
            children = [pid for pid in managed.proc.children() if pid not in spare]
            if children and rng.random() >= main_share:
                self._sigkill(rng.choice(children), f"injector SIGKILL of a {managed.name} pool process")
                return "sigkill_celery_pool_process"
            free = [m for m in workers if not spare.intersection(m.proc.children())]
            if free:
                target = managed if managed in free else rng.choice(free)
                self._sigkill(target.proc.main_pid, f"injector SIGKILL of {target.name}'s main process")
                return "sigkill_celery_worker_main"
            if children:
                self._sigkill(rng.choice(children), f"injector SIGKILL of a {managed.name} pool process")
                return "sigkill_celery_pool_process"
            return None

    def freeze_candidates(self) -> dict[int, str]:
        """pid -> what it is, for the processes a freeze may stop: gunicorn workers and
        Celery pool processes (never an arbiter, a worker's main process or beat)."""
        with self._lock:
            found: dict[int, str] = {}
            for managed in self.managed:
                if managed.role == "web":
                    found.update(dict.fromkeys(managed.proc.children(), "gunicorn worker"))
                elif managed.role == "worker":
                    found.update(dict.fromkeys(managed.proc.children(), f"{managed.name} pool process"))
            return found

    def _sigkill(self, pid: int, cause: str) -> None:
        self.deaths.append(Death(pid, time.time(), cause))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_paths(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log"))
