"""What txbroker's commands share: who the operator is, and a progress bar."""

from __future__ import annotations

import getpass
import os
from datetime import datetime
from typing import Optional

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

BAR_WIDTH = 30


def cli_actor() -> str:
    """The operator as the trace records a command's action: ``<os user> (manage.py)``."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = os.environ.get("USER", "unknown")
    return f"{user} (manage.py)"


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
            text = f"{done} done"
        if self.label:
            text = f"{text} {self.label}"
        if self.tty:
            self.out.write(f"\r{text}", ending="")
            self.out.flush()
            self.drawn = True
        else:
            self.out.write(text)

    def finish(self) -> None:
        if self.drawn:
            self.out.write("")
