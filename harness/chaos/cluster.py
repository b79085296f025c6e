"""The run's processes under a supervisor: gunicorn (several workers), two Celery workers,
beat. A process whose main process died is cleaned up (its whole group) and started again,
as systemd's ``Restart=always`` would; every restart is counted."""

from __future__ import annotations

import random
import signal
import threading
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


@dataclass
class Cluster:
    log_dir: Path
    env: dict[str, str]
    web_workers: int = 4
    web_threads: int = 4
    worker_concurrency: int = 3
    port: int = field(default_factory=free_port)
    managed: list[Managed] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._add("web", "web", self._start_web)
        for n in (1, 2):
            self._add("worker", f"worker{n}", self._start_worker)
        self._add("beat", "beat", lambda name, env: start_beat(self.log_dir, env, name=name))

    def _start_web(self, name: str, env: dict[str, str]) -> Proc:
        return start_gunicorn(
            self.log_dir, env, port=self.port, workers=self.web_workers, threads=self.web_threads, name=name
        )

    def _start_worker(self, name: str, env: dict[str, str]) -> Proc:
        return start_worker(self.log_dir, env, name=name, concurrency=self.worker_concurrency)

    def _add(self, role: str, name: str, start: Callable[[str, dict[str, str]], Proc]) -> None:
        self.managed.append(Managed(role, name, start, start(name, self.env)))

    def of_role(self, role: str) -> list[Managed]:
        return [m for m in self.managed if m.role == role]

    def supervise(self) -> None:
        """Restart every managed process whose main process has died."""
        with self._lock:
            for managed in self.managed:
                if managed.proc.alive():
                    continue
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
                if managed.role == "web":
                    old.stop()  # the port is the web's: stop first (the load is over)
                    managed.proc = managed.start(f"{managed.name}-calm", env)
                else:
                    managed.proc = managed.start(f"{managed.name}-calm", env)
                    old.stop()

    def stop(self) -> None:
        with self._lock:
            for managed in self.managed:
                managed.proc.stop()

    def sigkill_web_worker(self, rng: random.Random) -> bool:
        """SIGKILL one gunicorn worker (the arbiter starts another)."""
        web = self.of_role("web")[0].proc
        children = web.children()
        if not children:
            return False
        _sigkill(rng.choice(children))
        return True

    def sigkill_celery(self, rng: random.Random, *, main_share: float = 0.2) -> str:
        """SIGKILL a random Celery worker process: usually a pool process (the worker forks
        another), sometimes a worker's main process (the supervisor restarts it)."""
        with self._lock:
            managed = rng.choice(self.of_role("worker"))
            children = managed.proc.children()
            if children and rng.random() >= main_share:
                _sigkill(rng.choice(children))
                return "sigkill_celery_pool_process"
            _sigkill(managed.proc.pid)
            return "sigkill_celery_worker_main"

    def log_paths(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log"))


def _sigkill(pid: int) -> None:
    try:
        import os

        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
