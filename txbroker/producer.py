"""The two-phase send (half message, local transaction, end of transaction), and the plain
send inside the caller's transaction (the outbox pattern)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Optional

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction

from txbroker import dbtime, fastpath, tracing
from txbroker.conf import txsettings
from txbroker.db import broker_db, recover_connections
from txbroker.exceptions import ConfigurationError
from txbroker.faults import fault_point
from txbroker.models import LocalTransactionState, Message, MessageKey, TraceEvent
from txbroker.registry import Checker, registry
from txbroker.trace import trace_many, trimmed_traceback
from txbroker.transitions import message_commit, message_rollback, message_send_committed
from txbroker.types import MessageView, OutgoingMessage, SendResult

logger = logging.getLogger("txbroker")

LocalTransaction = Callable[[MessageView, Any], LocalTransactionState]

# How long a producer keeps retrying the end of its transaction on a new database session.
END_TRANSACTION_RETRY_SECONDS = 3.0


def producer_identity() -> str:
    """``host:pid`` of this process, in the HALF_STORED trace row: who to ask, or look
    for, when a message stays HALF."""
    return f"{socket.gethostname()}:{os.getpid()}"


def as_state(answer: Any) -> Optional[LocalTransactionState]:
    """A checker's or local transaction's answer, or None when it is not one."""
    try:
        return LocalTransactionState(answer)
    except ValueError:
        return None


def atomic_aliases() -> list[str]:
    """The databases on which this thread is inside ``transaction.atomic()``: txbroker's,
    the default one (where local transactions usually write), and any other open one (a
    local transaction may write anywhere). On any of them the local transaction would
    become a savepoint of the caller's transaction: the message would commit and the
    caller could still roll back what it announces."""
    aliases = {broker_db(), DEFAULT_DB_ALIAS, *(c.alias for c in connections.all(initialized_only=True))}
    return sorted(alias for alias in aliases if connections[alias].in_atomic_block)


def new_message(
    message: OutgoingMessage, producer_group: str, state: str, *, msg_id: Optional[str] = None
) -> Message:
    """The (unsaved) row of an outgoing message. A ``delay`` counts from now by the
    database's clock; ``msg_id``: the id its sender gave it, else a new one."""
    deliver_at = message.deliver_at
    if message.delay is not None:
        deliver_at = dbtime.read(broker_db()) + timedelta(seconds=message.delay_seconds)
    extra = {"msg_id": msg_id} if msg_id else {}
    return Message(
        **extra,
        topic=message.topic,
        tag=message.tag,
        keys=list(message.keys),
        body=message.body,
        # The producer's trace context (traceparent, ...) when tracing is on.
        properties=tracing.inject(dict(message.properties)),
        producer_group=producer_group,
        state=state,
        message_group=message.message_group,
        deliver_at=deliver_at,
    )


def store_half(
    message: OutgoingMessage, producer_group: str, identity: str, *, msg_id: Optional[str] = None
) -> Message:
    """Store ``message`` HALF for ``producer_group`` (committed at once, on its own), its
    first check due after its check immunity (or TXBROKER_TRANSACTION_TIMEOUT) by the
    database's clock; ``identity``: who sent it, for the trace; ``msg_id``: the id the
    sender gave it (a RocketMQ client's), else a new one."""
    db = broker_db()
    immunity = (
        message.check_immunity_seconds
        if message.check_immunity_seconds is not None
        else txsettings.TRANSACTION_TIMEOUT
    )
    stored = new_message(message, producer_group, Message.State.HALF, msg_id=msg_id)
    keys = [MessageKey(message_id=stored.msg_id, key=key) for key in dict.fromkeys(message.keys)]
    stored_event = TraceEvent(
        message_id=stored.msg_id,
        event=TraceEvent.Event.HALF_STORED,
        detail=f"producer group {producer_group} ({identity}); first check after {immunity:g}s",
    )
    # One statement on PostgreSQL (see txbroker.fastpath); the same three INSERTs in
    # one transaction elsewhere. The first check is due ``immunity`` seconds after the
    # database's clock, never this host's.
    times = fastpath.store_half(db, stored, keys, stored_event, immunity=immunity)
    if times is not None:
        stored.created_at, stored.next_check_at = times
    else:
        with transaction.atomic(using=db):
            stored.next_check_at = dbtime.after(immunity)
            stored.save(using=db, force_insert=True)
            MessageKey.objects.using(db).bulk_create(keys)
            stored_event.save(using=db, force_insert=True)
        stored.refresh_from_db(using=db, fields=["created_at", "next_check_at"])
    stored._state.adding = False
    stored._state.db = db
    return stored


