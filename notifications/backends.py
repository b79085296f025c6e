"""SMS backends, pluggable like Django's EMAIL_BACKEND: ``NOTIFICATIONS_SMS_BACKEND``
names the class.

``send()`` returns the provider's message id. It raises :class:`SmsRejected` when the
provider refuses the message for good (a bad number: recorded FAILED, not retried), and
any other exception for a failure worth retrying (the delivery is retried).

The backends here are simulations (``simulated = True``): console, in-memory and file send
nothing. With DEBUG off they are refused (web, worker and beat do not start, ``check
--deploy`` reports an Error) unless NOTIFICATIONS_ALLOW_CONSOLE_SMS says the operator chose
one knowingly (tests, chaos and bench runs).
"""

from __future__ import annotations

import fcntl
import json
import sys
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Optional

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from notifications import conf

SIMULATED_SMS_REFUSED = (
    "NOTIFICATIONS_SMS_BACKEND is {backend}, a simulation that sends no SMS, and DJANGO_DEBUG "
    "is off: configure a real SMS provider, or set NOTIFICATIONS_ALLOW_CONSOLE_SMS=1 to run "
    "the simulation knowingly (tests, chaos and bench runs)."
)
SMS_BACKEND_NOT_IMPORTABLE = "NOTIFICATIONS_SMS_BACKEND {backend!r} cannot be imported: {error}"


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


def phone_masked(phone: str) -> str:
    """``+8613800138000`` -> ``+*********8000``: enough to tell numbers apart in a log, not
    to reach anyone (the last 4 digits of a long number, 2 of a short one)."""
    visible = 4 if len(phone) >= 10 else 2
    hidden = phone[:-visible] if len(phone) > visible else ""
    return "".join(c if c == "+" else "*" for c in hidden) + phone[len(hidden) :]


class SmsBackend:
    #: A simulation sends nothing: refused with DEBUG off unless NOTIFICATIONS_ALLOW_CONSOLE_SMS.
    simulated: ClassVar[bool] = False

    def send(self, *, to: str, text: str) -> str:
        raise NotImplementedError

    @staticmethod
    def _new(to: str, text: str) -> Sms:
        return Sms(provider_id=uuid.uuid4().hex, to=to, text=text, sent_at=timezone.now().isoformat())


class ConsoleSmsBackend(SmsBackend):
    """Writes each SMS to stdout (the process's log), the number masked. The text is
    written whole: a local run reads its phone verification code there."""

    simulated = True

    def send(self, *, to: str, text: str) -> str:
        sms = self._new(to, text)
        sys.stdout.write(f"[SMS {sms.provider_id}] to {phone_masked(to)}: {text}\n")
        sys.stdout.flush()
        return sms.provider_id


class InMemorySmsBackend(SmsBackend):
    """Keeps each SMS in ``InMemorySmsBackend.outbox`` (this process only): for tests."""

    simulated = True
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
    several worker processes can share the file): for tests and chaos runs."""

    simulated = True

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


def sms_backend_path() -> str:
    return conf.setting("NOTIFICATIONS_SMS_BACKEND")


def simulated_sms_refusal() -> Optional[str]:
    """Why the configured SMS backend may not run in this process, or None when it may."""
    if settings.DEBUG or conf.setting("NOTIFICATIONS_ALLOW_CONSOLE_SMS"):
        return None
    backend = sms_backend_path()
    if getattr(import_string(backend), "simulated", False):
        return SIMULATED_SMS_REFUSED.format(backend=backend)
    return None


def check_sms_backend(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """System check (``check --deploy``): a refused simulation is an Error."""
    try:
        refusal = simulated_sms_refusal()
    except ImportError as exc:
        message = SMS_BACKEND_NOT_IMPORTABLE.format(backend=sms_backend_path(), error=exc)
        return [checks.Error(message, id="notifications.E002")]
    return [checks.Error(refusal, id="notifications.E001")] if refusal else []


def get_sms_backend() -> SmsBackend:
    """An instance of the configured SMS backend; ImproperlyConfigured for a refused
    simulation (web, worker and beat refuse to start with one: ``config.serving``)."""
    refusal = simulated_sms_refusal()
    if refusal:
        raise ImproperlyConfigured(refusal)
    return import_string(sms_backend_path())()
