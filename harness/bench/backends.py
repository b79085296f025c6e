"""Backends for bench runs: an SMS provider that does nothing, so that the figures measure
the messaging and the database, not a console or a file."""

from __future__ import annotations

import uuid

from notifications.backends import SmsBackend


class NullSmsBackend(SmsBackend):
    """Accepts every SMS and keeps nothing (constant memory over any number of sends)."""

    simulated = True

    def send(self, *, to: str, text: str) -> str:
        return uuid.uuid4().hex
