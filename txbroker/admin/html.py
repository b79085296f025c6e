"""HTML bits the admin pages share: badges, colours, folded tracebacks, time offsets."""

from __future__ import annotations

from datetime import timedelta

from django.utils.html import format_html

from txbroker import charts
from txbroker.models import Delivery, Message

State = Message.State
Status = Delivery.Status

STATUS_SYMBOL = {
    Status.SUCCEEDED: "✓",
    Status.PENDING: "pending",
    Status.RUNNING: "running",
    Status.RETRY: "retry",
    Status.DEAD: "dead",
    Status.RECALLED: "recalled",
    Status.SKIPPED: "skipped",
}
STATE_COLOR = {
    State.HALF: "#b8860b",
    State.COMMITTED: "#2e7d32",
    State.ROLLED_BACK: "#616161",
    State.DISCARDED: "#c62828",
}
STATUS_COLOR = {
    Status.SUCCEEDED: "#2e7d32",
    Status.PENDING: "#1565c0",
    Status.RUNNING: "#1565c0",
    Status.RETRY: "#ef6c00",
    Status.DEAD: "#c62828",
    Status.RECALLED: "#616161",
    Status.SKIPPED: "#616161",
}


def badge(text: str, color: str) -> str:
    return format_html(
        '<span class="txb-badge" style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'font-size:11px;white-space:nowrap">{}</span>',
        color,
        text,
    )


def error_html(text: str) -> str:
    """A traceback folded to its last line (the exception), unfolding to the whole of it."""
    if not text:
        return "-"
    last = text.strip().splitlines()[-1][:200]
    return format_html(
        '<details class="txb-error"><summary>{}</summary>'
        '<pre style="white-space:pre-wrap;max-width:900px">{}</pre></details>',
        last,
        text,
    )


def offset_text(delta: timedelta) -> str:
    """A time since the first event: milliseconds, seconds, then longer units."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return charts.duration_text(seconds)
