"""HTML bits the admin pages share: badges, colours, folded tracebacks, time offsets,
shortened ids that copy whole, and times with their age.

The admin's script (``static/txbroker/admin.js``, a file: the Content-Security-Policy allows
no inline script) makes the copy buttons copy and keeps the ages current."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

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


def error_last_line(text: str) -> str:
    """The line that says what went wrong: a traceback's last (the exception)."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def error_html(text: str) -> str:
    """A traceback folded to its last line (the exception), unfolding to the whole of it."""
    if not text:
        return "-"
    last = error_last_line(text)
    return format_html(
        '<details class="txb-error"><summary title="{}">{}</summary>'
        '<pre class="txb-traceback">{}</pre></details>',
        last,
        last if len(last) <= 160 else last[:159] + "…",
        text,
    )


# Two overlapping sheets, drawn inline (no icon font, no file to fetch).
COPY_ICON = mark_safe(
    '<svg width="11" height="11" viewBox="0 0 16 16" aria-hidden="true" focusable="false">'
    '<rect x="5" y="5" width="9" height="9" rx="1.5" fill="none" stroke="currentColor" stroke-width="1.6"/>'
    '<path d="M3 11V3.5C3 2.7 3.7 2 4.5 2H11" fill="none" stroke="currentColor" stroke-width="1.6"/></svg>'
)


def short_id(full: str, *, head: int = 6, tail: int = 4, href: Optional[str] = None, css: str = "") -> str:
    """``full`` cut to its first ``head`` and last ``tail`` characters (ids made at the same
    time share their first digits: time comes first), whole on hover (``title``), in
    ``data-full`` and on the clipboard by the copy button next to it."""
    short = full if len(full) <= head + tail + 1 else f"{full[:head]}…{full[-tail:]}"
    if href:
        text = format_html(
            '<a href="{}" class="{}" data-full="{}" title="{}"><code>{}</code></a>',
            href,
            css,
            full,
            full,
            short,
        )
    else:
        text = format_html('<code class="{}" data-full="{}" title="{}">{}</code>', css, full, full, short)
    return format_html(
        '<span class="txb-id">{}<button type="button" class="txb-copy" data-copy="{}" '
        'title="Copy {}" aria-label="Copy">{}</button></span>',
        text,
        full,
        full,
        COPY_ICON,
    )


def keys_html(keys: list[str]) -> str:
    """A message's first key, cut by CSS if long, all of them on hover and on the clipboard."""
    if not keys:
        return "-"
    full = " ".join(keys)
    more = format_html(' <small class="txb-more">+{}</small>', len(keys) - 1) if len(keys) > 1 else ""
    return format_html(
        '<span class="txb-id"><span class="txb-key" title="{}" data-full="{}">{}</span>{}'
        '<button type="button" class="txb-copy" data-copy="{}" title="Copy {}" aria-label="Copy">{}</button>'
        "</span>",
        full,
        full,
        keys[0],
        more,
        full,
        full,
        COPY_ICON,
    )


def ago_text(seconds: float) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago`` (``in 5 min`` ahead)."""
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        amount = f"{seconds:.0f} s"
    elif seconds < 3600:
        amount = f"{seconds // 60:.0f} min"
    elif seconds < 86400:
        amount = f"{seconds // 3600:.0f} h"
    else:
        amount = f"{seconds // 86400:.0f} d"
    return f"in {amount}" if ahead else f"{amount} ago"


def when_html(moment: Optional[datetime], now: Optional[datetime] = None) -> str:
    """A time with its seconds (the date too unless it is today) and its age below it; the
    full ISO time on hover."""
    if moment is None:
        return "-"
    now = now or timezone.now()
    local = timezone.localtime(moment)
    same_day = local.date() == timezone.localtime(now).date()
    shown = local.strftime("%H:%M:%S") if same_day else local.strftime("%Y-%m-%d %H:%M:%S")
    return format_html(
        '<span class="txb-when" title="{}"><span class="txb-time">{}</span> '
        '<small class="txb-ago" data-ts="{}">{}</small></span>',
        local.isoformat(timespec="seconds"),
        shown,
        f"{moment.timestamp():.3f}",
        ago_text((now - moment).total_seconds()),
    )


def offset_text(delta: timedelta) -> str:
    """A time since the first event: milliseconds, seconds, then longer units."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return charts.duration_text(seconds)
