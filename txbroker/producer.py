"""The two-phase send: half message, local transaction, end of transaction."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Optional

from django.db import transaction
from django.utils import timezone

from txbroker import fastpath
from txbroker.conf import txsettings
from txbroker.exceptions import ConfigurationError
from txbroker.faults import fault_point
from txbroker.models import LocalTransactionState, Message, MessageKey, TraceEvent
from txbroker.registry import Checker, registry
from txbroker.transitions import broker_db, message_commit, message_rollback, trace_many
from txbroker.types import MessageView, OutgoingMessage, SendResult

logger = logging.getLogger("txbroker")

LocalTransaction = Callable[[MessageView, Any], LocalTransactionState]

TRACEBACK_LIMIT = 4000


def trimmed_traceback(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= TRACEBACK_LIMIT else "...\n" + text[-TRACEBACK_LIMIT:]


def as_state(answer: Any) -> Optional[LocalTransactionState]:
    """A checker's or local transaction's answer, or None when it is not one."""
    try:
        return LocalTransactionState(answer)
    except ValueError:
        return None


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
        be called inside ``transaction.atomic`` on txbroker's database. An exception or an
        answer that is not a ``LocalTransactionState`` counts as UNKNOWN: the message stays
        HALF and check-back settles it.
        """
        db = broker_db()
        if transaction.get_connection(db).in_atomic_block:
            raise ConfigurationError(
                "send_message_in_transaction() was called inside transaction.atomic(): the "
                "half message must be committed before the local transaction runs. Call it "
                "outside any atomic block and let the local transaction open its own."
            )
        stored = self._store_half(message)
        fault_point("after_half_stored")

        view = MessageView.of(stored)
        state, detail = self._run_local_transaction(view, local_transaction, arg)
        fault_point("after_local_transaction")

        answer = TraceEvent(message_id=stored.msg_id, event=TraceEvent.Event.LOCAL_TRANSACTION, detail=detail)
        if state == LocalTransactionState.COMMIT:
            done = message_commit(stored, by="producer", prelude=[answer])
            final = Message.State.COMMITTED if done else self._state_of(stored.msg_id)
        elif state == LocalTransactionState.ROLLBACK:
            done = message_rollback(stored, by="producer", prelude=[answer])
            final = Message.State.ROLLED_BACK if done else self._state_of(stored.msg_id)
        else:
            trace_many([answer])
            final = self._state_of(stored.msg_id)
        return SendResult(msg_id=stored.msg_id, local_transaction_state=state, message_state=final)

    def _store_half(self, message: OutgoingMessage) -> Message:
        db = broker_db()
        now = timezone.now()
        immunity = (
            message.check_immunity_seconds
            if message.check_immunity_seconds is not None
            else txsettings.TRANSACTION_TIMEOUT
        )
        stored = Message(
            topic=message.topic,
            tag=message.tag,
            keys=list(message.keys),
            body=message.body,
            properties=dict(message.properties),
            producer_group=self.producer_group,
            state=Message.State.HALF,
            created_at=now,
            next_check_at=now + timedelta(seconds=immunity),
        )
        keys = [MessageKey(message_id=stored.msg_id, key=key) for key in dict.fromkeys(message.keys)]
        stored_event = TraceEvent(
            message_id=stored.msg_id,
            event=TraceEvent.Event.HALF_STORED,
            detail=f"producer group {self.producer_group}; first check after {immunity:g}s",
        )
        # One statement on PostgreSQL (see txbroker.fastpath); the same three INSERTs in
        # one transaction elsewhere.
        if not fastpath.store_half(db, stored, keys, stored_event):
            with transaction.atomic(using=db):
                stored.save(using=db, force_insert=True)
                MessageKey.objects.using(db).bulk_create(keys)
                stored_event.save(using=db, force_insert=True)
        stored._state.adding = False
        stored._state.db = db
        return stored

    @staticmethod
    def _run_local_transaction(
        view: MessageView, local_transaction: LocalTransaction, arg: Any
    ) -> tuple[LocalTransactionState, str]:
        try:
            answer = local_transaction(view, arg)
        except Exception as exc:
            logger.exception("local transaction of message %s raised", view.msg_id)
            return LocalTransactionState.UNKNOWN, "UNKNOWN (raised)\n" + trimmed_traceback(exc)
        state = as_state(answer)
        if state is None:
            return LocalTransactionState.UNKNOWN, f"UNKNOWN (no answer: returned {answer!r})"
        return state, state.value

    @staticmethod
    def _state_of(msg_id: str) -> str:
        return Message.objects.using(broker_db()).values_list("state", flat=True).get(pk=msg_id)
