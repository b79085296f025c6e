"""The live gRPC clients: their rows (GrpcClient, heartbeats by the database's clock) and,
in this process, the telemetry streams it holds (the only way to send a client a command)."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Iterable
from typing import Optional

from django.db.models.functions import Now

from txbroker.db import broker_db
from txbroker.grpcapi.models import GrpcClient
from txbroker.grpcapi.protocol import Caller

logger = logging.getLogger("txbroker.grpc")

# This server process, as GrpcClient.stream_process names it.
PROCESS = f"{socket.gethostname()}:{os.getpid()}"
# Commands waiting to be written to one stream; a client that reads none of them for this
# long has its new commands dropped (each is retried by whatever sent it).
OUTBOX_SIZE = 256


def seen(who: Caller, groups: Iterable[str], kind: str, *, streaming: Optional[bool] = None) -> None:
    """Record that ``who`` is alive now (database time) as a member of ``groups``;
    ``streaming``: it holds (True) or no longer holds (False) a telemetry stream here."""
    rows = [
        GrpcClient(client_id=who.client_id, group=group, kind=kind, address=who.address, agent=who.agent)
        for group in dict.fromkeys(groups)
    ]
    if not rows or not who.client_id:
        return
    update = ["kind", "address", "agent", "last_heartbeat_at"]
    if streaming is not None:
        for row in rows:
            row.stream_process = PROCESS if streaming else ""
            row.stream_seen_at = Now() if streaming else None
        update += ["stream_process", "stream_seen_at"]
    for row in rows:
        row.last_heartbeat_at = Now()
    GrpcClient.objects.using(broker_db()).bulk_create(
        rows, update_conflicts=True, unique_fields=["client_id", "group"], update_fields=update
    )


def heartbeat(who: Caller) -> int:
    """Every group row of the client is alive now; how many it has."""
    return (
        GrpcClient.objects.using(broker_db())
        .filter(client_id=who.client_id)
        .update(last_heartbeat_at=Now(), address=who.address)
    )


def stream_ended(client_id: str) -> None:
    GrpcClient.objects.using(broker_db()).filter(client_id=client_id, stream_process=PROCESS).update(
        stream_process="", stream_seen_at=None
    )


def streams_held(client_ids: Iterable[str]) -> int:
    """This process still holds these clients' streams (now, by the database's clock)."""
    return (
        GrpcClient.objects.using(broker_db())
        .filter(client_id__in=list(client_ids), stream_process=PROCESS)
        .update(stream_seen_at=Now())
    )


def forget(client_id: str) -> int:
    """The client said it terminates: its rows go."""
    deleted, _ = GrpcClient.objects.using(broker_db()).filter(client_id=client_id).delete()
    return deleted


class Stream:
    """One client's telemetry stream held by this process: commands to write to it."""

    def __init__(self, who: Caller) -> None:
        self.who = who
        self.kind = ""
        self.groups: frozenset[str] = frozenset()
        # Groups it sent transactional messages to or answered checks of: it has a
        # TransactionChecker (a plain producer of the topic may have none).
        self.transactional: frozenset[str] = frozenset()
        self.outbox: queue.Queue = queue.Queue(maxsize=OUTBOX_SIZE)
        self.closed = threading.Event()

    def send(self, command) -> bool:
        """Queue a command for the client; False when the stream ended or is full."""
        if self.closed.is_set():
            return False
        try:
            self.outbox.put_nowait(command)
        except queue.Full:
            logger.warning("telemetry stream of %s is full: a command was dropped", self.who.client_id)
            return False
        return True

    def __repr__(self) -> str:
        return f"<Stream {self.who.client_id} {self.kind} {sorted(self.groups)}>"


class Streams:
    """The telemetry streams this process holds, by client id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_client: dict[str, Stream] = {}
        self._turn = 0

    def attach(self, stream: Stream) -> None:
        with self._lock:
            old = self._by_client.get(stream.who.client_id)
            self._by_client[stream.who.client_id] = stream
        if old is not None and old is not stream:
            old.closed.set()

    def detach(self, stream: Stream) -> bool:
        """Forget ``stream``; False when a newer stream of its client replaced it."""
        with self._lock:
            if self._by_client.get(stream.who.client_id) is stream:
                del self._by_client[stream.who.client_id]
                return True
        return False

    def add_group(self, client_id: str, group: str) -> bool:
        """The client's stream here (if any) serves ``group`` and can answer its checks;
        True when it newly serves it."""
        with self._lock:
            stream = self._by_client.get(client_id)
            if stream is None:
                return False
            stream.transactional = stream.transactional | {group}
            if group in stream.groups:
                return False
            stream.groups = stream.groups | {group}
            return True

    def client_ids(self) -> list[str]:
        with self._lock:
            return list(self._by_client)

    def held(self, client_id: str) -> bool:
        with self._lock:
            return client_id in self._by_client

    def groups(self, kind: str) -> set[str]:
        with self._lock:
            return {g for s in self._by_client.values() if s.kind == kind for g in s.groups}

    def pick(self, group: str, kind: str) -> Optional[Stream]:
        """A live stream of ``group``, or None: round robin among those known to answer
        its checks, else among all."""
        with self._lock:
            found = [
                s
                for s in self._by_client.values()
                if s.kind == kind and group in s.groups and not s.closed.is_set()
            ]
            found = [s for s in found if group in s.transactional] or found
            if not found:
                return None
            self._turn += 1
            return found[self._turn % len(found)]


STREAMS = Streams()
