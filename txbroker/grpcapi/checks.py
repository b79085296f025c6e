"""Check-back of remote producer groups over their clients' telemetry streams (filled in
by the check loop)."""

from __future__ import annotations


def answer(message, resolution, who) -> bool:
    """A checker's answer (EndTransaction from a server check) to a check this process
    sent: True when it settled it under that check's lease."""
    return False
