"""Producer programs for crash tests, run in a child process that the test kills."""

from __future__ import annotations

import time

from django.db import transaction

from txbroker import LocalTransactionState
from txbroker.tests.helpers import send

from .models import LocalRecord, Plan


def _hang() -> None:
    while True:  # until the test kills this process
        time.sleep(0.05)


def send_and_hang(key: str, phase: str) -> None:
    """``phase="before_local"``: hang after the half message is stored, before the local
    transaction writes anything. ``phase="after_local"``: hang after the local transaction
    committed, before the producer reports."""

    def local(message, arg):
        if phase == "before_local":
            _hang()
        with transaction.atomic():
            LocalRecord.objects.create(key=message.key)
        _hang()
        return LocalTransactionState.COMMIT

    send(key, tag="pay", local=local)


def send_plain(key: str, count: int = 1) -> None:
    for i in range(count):
        send(f"{key}-{i}" if count > 1 else key, tag="pay")


def send_and_stall(key: str, seconds: float) -> None:
    """The local transaction locks the key's plan row (as payments lock the order), writes
    the record, notes that it is inside its transaction, then stalls ``seconds`` before
    committing: a test freezes this process meanwhile. Prints the send result."""
    from .consumers import note_attempt

    def local(message, arg):
        with transaction.atomic():
            Plan.objects.select_for_update().filter(key=message.key).exists()
            LocalRecord.objects.create(key=message.key)
            note_attempt(message.key, "local")
            time.sleep(seconds)
        return LocalTransactionState.COMMIT

    result = send(key, tag="pay", local=local)
    print(f"result: {result.local_transaction_state.value} {result.message_state}", flush=True)
