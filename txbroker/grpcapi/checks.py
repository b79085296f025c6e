"""Check-back of remote producer groups, in the txbroker_grpc process.

A HALF message of a producer group with no checker in the project but with a live RocketMQ
producer (a producer group is its topic's name) is checked by the process that holds that
producer's telemetry stream: :class:`CheckLoop` leases the due HALF messages of the groups
it streams to (``FOR UPDATE SKIP LOCKED``, the lease in ``next_check_at`` by the database's
clock, as Celery's check pass does, which leaves these groups alone) and sends each one's
``RecoverOrphanedTransactionCommand`` to a live producer of its group. The producer's
TransactionChecker answers with EndTransaction (source SERVER_CHECK): :func:`answer`
settles the message under the lease, counted as a check. No answer within
TXBROKER_CHECK_TIMEOUT counts as UNKNOWN, as a Django checker's overrun does; no live
stream when the message comes up means no check (not counted, due again after
TXBROKER_CHECK_INTERVAL).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.db import close_old_connections

from txbroker.conf import txsettings
from txbroker.db import recover_connections
from txbroker.grpcapi import clients
from txbroker.grpcapi.clients import STREAMS
from txbroker.grpcapi.models import GrpcClient
from txbroker.grpcapi.protocol import Caller, pb, spb
from txbroker.grpcapi.wire import message_pb
from txbroker.metrics import observe_check_pass
from txbroker.models import Message, TraceEvent
from txbroker.transitions import (
    message_check_skipped,
    message_commit,
    message_discard,
    message_postpone,
    message_rollback,
    messages_claim_for_check,
)

logger = logging.getLogger("txbroker.grpc")

PRODUCER = GrpcClient.Kind.PRODUCER


@dataclass(frozen=True)
class Pending:
    """A check sent and not answered yet."""

    token: str
    check_times: int
    client_id: str
    sent_at: float  # time.monotonic()


class PendingChecks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_msg: dict[str, Pending] = {}

    def put(self, msg_id: str, pending: Pending) -> None:
        with self._lock:
            self._by_msg[msg_id] = pending

    def pop(self, msg_id: str) -> Pending | None:
        with self._lock:
            return self._by_msg.pop(msg_id, None)

    def overdue(self, timeout: float) -> list[tuple[str, Pending]]:
        """Remove and return the checks unanswered for ``timeout`` seconds."""
        now = time.monotonic()
        with self._lock:
            late = [(m, p) for m, p in self._by_msg.items() if now - p.sent_at > timeout]
            for msg_id, _ in late:
                del self._by_msg[msg_id]
        return late


PENDING = PendingChecks()


def answer(message: Message, resolution: int, who: Caller) -> bool:
    """A TransactionChecker's answer to a check this process sent: settle the message under
    that check's lease. False when this process sent no such check (or its lease is lost):
    the caller takes it as a late answer."""
    pending = PENDING.pop(message.msg_id)
    STREAMS.add_group(who.client_id, message.producer_group)  # it answers this group's checks
    if pending is None:
        return False
    elapsed_ms = (time.monotonic() - pending.sent_at) * 1000
    name = pb.TransactionResolution.Name(resolution).replace("TRANSACTION_RESOLUTION_UNSPECIFIED", "UNKNOWN")
    detail = f"{name} (gRPC client {who.client_id} at {who.address}, {elapsed_ms:.1f} ms)"
    return _settle(message, pending, resolution, detail)


def _settle(message: Message, pending: Pending, resolution: int, detail: str) -> bool:
    """``message``: the stored row (a commit creates its deliveries from its topic and tag)."""
    check_max = txsettings.CHECK_MAX
    event = TraceEvent(
        message_id=message.msg_id,
        event=TraceEvent.Event.CHECK,
        detail=f"check {pending.check_times}/{check_max}: {detail}",
    )
    settled = {"prelude": [event], "check_token": pending.token, "check_times": pending.check_times}
    if resolution == pb.TransactionResolution.COMMIT:
        outcome, moved = "COMMITTED", message_commit(message, by="check-back", **settled)
    elif resolution == pb.TransactionResolution.ROLLBACK:
        outcome, moved = "ROLLED_BACK", message_rollback(message, by="check-back", **settled)
    elif pending.check_times >= check_max:
        outcome, moved = "DISCARDED", message_discard(message, **settled)
    else:
        outcome, moved = "UNKNOWN", message_postpone(message, delay=txsettings.CHECK_INTERVAL, **settled)
    if moved:  # counted as the Celery pass's checks are (txbroker_checks, txbroker_discards)
        observe_check_pass({outcome: 1})
    return moved


def recover_command(message: Message) -> spb.TelemetryCommand:
    return spb.TelemetryCommand(
        recover_orphaned_transaction_command=spb.RecoverOrphanedTransactionCommand(
            message=message_pb(message), transaction_id=message.msg_id
        )
    )


def check_once() -> int:
    """Give up on overdue checks, then lease the due HALF messages of the producer groups
    this process streams to and send their checks; how many were sent."""
    timeout = txsettings.CHECK_TIMEOUT
    for msg_id, pending in PENDING.overdue(timeout):
        _settle(
            Message(msg_id=msg_id),  # UNKNOWN: postponed or discarded, never committed
            pending,
            pb.TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED,
            (f"UNKNOWN (gRPC client {pending.client_id} did not answer within {timeout:g} s)"),
        )
    groups = STREAMS.groups(PRODUCER)
    if not groups:
        return 0
    interval = txsettings.CHECK_INTERVAL
    token, batch = messages_claim_for_check(
        limit=txsettings.CHECK_BATCH_SIZE, lease=interval + timeout, producer_groups=groups
    )
    sent = 0
    for message in batch:
        stream = STREAMS.pick(message.producer_group, PRODUCER)
        if stream is not None:
            # Pending before it is sent: a quick answer must find it.
            pending = Pending(
                token=token,
                check_times=message.check_times + 1,
                client_id=stream.who.client_id,
                sent_at=time.monotonic(),
            )
            PENDING.put(message.msg_id, pending)
            if stream.send(recover_command(message)):
                sent += 1
                continue
            PENDING.pop(message.msg_id)
        message_check_skipped(
            message,
            token=token,
            delay=interval,
            detail=f"no live gRPC producer of group {message.producer_group!r} to ask; not counted",
        )
    return sent


class CheckLoop(threading.Thread):
    """Runs :func:`check_once` about every second until ``stop`` is set, and says every few
    seconds which clients' streams this process still holds."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(name="txbroker-grpc-checks", daemon=True)
        self.stop = stop
        self.streams_said_at = 0.0

    def run(self) -> None:
        while not self.stop.wait(max(0.2, min(1.0, txsettings.CHECK_INTERVAL))):
            try:
                if time.monotonic() - self.streams_said_at >= txsettings.GRPC_CLIENT_TIMEOUT / 3:
                    clients.streams_held(STREAMS.client_ids())
                    self.streams_said_at = time.monotonic()
                check_once()
            except Exception:
                logger.exception("gRPC check-back pass failed; the next one retries")
                recover_connections()
            finally:
                close_old_connections()
