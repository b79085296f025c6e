"""txbroker: RocketMQ-style transactional messages on Django, with the database as the
source of truth and Celery as the fast path.

Producer side::

    producer = TransactionProducer("payment_producer_group", checker=check_payment)
    result = producer.send_message_in_transaction(
        OutgoingMessage(topic="payment_success_topic", tag="pay", keys=[order_id], body={...}),
        record_payment,  # the local transaction: (MessageView, arg) -> LocalTransactionState
        arg,
    )

Consumer side::

    @consumer(topic="payment_success_topic", group="order_consumer_group", tags="pay")
    def mark_order_paid(message: ConsumedMessage) -> None: ...

Everything not re-exported here is internal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

__all__ = [
    "ConsumedMessage",
    "LocalTransactionState",
    "MessageView",
    "OutgoingMessage",
    "SendResult",
    "StoredMessage",
    "TransactionProducer",
    "consumer",
    "message_trace",
    "messages_with_key",
    "replay",
    "resume",
]

if TYPE_CHECKING:
    from txbroker.models import LocalTransactionState
    from txbroker.producer import TransactionProducer
    from txbroker.types import ConsumedMessage, MessageView, OutgoingMessage, SendResult, StoredMessage


def __getattr__(name: str) -> Any:
    # Lazy so that importing txbroker (e.g. in settings) never touches models too early.
    if name == "LocalTransactionState":
        from txbroker.models import LocalTransactionState

        return LocalTransactionState
    if name == "TransactionProducer":
        from txbroker.producer import TransactionProducer

        return TransactionProducer
    if name in {"ConsumedMessage", "MessageView", "OutgoingMessage", "SendResult", "StoredMessage"}:
        from txbroker import types

        return getattr(types, name)
    if name in {"replay", "resume", "message_trace"}:
        from txbroker import operations

        return getattr(operations, name)
    if name == "messages_with_key":
        from txbroker.selectors import messages_with_key

        return messages_with_key
    raise AttributeError(f"module 'txbroker' has no attribute {name!r}")


def consumer(
    *, topic: str, group: str, tags: str = "*", max_reconsume_times: Optional[int] = None
) -> Callable:
    """Register the decorated function as ``group``'s handler for ``topic``.

    ``tags`` is RocketMQ's tag expression: ``"*"``, ``"pay"`` or ``"pay || refund"``. The
    handler runs in one database transaction with the delivery's move to SUCCEEDED; raising
    means failure: the delivery is retried at TXBROKER_RETRY_DELAYS, and DEAD after
    ``max_reconsume_times`` retries (default TXBROKER_MAX_RECONSUME_TIMES).
    """
    from txbroker.registry import registry

    def register(handler: Callable) -> Callable:
        registry.register_consumer(
            topic=topic, group=group, handler=handler, tags=tags, max_reconsume_times=max_reconsume_times
        )
        return handler

    return register
