"""The value objects of txbroker's public API."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Optional

from txbroker.models import LocalTransactionState, Message


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send: topic, one tag, business keys, a JSON body, user properties.

    ``check_immunity_seconds`` delays the first check-back of this message (RocketMQ's
    CHECK_IMMUNITY_TIME_IN_SECONDS) and overrides TXBROKER_TRANSACTION_TIMEOUT.
    """

    topic: str
    body: Any
    tag: str = ""
    keys: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    check_immunity_seconds: Optional[float] = None

    def __post_init__(self) -> None:
        if isinstance(self.keys, str):  # "k1 k2", as RocketMQ writes keys
            object.__setattr__(self, "keys", tuple(self.keys.split()))
        else:
            object.__setattr__(self, "keys", tuple(str(k) for k in self.keys))


@dataclass(frozen=True)
class MessageView:
    """A stored message as checkers and local transactions see it."""

    msg_id: str
    topic: str
    tag: str
    keys: tuple[str, ...]
    body: Any
    properties: dict[str, str]
    producer_group: str
    created_at: datetime
    check_times: int = 0

    @classmethod
    def of(cls, message: Message, **extra: Any) -> MessageView:
        """The view of a stored message (``extra``: a subclass's own fields)."""
        return cls(
            msg_id=message.msg_id,
            topic=message.topic,
            tag=message.tag,
            keys=tuple(message.keys),
            body=message.body,
            properties=dict(message.properties),
            producer_group=message.producer_group,
            created_at=message.created_at,
            check_times=message.check_times,
            **extra,
        )

    @property
    def key(self) -> Optional[str]:
        """The first business key (most messages carry one)."""
        return self.keys[0] if self.keys else None


@dataclass(frozen=True)
class ConsumedMessage(MessageView):
    """A committed message as a consumer's handler sees it."""

    consumer_group: str = ""
    reconsume_times: int = 0


@dataclass(frozen=True)
class StoredMessage(MessageView):
    """A stored message and its state, as ``messages_with_key`` finds it."""

    state: str = ""  # HALF, COMMITTED, ROLLED_BACK or DISCARDED

    @classmethod
    def of(cls, message: Message) -> StoredMessage:
        view = MessageView.of(message)
        return cls(**{f.name: getattr(view, f.name) for f in fields(MessageView)}, state=message.state)


@dataclass(frozen=True)
class SendResult:
    """What ``send_message_in_transaction`` returns."""

    msg_id: str
    local_transaction_state: LocalTransactionState
    # The message's state once the producer reported (COMMITTED, ROLLED_BACK, or HALF when
    # the answer was UNKNOWN, or when a check-back had already settled it otherwise).
    message_state: str