class Producer:
    """A producer of plain messages for one producer group: :meth:`send` stores a message
    inside the caller's transaction (the outbox pattern), so it commits and rolls back with
    the caller's own writes. No checker: there is no half message to ask about."""

    def __init__(self, producer_group: str) -> None:
        self.producer_group = producer_group

    def send(self, message: OutgoingMessage) -> str:
        """Store ``message`` COMMITTED in the caller's ``transaction.atomic()`` on txbroker's
        database and return its id. Consumers see it exactly when that transaction commits
        (workers are woken then); a rollback takes it away. Raises ConfigurationError
        outside an atomic block: the message would commit on its own, which is what the
        two-phase send is for."""
        db = broker_db()
        if not connections[db].in_atomic_block:
            raise ConfigurationError(
                f"Producer.send() must be called inside transaction.atomic(using={db!r}): the message "
                "commits with the caller's transaction. Outside one, use "
                "TransactionProducer.send_message_in_transaction()."
            )
        with tracing.producing(message, self.producer_group, transactional=False) as span:
            stored = new_message(message, self.producer_group, Message.State.COMMITTED)
            tracing.identify(span, stored.msg_id)
            keys = [MessageKey(message_id=stored.msg_id, key=key) for key in dict.fromkeys(message.keys)]
            message_send_committed(
                stored, keys, producer_group=self.producer_group, identity=producer_identity()
            )
        return stored.msg_id


class TransactionProducer:
    """A producer of transactional messages for one producer group.

    Creating it registers ``checker`` for the group, so that any process of the project can
    answer a check-back. Create producers at import time (module level), so that every
    process that imports the module knows the checker.
    """

    def __init__(self, producer_group: str, *, checker: Checker) -> None:
        self.producer_group = producer_group
        self.checker = checker
        registry.register_checker(producer_group, checker)

    def send_message_in_transaction(
        self, message: OutgoingMessage, local_transaction: LocalTransaction, arg: Any = None
    ) -> SendResult:
        """Store ``message`` as a half message, run ``local_transaction(message, arg)``,
        then commit or roll back the message by its answer.

        The half message is committed before the local transaction runs, so this must not
        be called inside ``transaction.atomic`` on any database (txbroker's, or one the local
        transaction writes to: see :func:`atomic_aliases`). An exception or an
        answer that is not a ``LocalTransactionState`` counts as UNKNOWN: the message stays
        HALF and check-back settles it.
        """
        inside = atomic_aliases()
        if inside:
            raise ConfigurationError(
                "send_message_in_transaction() was called inside transaction.atomic() on "
                f"database {', '.join(repr(a) for a in inside)}: the half message must be committed "
                "before the local transaction runs, and the local transaction must commit on its "
                "own. Call it outside any atomic block and let the local transaction open its own."
            )
        with tracing.producing(message, self.producer_group, transactional=True) as span:
            stored = self._store_half(message)
            tracing.identify(span, stored.msg_id)
            fault_point("after_half_stored")

            view = MessageView.of(stored)
            state, detail = self._run_local_transaction(view, local_transaction, arg)
            fault_point("after_local_transaction")

            final = self._end_transaction(stored, state, detail)
            tracing.identify(span, stored.msg_id, **{"txbroker.local_transaction.state": state.value})
            tracing.outcome(span, final)
        return SendResult(msg_id=stored.msg_id, local_transaction_state=state, message_state=final)

    def _end_transaction(self, stored: Message, state: LocalTransactionState, detail: str) -> str:
        """Commit or roll back by the answer (record UNKNOWN), and return the message's
        state. A lost database session (a restart, a cut connection) is retried on a new
        one for a few seconds, well within the transaction timeout: each step is a
        conditional UPDATE, so a retry after a move that did commit is refused and
        changes nothing."""
        deadline = time.monotonic() + END_TRANSACTION_RETRY_SECONDS
        pause = 0.1
        while True:
            answer = TraceEvent(
                message_id=stored.msg_id, event=TraceEvent.Event.LOCAL_TRANSACTION, detail=detail
            )
            try:
                if state == LocalTransactionState.COMMIT:
                    done = message_commit(stored, by="producer", prelude=[answer])
                    return Message.State.COMMITTED if done else self._state_of(stored.msg_id)
                if state == LocalTransactionState.ROLLBACK:
                    done = message_rollback(stored, by="producer", prelude=[answer])
                    return Message.State.ROLLED_BACK if done else self._state_of(stored.msg_id)
                trace_many([answer])
                return self._state_of(stored.msg_id)
            except (OperationalError, InterfaceError):
                if time.monotonic() + pause > deadline:
                    raise
                logger.warning(
                    "message %s: the database session was lost while ending its transaction (%s); "
                    "retrying on a new one",
                    stored.msg_id,
                    state.value,
                )
                recover_connections()
                time.sleep(pause)
                pause *= 2

    def _store_half(self, message: OutgoingMessage) -> Message:
        return store_half(message, self.producer_group, producer_identity())

    @staticmethod
    def _run_local_transaction(
        view: MessageView, local_transaction: LocalTransaction, arg: Any
    ) -> tuple[LocalTransactionState, str]:
        try:
            answer = local_transaction(view, arg)
        except Exception as exc:
            logger.exception("local transaction of message %s raised", view.msg_id)
            # A session the database ended (this process froze past
            # idle_in_transaction_session_timeout, or the server restarted) is useless now:
            # let the end of the transaction open a new one.
            recover_connections()
            return LocalTransactionState.UNKNOWN, "UNKNOWN (raised)\n" + trimmed_traceback(exc)
        state = as_state(answer)
        if state is None:
            return LocalTransactionState.UNKNOWN, f"UNKNOWN (no answer: returned {answer!r})"
        return state, state.value

    @staticmethod
    def _state_of(msg_id: str) -> str:
        return Message.objects.using(broker_db()).values_list("state", flat=True).get(pk=msg_id)
