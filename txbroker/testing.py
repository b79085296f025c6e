"""Helpers for tests that run txbroker for real: a child process with its log file
(:class:`Proc`), the ``celery worker`` command line (:func:`worker_argv`), polling with a
deadline (:func:`wait_until`), a free TCP port, and a side connection to the database that
bypasses Django's transaction (:func:`side_connection`).

Usable by any project's tests (it ships in the wheel) and by txbroker's own; it imports
nothing beyond the standard library and Django, and no test framework.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

__all__ = ["Proc", "free_port", "side_connection", "wait_until", "worker_argv"]


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); TimeoutError after
    ``timeout`` seconds, naming ``what`` and the last value."""
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


def worker_argv(
    *, app: str, name: str, concurrency: int, loglevel: str = "WARNING", extra: tuple[str, ...] = ()
) -> list[str]:
    """``celery -A <app> worker`` with a prefork pool, no mingle or gossip (quick to start),
    and a hostname of its own."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        f"--concurrency={concurrency}",
        "--without-mingle",
        "--without-gossip",
        f"--hostname={name}-{os.getpid()}@%h",
        *extra,
    ]


def side_connection(alias: str = "default"):
    """A new DB-API connection to ``alias``'s database with the driver and parameters Django
    uses for it (psycopg 3 or psycopg2 alike): its work commits on its own, outside the
    caller's transaction. The caller closes it."""
    from django.db import connections

    connection = connections[alias]
    return connection.Database.connect(**connection.get_connection_params())


class Proc:
    """A child process in its own process group, its output in ``<log_dir>/<name>.log``.

    Under ``faketime`` the group's leader is faketime, which forks the real program and
    waits for it: :attr:`main_pid` is the program's pid, and :meth:`children` are the
    program's children (a Celery worker's pool processes)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, *, cwd: Optional[Path] = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._wrapped = Path(argv[0]).name == "faketime"
        self._main_pid: int | None = None
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
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
