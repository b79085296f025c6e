"""Count SQL statements and transactions in a process, for the bench's per-payment figures.

Installed in every bench process (producers in process, workers through the harness app's
``ready()`` when ``HARNESS_BENCH_COUNT_DIR`` is set). A statement is one round trip through
Django's cursor (savepoints included; BEGIN is implicit in psycopg2 and not counted). A
transaction is a COMMIT or ROLLBACK of an atomic block, or a statement run in autocommit.
Workers write their counts to ``<dir>/<pid>.json`` now and then and when they stop.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

from django.db.backends.signals import connection_created

COUNT_DIR_ENV = "HARNESS_BENCH_COUNT_DIR"

counts: Counter = Counter()
_lock = threading.Lock()
_installed = False
_last_dump = 0.0


def _statement_wrapper(execute, sql, params, many, context):
    connection = context["connection"]
    with _lock:
        counts["statements"] += 1
        if not connection.in_atomic_block:
            counts["transactions"] += 1
    return execute(sql, params, many, context)


def _count_ends(connection) -> None:
    commit, rollback = connection.commit, connection.rollback

    def counted_commit():
        with _lock:
            counts["transactions"] += 1
        return commit()

    def counted_rollback():
        with _lock:
            counts["transactions"] += 1
        return rollback()

    connection.commit = counted_commit
    connection.rollback = counted_rollback


def _on_connection_created(sender, connection, **kwargs) -> None:
    if getattr(connection, "_bench_counted", False):
        return
    connection._bench_counted = True
    connection.execute_wrappers.append(_statement_wrapper)
    _count_ends(connection)


def install() -> None:
    """Count from now on, on every connection this process opens (and the open ones)."""
    global _installed
    if _installed:
        return
    _installed = True
    from django.db import connections

    # Connected or not: execute_wrappers and the wrapped commit survive reconnects.
    for alias in connections:
        _on_connection_created(sender=None, connection=connections[alias])
    connection_created.connect(_on_connection_created, weak=False)


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(counts)


def reset() -> None:
    with _lock:
        counts.clear()


def dump(directory: str | os.PathLike, *, force: bool = False) -> None:
    """Write this process's counts to ``<directory>/<pid>.json`` (at most twice a second)."""
    global _last_dump
    now = time.monotonic()
    if not force and now - _last_dump < 0.5:
        return
    _last_dump = now
    path = Path(directory) / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot()))
    tmp.replace(path)


def read_dumps(directory: str | os.PathLike) -> dict[str, int]:
    total: Counter = Counter()
    for path in Path(directory).glob("*.json"):
        total.update(json.loads(path.read_text()))
    return dict(total)


def _start_dumping(directory: str) -> None:
    """Write this process's counts every 0.2 s, from a daemon thread."""

    def dump_forever() -> None:
        while True:
            time.sleep(0.2)
            dump(directory, force=True)

    threading.Thread(target=dump_forever, name="bench-counts", daemon=True).start()


def install_in_worker() -> None:
    """Called by the harness app in Celery worker processes started by the bench: each pool
    process writes its counts every 0.2 s from a thread (no cost on the task path)."""
    directory = os.environ.get(COUNT_DIR_ENV)
    if not directory:
        return
    from celery.signals import worker_process_init, worker_process_shutdown

    install()

    def on_process_init(**kwargs):
        reset()
        _start_dumping(directory)

    def on_shutdown(**kwargs):
        dump(directory, force=True)

    worker_process_init.connect(on_process_init, weak=False)
    worker_process_shutdown.connect(on_shutdown, weak=False)


def install_in_process() -> None:
    """Called by the harness app in a peer's non-Celery process started by the bench (the
    outbox relay, a procrastinate worker): counts from now on, written every 0.2 s from a
    thread and when the process exits."""
    import atexit

    directory = os.environ.get(COUNT_DIR_ENV)
    if not directory:
        return
    install()
    _start_dumping(directory)
    atexit.register(lambda: dump(directory, force=True))
