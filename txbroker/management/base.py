"""What txbroker's commands share: who the operator is, counted nouns, message ids by
prefix, and a progress bar."""

from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import Optional

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from txbroker.db import broker_db
from txbroker.models import Message
from txbroker.selectors import looks_like_msg_id, msg_id_prefix_q

BAR_WIDTH = 30


def cli_actor() -> str:
    """The operator as the trace records a command's action: ``<os user> (manage.py)``."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = os.environ.get("USER", "unknown")
    return f"{user} (manage.py)"


def counted(n: int, singular: str, plural: str = "") -> str:
    """``1 delivery``, ``2 deliveries``: ``plural`` defaults to ``singular + "s"``."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def resolve_msg_id(given: str) -> str:
    """The message id ``given`` names: itself, or the one id it is a prefix of, as the admin's
    search finds them (at least 6 hex digits). Unknown or ambiguous: a CommandError (an id
    that names no message is returned as is, for the operation's own "no message" error)."""
    term = given.strip().lower()
    messages = Message.objects.using(broker_db())
    if not looks_like_msg_id(term):
        return given
    if messages.filter(pk=term).exists():
        return term
    matches = list(messages.filter(msg_id_prefix_q(term)).order_by("pk").values_list("pk", flat=True)[:2])
    if len(matches) == 1:
        return matches[0]
    if matches:
        total = messages.filter(msg_id_prefix_q(term)).count()
        raise CommandError(f"{given!r} is the start of {total} message ids: give more of the id")
    return given


def parse_iso(value: str, option: str) -> datetime:
    """An ISO 8601 date or date-time (naive means the project's time zone)."""
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            if day is not None:
                parsed = datetime(day.year, day.month, day.day)
    except ValueError:
        parsed = None
    if parsed is None:
        raise CommandError(f"{option} {value!r} is not an ISO 8601 date or date-time (e.g. 2024-05-01T12:00)")
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


class ProgressBar:
    """``[#####-----]  50%  500/1000 label`` redrawn in place on a terminal, one line per
    update otherwise (logs stay readable)."""

    def __init__(self, command: BaseCommand, label: str = "") -> None:
        self.out = command.stdout
        self.label = label
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.drawn = False

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        if total:
            filled = min(BAR_WIDTH, round(BAR_WIDTH * done / total))
            text = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {100 * done / total:3.0f}%  {done}/{total}"
        else:
            text = f"{done}"
        text = f"{text} {self.label or 'done'}"
        if self.tty:
            self.out.write(f"\r{text}", ending="")
            self.out.flush()
            self.drawn = True
        else:
            self.out.write(text)

    def finish(self) -> None:
        if self.drawn:
            self.out.write("")
