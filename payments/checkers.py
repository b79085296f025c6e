"""The payment producer group and its checker. Autodiscovered by txbroker in every
process, so that any of them can answer a check-back of a payment message."""

from __future__ import annotations

from payments.recording import payment_check_transaction
from txbroker import TransactionProducer

PRODUCER_GROUP = "payment_producer_group"

payment_producer = TransactionProducer(PRODUCER_GROUP, checker=payment_check_transaction)
