"""Producer programs for crash tests, run in a child process that the test kills."""

from __future__ import annotations

import time

from django.db import transaction

from txbroker import LocalTransactionState
from txbroker.tests.helpers import send

from .models import LocalRecord


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
