"""SMS backends for tests."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from notifications.backends import FileSmsBackend, SmsError, SmsRejected

# Fail the first N sends to each recipient (counted in a file, so across worker processes).
FLAKY_FAILURES_ENV = "FLAKY_SMS_FAILURES"


class FlakyFileSmsBackend(FileSmsBackend):
    def send(self, *, to: str, text: str) -> str:
        failures = int(os.environ.get(FLAKY_FAILURES_ENV, "0"))
        attempts = Path(f"{self.path}.attempts")
        with open(attempts, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            earlier = handle.read().split().count(to)
            handle.write(to + "\n")
        if earlier < failures:
            raise SmsError(f"provider unavailable (planned failure {earlier + 1} of {failures})")
        return super().send(to=to, text=text)


class RejectingSmsBackend(FileSmsBackend):
    def send(self, *, to: str, text: str) -> str:
        raise SmsRejected(f"number {to} rejected by the provider")
