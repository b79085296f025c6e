"""The orders app's errors, each with the answer the API gives for it (see
``config.errors.DomainError``), and their messages."""

from __future__ import annotations

from config.errors import ConflictError, DomainError, NotFoundError

ORDER_NOT_FOUND = "order not found"
ORDER_ID_TAKEN = (
    "this order_id is taken: order ids are unique across all users' orders; "
    "choose another, or omit order_id to get a generated one"
)
ORDER_NOT_CANCELLABLE = "only a CREATED order can be cancelled; this one is {status}"
ORDER_PAYMENT_STARTED = "a payment for this order has started or succeeded: it can no longer be cancelled"
ORDER_MISSING_FOR_PAYMENT = "order {order_id} does not exist: the payment cannot be applied to it"
ORDER_CANCELLED_BUT_PAID = (
    "order {order_id} is CANCELLED but a payment for it succeeded: this breaks the cancel rule "
    "and needs an operator (refund or reopen)"
)

ORDER_NOT_PAID_FOR_REFUND = "order {order_id} is {status}: a refund applies to a PAID order only"


class OrderError(DomainError):
    """Base class of the orders app's errors."""


class OrderNotFound(OrderError, NotFoundError):
    pass


class OrderIdTaken(OrderError, ConflictError):
    """409 naming the order_id field: ``{"order_id": ["..."]}``."""

    field = "order_id"


class OrderNotCancellable(OrderError, ConflictError):
    pass


class OrderNotPayable(OrderError, ConflictError):
    """A payment message for an order that cannot take it (the consumer's error: retried,
    then dead-lettered)."""
