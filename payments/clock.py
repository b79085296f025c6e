"""The database server's clock, the one clock charges are timed with.

Web, worker and beat processes run on hosts whose clocks drift apart; the database is the
one place they all meet. So every time stored on a ``Charge`` and every age compared for
one (staleness, leases, how long a gateway call may still run) comes from the database
server: ``Now()`` in SQL (``STATEMENT_TIMESTAMP()`` on PostgreSQL), or ``db_now()`` when
Python needs the value itself. A host whose clock is minutes off changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import DEFAULT_DB_ALIAS
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now
from django.db.models.sql import Query
from django.db.models.sql.constants import SINGLE

__all__ = ["Now", "db_ago", "db_now"]


def db_now(*, using: str = DEFAULT_DB_ALIAS) -> datetime:
    """The database server's current time (one ``SELECT``, converted as a field would be)."""
    query = Query(None)
    query.add_annotation(Now(), "now")
    compiler = query.get_compiler(using=using)
    row = compiler.execute_sql(SINGLE)
    converters = compiler.get_converters([query.annotations["now"]])
    if converters:
        (row,) = compiler.apply_converters([row], converters)
    return row[0]


def db_ago(seconds: float) -> ExpressionWrapper:
    """``Now() - seconds``, evaluated by the database in the statement that uses it."""
    return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())
