"""The value objects of txbroker's public API."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Optional, Union

from txbroker.exceptions import ConfigurationError
from txbroker.models import LocalTransactionState, Message


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to send: topic, one tag, business keys, a JSON body, user properties.

    ``check_immunity_seconds`` delays the first check-back of this message (RocketMQ's
    CHECK_IMMUNITY_TIME_IN_SECONDS) and overrides TXBROKER_TRANSACTION_TIMEOUT.

    ``message_group`` makes it an ordered message: per consumer group, the messages of one
    group are delivered one at a time, in the order they were committed. ``deliver_at``
    (an aware datetime) or ``delay`` (a timedelta or seconds, counted from the send by the
    database's clock) makes it a delayed message: no delivery before then.
    """

    topic: str
    body: Any
    tag: str = ""
    keys: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    check_immunity_seconds: Optional[float] = None
    message_group: str = ""
    deliver_at: Optional[datetime] = None
    delay: Union[timedelta, float, None] = None

    def __post_init__(self) -> None:
        if self.deliver_at is not None and self.delay is not None:
            raise ConfigurationError("give a message deliver_at or delay, not both")
        if self.deliver_at is not None and self.deliver_at.tzinfo is None:
            raise ConfigurationError("deliver_at must be an aware datetime (with a time zone)")
        if self.delay is not None and self.delay_seconds < 0:
            raise ConfigurationError(f"delay must not be negative (got {self.delay!r})")
        if not isinstance(self.message_group, str) or len(self.message_group) > 255:
            raise ConfigurationError("message_group must be a string of at most 255 characters")
        if isinstance(self.keys, str):  # "k1 k2", as RocketMQ writes keys
            object.__setattr__(self, "keys", tuple(self.keys.split()))
        else:
            object.__setattr__(self, "keys", tuple(str(k) for k in self.keys))

    @property
    def delay_seconds(self) -> Optional[float]:
        if self.delay is None:
            return None
        return self.delay.total_seconds() if isinstance(self.delay, timedelta) else float(self.delay)


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
    message_group: str = ""
    deliver_at: Optional[datetime] = None

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
            message_group=message.message_group,
            deliver_at=message.deliver_at,
            **extra,
        )

    @property
    def key(self) -> Optional[str]:
        """The first business key (most messages carry one)."""
        return self.keys[0] if self.keys else None

    @property
    def body_bytes(self) -> bytes:
        """The body as bytes: exactly what a RocketMQ client sent over gRPC (whose body
        is JSON when it was JSON text, else ``{"$bytes": "<base64>"}``; see
        txbroker.grpcapi.bodies), or a Django producer's body as compact UTF-8 JSON."""
        from txbroker.grpcapi.bodies import to_bytes

        return to_bytes(self.body, self.properties)


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
