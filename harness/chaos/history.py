"""What happened to the run's processes: every death (killed by the harness, by a fault
point, by gunicorn's or Celery's own time limits, or any other exit the logs show) and
every freeze window, by pid, with times. Used to tell whether a producer was alive.

Times are ``time.time()`` of this machine, as the database's (same host) and the logs'.
Logs of processes run under faketime are shifted back by their offset."""

from __future__ import annotations

import calendar
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.chaos.cluster import Death
from harness.chaos.injector import FreezeWindow

# The start of a log line: Django's, Celery's ("[... : LEVEL/Process]") and gunicorn's
# ("[... +0000]") formats; every process of the run logs in UTC (TIME_ZONE).
LOG_TIME = re.compile(r"^\[?(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)(?:[,.](\d+))?(?: ([+-]\d{4}))?")
FAULT_LINE = re.compile(
    r"fault injected: (?P<point>\w+)(?: (?P<subject>[^,\s]+))?, pid (?P<pid>\d+) "
    r"(?P<effect>exits now|raises|blocks)"
)
GUNICORN_TIMEOUT = re.compile(r"WORKER TIMEOUT \(pid:(\d+)\)")
GUNICORN_EXIT = re.compile(r"Worker \(pid:(\d+)\) (?:was sent (\w+)|exited with code (\d+))")
CELERY_HARD_LIMIT = re.compile(r"Hard time limit \(([\d.]+)s\) exceeded for ([\w.]+)")
CELERY_EXIT = re.compile(r"Process '([^']+)' pid:(\d+) exited with '([^']+)'")
# A pool process that exits this soon after a hard time limit line was killed by it.
HARD_LIMIT_WINDOW = 3.0

GUNICORN_WORKER_TIMEOUT = "gunicorn WORKER TIMEOUT"
CELERY_HARD_TIME_LIMIT = "Celery hard time limit"


def _line_time(line: str, offset: float) -> float | None:
    match = LOG_TIME.match(line)
    if match is None:
        return None
    stamp = calendar.timegm(time.strptime(match.group(1).replace("T", " "), "%Y-%m-%d %H:%M:%S"))
    fraction = float(f"0.{match.group(2)}") if match.group(2) else 0.0
    zone = match.group(3)
    if zone:
        sign = 1 if zone[0] == "+" else -1
        stamp -= sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
    return stamp + fraction - offset


@dataclass
class LogEvents:
    """What the logs say: deaths by pid, and fault points fired by kind."""

    deaths: list[Death] = field(default_factory=list)
    fault_points: Counter = field(default_factory=Counter)
    poison_subjects: Counter = field(default_factory=Counter)  # message (or order) id -> exits


def read_logs(paths: Iterable[Path], offsets: dict[Path, float]) -> LogEvents:
    events = LogEvents()
    for path in paths:
        offset = offsets.get(path, 0.0)
        last_time: float | None = None
        hard_limits: list[tuple[float | None, str]] = []
        for line in path.read_text(errors="replace").splitlines():
            at = _line_time(line, offset)
            last_time = at if at is not None else last_time
            if "fault injected:" in line:
                match = FAULT_LINE.search(line)
                if match:
                    point = match.group("point")
                    events.fault_points[point] += 1
                    if point == "poison_message" and match.group("subject"):
                        events.poison_subjects[match.group("subject")] += 1
                    if match.group("effect") == "exits now":
                        events.deaths.append(
                            Death(int(match.group("pid")), last_time, f"fault point {point}")
                        )
                continue
            if match := GUNICORN_TIMEOUT.search(line):
                events.deaths.append(Death(int(match.group(1)), last_time, GUNICORN_WORKER_TIMEOUT))
            elif match := GUNICORN_EXIT.search(line):
                how = f"signal {match.group(2)}" if match.group(2) else f"exit code {match.group(3)}"
                events.deaths.append(Death(int(match.group(1)), last_time, f"gunicorn worker ended ({how})"))
            elif match := CELERY_HARD_LIMIT.search(line):
                hard_limits.append((last_time, f"{match.group(2)}, {match.group(1)} s"))
            elif match := CELERY_EXIT.search(line):
                pid, status = int(match.group(2)), match.group(3)
                limit = next(
                    (
                        task
                        for when, task in reversed(hard_limits)
                        if when is None or last_time is None or 0 <= last_time - when <= HARD_LIMIT_WINDOW
                    ),
                    None,
                )
                if limit is not None:
                    hard_limits = [h for h in hard_limits if h[1] != limit]
                    events.deaths.append(Death(pid, last_time, f"{CELERY_HARD_TIME_LIMIT} ({limit})"))
                else:
                    events.deaths.append(Death(pid, last_time, f"Celery pool process ended ({status})"))
    return events


@dataclass
class ProcessHistory:
    deaths: dict[int, list[Death]]
    freezes: dict[int, list[FreezeWindow]]

    @classmethod
    def of(cls, deaths: Iterable[Death], freezes: Iterable[FreezeWindow]) -> ProcessHistory:
        by_pid: dict[int, list[Death]] = defaultdict(list)
        for death in deaths:
            by_pid[death.pid].append(death)
        frozen: dict[int, list[FreezeWindow]] = defaultdict(list)
        for window in freezes:
            frozen[window.pid].append(window)
        return cls(dict(by_pid), dict(frozen))

    def why_not_alive(self, pid: int, start: float, end: float, *, slack: float = 1.0) -> list[str]:
        """Why ``pid`` may not have been alive and running at some moment between ``start``
        and ``end``: it died in that span (``slack`` early: gunicorn logs whole seconds),
        or a freeze window overlaps it. Empty when it was alive all along."""
        reasons = []
        for death in self.deaths.get(pid, []):
            if death.at is None or start - slack <= death.at <= end:
                when = "" if death.at is None else f" at +{death.at - start:.1f}s"
                reasons.append(f"killed: {death.cause}{when}")
        for window in self.freezes.get(pid, []):
            ended = window.ended if window.ended is not None else float("inf")
            if window.started <= end and ended >= start - slack:
                reasons.append(
                    f"frozen ({window.what}) from +{window.started - start:.1f}s for {window.seconds:.0f}s"
                )
        return reasons


def death_counts(deaths: Iterable[Death]) -> dict[str, int]:
    """Deaths by the processes' own time limits (the rest are counted as faults)."""
    counts: Counter = Counter(gunicorn_worker_timeout=0, celery_hard_time_limit=0)
    for death in deaths:
        if death.cause == GUNICORN_WORKER_TIMEOUT:
            counts["gunicorn_worker_timeout"] += 1
        elif death.cause.startswith(CELERY_HARD_TIME_LIMIT):
            counts["celery_hard_time_limit"] += 1
    return dict(counts)
