"""SMS backends, pluggable like Django's EMAIL_BACKEND: ``NOTIFICATIONS_SMS_BACKEND``
names the class.

``send()`` returns the provider's message id. It raises :class:`SmsRejected` when the
provider refuses the message for good (a bad number: recorded FAILED, not retried), and
any other exception for a failure worth retrying (the delivery is retried).
"""

from __future__ import annotations

import fcntl
import json
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

DEFAULT_BACKEND = "notifications.backends.ConsoleSmsBackend"


class SmsError(Exception):
    """Sending failed; worth retrying."""


class SmsRejected(SmsError):
    """The provider refuses this message for good."""


@dataclass(frozen=True)
class Sms:
    provider_id: str
    to: str
    text: str
    sent_at: str


class SmsBackend:
    def send(self, *, to: str, text: str) -> str:
        raise NotImplementedError

    @staticmethod
    def _new(to: str, text: str) -> Sms:
        return Sms(provider_id=uuid.uuid4().hex, to=to, text=text, sent_at=timezone.now().isoformat())


class ConsoleSmsBackend(SmsBackend):
    """Writes each SMS to stdout (the worker's log)."""

    def send(self, *, to: str, text: str) -> str:
        sms = self._new(to, text)
        sys.stdout.write(f"[SMS {sms.provider_id}] to {to}: {text}\n")
        sys.stdout.flush()
        return sms.provider_id


class InMemorySmsBackend(SmsBackend):
    """Keeps each SMS in ``InMemorySmsBackend.outbox`` (this process only): for tests."""

    outbox: ClassVar[list[Sms]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def send(self, *, to: str, text: str) -> str:
        sms = self._new(to, text)
        with self._lock:
            self.outbox.append(sms)
        return sms.provider_id

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.outbox.clear()


class FileSmsBackend(SmsBackend):
    """Appends each SMS as one JSON line to ``NOTIFICATIONS_SMS_FILE_PATH`` (locked, so
    several worker processes can share the file)."""

    def __init__(self) -> None:
        self.path = Path(settings.NOTIFICATIONS_SMS_FILE_PATH)

    def send(self, *, to: str, text: str) -> str:
        sms = self._new(to, text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(json.dumps(asdict(sms)) + "\n")
            handle.flush()
        return sms.provider_id

    @staticmethod
    def read(path: Path) -> list[Sms]:
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [Sms(**json.loads(line)) for line in lines if line.strip()]


def get_sms_backend() -> SmsBackend:
    return import_string(getattr(settings, "NOTIFICATIONS_SMS_BACKEND", DEFAULT_BACKEND))()
