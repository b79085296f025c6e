"""Recovery without a restart: a Celery worker and beat carry on after PostgreSQL drops
every connection (pg_terminate_backend) and after Redis loses everything (FLUSHDB and every
client connection dropped, as a Redis restart that keeps nothing on disk). And a worker
stopped with SIGTERM mid-batch finishes or releases its claims at once: the worst delay
until another worker has done them is measured and printed."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from django.db import connection

from txbroker import LocalTransactionState
from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests.helpers import effects, send
from txbroker.tests.processes import start_worker, wait_for
from txbroker.tests.support.models import Attempt, Plan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ALL_GROUPS = {"test_all_group": 1, "test_pay_group": 1, "test_refund_group": 1}


class Terminator:
    """pg_terminate_backend, every 50 ms, on every connection to the test database but the
    test's own: the worker's and beat's connections are cut while they work (idle, they
    hold none)."""

    def __init__(self) -> None:
        self.spared = connection.cursor().connection.info.backend_pid
        self.driver = connection.Database  # psycopg 3 or psycopg2, as Django's
        self.params = connection.get_connection_params()
        self.terminated = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        side = self.driver.connect(**self.params)
        side.autocommit = True
        try:
            with side.cursor() as cursor:
                while not self._stop.wait(0.05):
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
                        [self.spared],
                    )
                    self.terminated += cursor.fetchone()[0]
        finally:
            side.close()

    def __enter__(self) -> Terminator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def wipe_redis(client) -> int:
    """FLUSHDB of the suite's Redis db and drop every client of that db (FLUSHALL would
    wipe other databases of a shared server)."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    me = client.client_id()
    client.flushdb()
    dropped = 0
    for info in client.client_list():
        if int(info["id"]) != me and int(info.get("db", -1)) == db:
            dropped += int(client.execute_command("CLIENT", "KILL", "ID", info["id"]))
    return dropped


def settles_and_delivers(key: str, *, half: bool = False) -> None:
    """A message sent now is delivered to every group; with ``half`` its producer answers
    UNKNOWN, so beat's check-back must settle it first."""
    answer = LocalTransactionState.UNKNOWN if half else None
    msg_id = send(key, tag="pay", answer=answer).msg_id
    wait_for(lambda: Message.objects.get(pk=msg_id).state == "COMMITTED", timeout=60, what=f"{key} committed")
    wait_for(lambda: effects(key) == ALL_GROUPS, timeout=60, what=f"{key} delivered to every group")


def test_worker_and_beat_carry_on_after_postgresql_drops_their_connections(worker, beat):
    settles_and_delivers("pg-before")
    Plan.objects.create(key="pg-slow-0", sleep_seconds=1)  # a handler in its transaction
    with Terminator() as terminator:
        sent = [send(f"pg-slow-{i}", tag="pay").msg_id for i in range(10)]
        sent.append(send("pg-half", tag="pay", answer=LocalTransactionState.UNKNOWN).msg_id)
        wait_for(lambda: terminator.terminated >= 5, timeout=30, what="connections cut while working")
    # The outage is over: everything sent during it, and everything sent after, gets done.
    for msg_id in sent:
        wait_for(
            lambda msg_id=msg_id: (
                set(Delivery.objects.filter(message_id=msg_id).values_list("status", flat=True))
                == {"SUCCEEDED"}
            ),
            timeout=90,
            what=f"{msg_id} delivered after the outage",
        )
    settles_and_delivers("pg-after")
    settles_and_delivers("pg-half-after", half=True)  # beat -> check-back -> worker
    assert worker.popen.poll() is None and beat.popen.poll() is None, "nothing was restarted"
    assert all(effects(f"pg-slow-{i}") == ALL_GROUPS for i in range(10))
    assert effects("pg-half") == ALL_GROUPS


def test_worker_and_beat_carry_on_after_redis_loses_everything(worker, beat, redis_client):
    settles_and_delivers("redis-before")
    for round_ in range(3):
        assert wipe_redis(redis_client) >= 2, "the worker's and beat's connections were there to drop"
        settles_and_delivers(f"redis-after-{round_}")
        settles_and_delivers(f"redis-half-after-{round_}", half=True)
    assert worker.popen.poll() is None and beat.popen.poll() is None, "nothing was restarted"
    assert set(Delivery.objects.values_list("status", flat=True)) == {"SUCCEEDED"}


@pytest.mark.parametrize("target", ["worker", "pool process"])
def test_sigterm_mid_batch_hands_the_batch_over_at_once(beat, tmp_path, broker_setting, capsys, target):
    """The stopped worker claimed a batch of 15 deliveries and runs the first (slow) one; a
    second worker is ready. Everything is done long before the claim timeout (300 s)."""
    broker_setting("TXBROKER_CLAIM_TIMEOUT", "300")
    Plan.objects.create(key="handover-0", sleep_seconds=3)
    for i in range(5):
        send(f"handover-{i}", tag="pay")
    stopping = start_worker(tmp_path, name="stopping", concurrency=1, TXBROKER_CLAIM_TIMEOUT="300")
    standby = None
    try:
        attempt = wait_for(
            lambda: Attempt.objects.filter(key="handover-0").first(), what="the slow handler to start"
        )
        assert Delivery.objects.filter(status="RUNNING").count() == 15  # the whole batch is claimed
        standby = start_worker(tmp_path, name="standby", TXBROKER_CLAIM_TIMEOUT="300")
        stopped_at = time.monotonic()
        os.kill(stopping.pid if target == "worker" else attempt.pid, signal.SIGTERM)
        wait_for(
            lambda: Delivery.objects.filter(status="SUCCEEDED").count() == 15, timeout=60, what="all done"
        )
        delay = time.monotonic() - stopped_at
    finally:
        stopping.stop()
        if standby is not None:
            standby.stop()
    released = TraceEvent.objects.filter(event="RELEASED").count()
    reclaimed = TraceEvent.objects.filter(event="RECLAIMED").count()
    with capsys.disabled():
        print(
            f"\nSIGTERM to the {target} mid-batch: all 15 deliveries done {delay:.1f}s later "
            f"({released} released, {reclaimed} reclaimed; claim timeout 300 s)"
        )
    assert reclaimed == 0, "nothing waited for the claim timeout"
    assert delay < 20
    assert all(effects(f"handover-{i}") == ALL_GROUPS for i in range(5))
