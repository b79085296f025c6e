"""The payments app's errors, each with the answer the API gives for it (see
``config.errors.DomainError``), and their messages."""

from __future__ import annotations

from rest_framework import status

from config.errors import ConflictError, DomainError, NotFoundError

PAYMENT_ORDER_NOT_FOUND = "order not found"
PAYMENT_AMOUNT_MISMATCH = "does not match the order amount {expected}"
PAYMENT_NOT_PAYABLE = "the order is {status}: only a CREATED order can be paid"
PAYMENT_IN_PROGRESS = "a payment for this order is in progress; retry later"
PAYMENT_GATEWAY_FAILED = "the payment gateway failed: {reason}"
PAYMENT_NOT_RECORDED = (
    "the payment could not be recorded (the order changed, or its check-back gave up on it); "
    "the charge is marked for refund"
)
PAYMENT_UNAVAILABLE = "the payment could not be completed; the charge is marked for refund"
PAYMENT_INSIDE_ATOMIC = (
    "payment_pay() was called inside transaction.atomic(): call it outside any transaction "
    "(its claim, its message and its local transaction each commit on their own)"
)


class PaymentError(DomainError):
    """Base class of the payments app's errors."""


class PaymentOrderNotFound(PaymentError, NotFoundError):
    pass


class PaymentAmountMismatch(PaymentError):
    """400 naming the amount field: ``{"amount": ["..."]}``."""

    field = "amount"


class PaymentNotPayable(PaymentError, ConflictError):
    pass


class PaymentInProgress(PaymentNotPayable):
    pass


class PaymentNotRecorded(PaymentNotPayable):
    pass


class PaymentDeclined(PaymentError):
    status_code = status.HTTP_402_PAYMENT_REQUIRED
    code = "payment_declined"


class PaymentGatewayFailed(PaymentError):
    status_code = status.HTTP_502_BAD_GATEWAY
    code = "bad_gateway"


class PaymentUnavailable(PaymentError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


REFUND_NOT_PAID = "the order has no recorded payment to refund"
REFUND_IN_PROGRESS = "the order is being refunded (or its payment is still being recorded); retry later"
REFUND_NOT_ABANDONED = "only an ABANDONED charge can be refunded this way (it is {status})"


class RefundNotRefundable(PaymentError, ConflictError):
    pass


class RefundInProgress(RefundNotRefundable):
    pass
