"""The payment producer group and its checker. Autodiscovered by txbroker in every
process, so that any of them can answer a check-back of a payment message."""

from __future__ import annotations

from payments.recording import payment_check_transaction
from payments.refunds import PAYMENT_PRODUCER_GROUP, REFUND_PRODUCER_GROUP, refund_check_transaction
from txbroker import TransactionProducer

PRODUCER_GROUP = PAYMENT_PRODUCER_GROUP

payment_producer = TransactionProducer(PRODUCER_GROUP, checker=payment_check_transaction)
# A producer group serves one kind of transactional message: refunds have their own.
refund_producer = TransactionProducer(REFUND_PRODUCER_GROUP, checker=refund_check_transaction)
