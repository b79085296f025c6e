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

Plain messages in the caller's transaction (the outbox pattern), delayed and ordered::

    with transaction.atomic():
        Order.objects.create(...)
        Producer("order_producer_group").send(
            OutgoingMessage(topic="order_topic", body={...}, message_group=order_id, delay=60)
        )

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
    "Producer",
    "SendResult",
    "StoredMessage",
    "TransactionProducer",
    "consumer",
    "message_trace",
    "messages_with_key",
    "recall",
    "replay",
    "resume",
    "skip",
]

if TYPE_CHECKING:
    from txbroker.models import LocalTransactionState
    from txbroker.producer import Producer, TransactionProducer
    from txbroker.types import ConsumedMessage, MessageView, OutgoingMessage, SendResult, StoredMessage


def __getattr__(name: str) -> Any:
    # Lazy so that importing txbroker (e.g. in settings) never touches models too early.
    if name == "LocalTransactionState":
        from txbroker.models import LocalTransactionState

        return LocalTransactionState
    if name in {"Producer", "TransactionProducer"}:
        from txbroker import producer

        return getattr(producer, name)
    if name in {"ConsumedMessage", "MessageView", "OutgoingMessage", "SendResult", "StoredMessage"}:
        from txbroker import types

        return getattr(types, name)
    if name in {"recall", "replay", "resume", "skip", "message_trace"}:
        from txbroker import operations

        return getattr(operations, name)
    if name == "messages_with_key":
        from txbroker.selectors import messages_with_key

        return messages_with_key
    raise AttributeError(f"module 'txbroker' has no attribute {name!r}")


def consumer(
    *,
    topic: str,
    group: str,
    tags: str = "*",
    max_reconsume_times: Optional[int] = None,
    on_dead_in_group: str = "skip",
) -> Callable:
    """Register the decorated function as ``group``'s handler for ``topic``.

    ``tags`` is RocketMQ's tag expression: ``"*"``, ``"pay"`` or ``"pay || refund"``. The
    handler runs in one database transaction with the delivery's move to SUCCEEDED; raising
    means failure: the delivery is retried at TXBROKER_RETRY_DELAYS, and DEAD after
    ``max_reconsume_times`` retries (default TXBROKER_MAX_RECONSUME_TIMES).

    Ordered messages (those with a ``message_group``) run one at a time per message group,
    in commit order. ``on_dead_in_group`` says what happens when one goes DEAD: ``"skip"``
    (the group goes on; the dead letter stays visible) or ``"block"`` (the group waits for
    an operator's replay or skip).
    """
    from txbroker.registry import registry

    def register(handler: Callable) -> Callable:
        registry.register_consumer(
            topic=topic,
            group=group,
            handler=handler,
            tags=tags,
            max_reconsume_times=max_reconsume_times,
            on_dead_in_group=on_dead_in_group,
        )
        return handler

    return register
