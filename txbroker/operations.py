"""Operator actions, shared by the admin, the REST API and the commands. Each records who
did it in the message's trace."""

from __future__ import annotations

from typing import Optional

from txbroker import delivery
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.models import Message, TraceEvent
from txbroker.transitions import broker_db, message_commit, message_resume, message_rollback


def get_message(msg_id: str) -> Message:
    try:
        return Message.objects.using(broker_db()).get(pk=msg_id)
    except Message.DoesNotExist:
        raise MessageNotFound(f"no message with id {msg_id!r}") from None


def replay(msg_id: str, *, group: Optional[str] = None, force: bool = False, actor: str = "") -> int:
    """Re-deliver a committed message to one consumer group or all: DEAD and RETRY
    deliveries become due now, SUCCEEDED ones only with ``force``. Returns the count."""
    message = get_message(msg_id)
    if message.state != Message.State.COMMITTED:
        raise InvalidTransition(f"message {msg_id} is {message.state}; only COMMITTED messages are delivered")
    if group is not None and not message.deliveries.filter(consumer_group=group).exists():
        raise InvalidTransition(f"message {msg_id} has no delivery to consumer group {group!r}")
    return delivery.replay(msg_id, group=group, force=force, actor=actor)


def resume(msg_id: str, *, actor: str = "") -> None:
    """Resume checking a DISCARDED message (its check count starts again at 0)."""
    get_message(msg_id)
    if not message_resume(msg_id, actor=actor):
        raise InvalidTransition(f"message {msg_id} is not DISCARDED; only DISCARDED messages resume")


def resolve(msg_id: str, *, commit: bool, actor: str = "") -> None:
    """Commit or roll back a HALF message by hand."""
    message = get_message(msg_id)
    settle = message_commit if commit else message_rollback
    if not settle(message, by="operator", actor=actor):
        raise InvalidTransition(f"message {msg_id} is not HALF; only HALF messages can be settled by hand")


def message_trace(msg_id: str) -> list[TraceEvent]:
    """The message's trace, in order."""
    get_message(msg_id)
    return list(TraceEvent.objects.using(broker_db()).filter(message_id=msg_id).order_by("id"))
