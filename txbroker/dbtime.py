"""The database's clock, the only clock txbroker compares times with.

Web, worker and beat processes may run on hosts whose clocks disagree by minutes (a VM
paused and resumed, NTP not yet synced, a container on a drifting host). A due time,
a claim deadline or a check time written from one host's clock and compared with
another's would fire early or late by that much: a HALF message checked before its
transaction timeout, a fresh claim taken back, a retry due minutes late (RocketMQ's #9640
is this bug). So every such time is written and compared *in the statement*, with the
database server's clock: ``STATEMENT_TIMESTAMP()`` on PostgreSQL (Django's ``Now()``),
and the one host's clock on SQLite, where web, worker and beat share one machine.

Durations still come from the settings (seconds); only the instant they count from is
the database's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connections
from django.db.models import DateTimeField, ExpressionWrapper, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Now
from django.utils import timezone

# The same instant in hand-written SQL (txbroker.fastpath): the start of the statement.
SQL_NOW = "statement_timestamp()"


def now() -> Now:
    """The database's current time, as an expression for a filter or an UPDATE."""
    return Now()


def after(seconds: float) -> Combinable:
    """The database's current time plus ``seconds``."""
    return ExpressionWrapper(Now() + Value(timedelta(seconds=seconds)), output_field=DateTimeField())


def before(seconds: float) -> Combinable:
    """The database's current time minus ``seconds``."""
    return ExpressionWrapper(Now() - Value(timedelta(seconds=seconds)), output_field=DateTimeField())


def sql_after(param: str = "%s") -> str:
    """Hand-written SQL for "now plus a number of seconds given as a parameter"."""
    return f"({SQL_NOW} + make_interval(secs => {param}))"


def read(using: str) -> datetime:
    """The database's current time, read into Python (for ages shown to people)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {SQL_NOW}")
        return cursor.fetchone()[0]
