"""Logging plumbing (wired in ``LOGGING``, config/settings/base.py, and config/celery.py).

A quiet default: Celery logs three INFO lines for every run of a periodic task (beat's
"Sending due task", the worker's "received" and "succeeded"), every few seconds, whether
the pass did anything or not. :class:`QuietPeriodicPasses` demotes those to DEBUG for the
tasks it is given, keeping "succeeded" at INFO when the pass did something (a non-zero
count in what the task returned).

``DJANGO_LOG_FORMAT=json``: one JSON object per record (python-json-logger), with what a
record carries besides its message as fields of their own (txbroker's delivery records:
``msg_id``, ``topic``, ``consumer_group``, ``attempt``; a traceback as ``exc_info``)."""

from __future__ import annotations

import ast
import logging
from typing import Any

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS)


def use_json_format(logger: logging.Logger) -> None:
    """Celery's worker and beat set up their own handlers (their format): with
    DJANGO_LOG_FORMAT=json theirs write JSON too."""
    for handler in logger.handlers:
        handler.setFormatter(json_formatter())


def _did_nothing(value: Any) -> bool:
    """No count in ``value`` (a task's return value) is above zero."""
    if value is None or isinstance(value, (bool, float, str)):
        return True
    if isinstance(value, int):
        return value == 0
    if isinstance(value, dict):
        return all(_did_nothing(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_did_nothing(v) for v in value)
    return False


class QuietPeriodicPasses(logging.Filter):
    """Celery's routine INFO records about ``tasks`` go out at DEBUG (so only where DEBUG is
    on): beat sending them, a worker receiving them, and their success when the task's
    return value counts nothing done. Put on the loggers ``celery.beat``,
    ``celery.worker.strategy`` and ``celery.app.trace``."""

    def __init__(self, tasks: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self._routine(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _routine(self, record: logging.LogRecord) -> bool:
        if record.name == "celery.beat":
            # "Scheduler: Sending due task %s (%s)": the entry's name, then the task's.
            args = record.args if isinstance(record.args, tuple) else ()
            return (
                str(record.msg).startswith("Scheduler: Sending due task")
                and bool(args)
                and args[-1] in self.tasks
            )
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or data.get("name") not in self.tasks:
            return False
        if "return_value" not in data:
            return True  # received
        try:
            returned = ast.literal_eval(data["return_value"])
        except (ValueError, SyntaxError):
            return False
        return _did_nothing(returned)
