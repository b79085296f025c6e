"""The hot path's statements on PostgreSQL: each step of a message's life in one round trip.

The ORM writes each step as several statements inside a transaction (an INSERT per table,
then COMMIT). On PostgreSQL a data-modifying CTE does the same work in one statement,
which is atomic on its own: one round trip and one transaction instead of four or five.
Measured by ``manage.py bench`` (see the README's figures): this is most of what puts
txbroker ahead of the naive design, because in Python every statement costs more than the
database's work for it.

Each function here returns None when the database is not PostgreSQL: the caller then runs
the portable ORM path, which has the same effect. The conditions (``state = 'HALF'``,
``claim_token = %s AND status = 'RUNNING'``) are the same conditional UPDATEs as there:
every state move is still one conditional UPDATE, only its trace row rides along.
"""

# S608: the only names formatted into SQL here are tables and columns from the models'
# metadata; every value is a query parameter.
# ruff: noqa: S608
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Optional

from django.db import connections
from django.db.models import AutoField, BigAutoField, Model

from txbroker.conf import txsettings
from txbroker.models import Delivery, Message, MessageKey, TraceEvent


def enabled(db: str) -> bool:
    return connections[db].vendor == "postgresql" and txsettings.FASTPATH


def _fields(model: type[Model]) -> list:
    return [f for f in model._meta.concrete_fields if not isinstance(f, (AutoField, BigAutoField))]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(model: type[Model]) -> str:
    return ", ".join(_quote(f.column) for f in _fields(model))


def _rows(db: str, objs: Sequence[Model], *, cast: bool) -> tuple[str, list[Any]]:
    """``(...), (...)`` placeholders and parameters for ``objs``, every concrete field but
    the auto id, prepared as the ORM prepares them (defaults, JSON adaptation). ``cast``
    types each value, as rows of a bare VALUES list need."""
    connection = connections[db]
    fields = _fields(type(objs[0]))
    if cast:
        row = "(" + ", ".join(f"CAST(%s AS {f.db_type(connection)})" for f in fields) + ")"
    else:
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [f.get_db_prep_save(getattr(obj, f.attname), connection) for obj in objs for f in fields]
    return ", ".join([row] * len(objs)), params


def _table(model: type[Model]) -> str:
    return _quote(model._meta.db_table)


def _execute(db: str, sql: str, params: list[Any]) -> Optional[tuple]:
    with connections[db].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def store_half(db: str, message: Message, keys: Sequence[MessageKey], event: TraceEvent) -> bool:
    """INSERT the half message, its key rows and its HALF_STORED trace row in one statement."""
    if not enabled(db):
        return False
    parts, params = [], []
    values, row_params = _rows(db, [message], cast=False)
    parts.append(f"m AS (INSERT INTO {_table(Message)} ({_columns(Message)}) VALUES {values})")
    params += row_params
    if keys:
        values, row_params = _rows(db, keys, cast=False)
        parts.append(f"k AS (INSERT INTO {_table(MessageKey)} ({_columns(MessageKey)}) VALUES {values})")
        params += row_params
    values, row_params = _rows(db, [event], cast=False)
    parts.append(f"t AS (INSERT INTO {_table(TraceEvent)} ({_columns(TraceEvent)}) VALUES {values})")
    params += row_params
    _execute(db, f"WITH {', '.join(parts)} SELECT 1", params)
    return True


def _guarded_insert(name: str, db: str, objs: Sequence[Model]) -> tuple[str, list[Any]]:
    """A CTE inserting ``objs`` only when the ``moved`` CTE moved a row."""
    model = type(objs[0])
    values, params = _rows(db, objs, cast=True)
    sql = (
        f"{name} AS (INSERT INTO {_table(model)} ({_columns(model)}) "
        f"SELECT * FROM (VALUES {values}) AS v WHERE EXISTS (SELECT 1 FROM moved))"
    )
    return sql, params


def message_commit(
    db: str,
    msg_id: str,
    *,
    now: datetime,
    check_times: Optional[int],
    deliveries: Sequence[Delivery],
    events: Sequence[TraceEvent],
) -> Optional[bool]:
    """HALF -> COMMITTED with the message's deliveries and trace rows, in one statement.
    True when it moved, False when the message was not HALF (nothing written), None when
    this database has no fast path."""
    if not enabled(db):
        return None
    counted = ", check_times = %s" if check_times is not None else ""
    params: list[Any] = [Message.State.COMMITTED, now, *([check_times] if check_times is not None else [])]
    params += [msg_id, Message.State.HALF]
    parts = [
        f"moved AS (UPDATE {_table(Message)} SET state = %s, resolved_at = %s, next_check_at = NULL{counted} "
        "WHERE msg_id = %s AND state = %s RETURNING msg_id)"
    ]
    for name, objs in (("d", deliveries), ("t", events)):
        if objs:
            sql, more = _guarded_insert(name, db, objs)
            parts.append(sql)
            params += more
    (moved,) = _execute(db, f"WITH {', '.join(parts)} SELECT count(*) FROM moved", params)
    return moved == 1


def delivery_succeed(
    db: str, delivery_id: int, token: str, *, now: datetime, event: TraceEvent
) -> Optional[bool]:
    """RUNNING -> SUCCEEDED (while the claim is ``token``'s) with its DELIVERY_ATTEMPT
    trace row, in one statement. None when this database has no fast path."""
    if not enabled(db):
        return None
    trace_sql, trace_params = _guarded_insert("t", db, [event])
    sql = (
        f"WITH moved AS (UPDATE {_table(Delivery)} SET status = %s, claim_token = '', claimed_until = NULL, "
        "succeeded_at = %s, updated_at = %s, last_error = '' "
        "WHERE id = %s AND claim_token = %s AND status = %s RETURNING id), "
        f"{trace_sql} SELECT count(*) FROM moved"
    )
    params = [Delivery.Status.SUCCEEDED, now, now, delivery_id, token, Delivery.Status.RUNNING, *trace_params]
    (moved,) = _execute(db, sql, params)
    return moved == 1


def lock_claim(db: str, delivery_id: int, token: str) -> Optional[bool]:
    """Lock the delivery's row if the claim is still ``token``'s (held to the end of the
    caller's transaction). None when this database has no fast path."""
    if not enabled(db):
        return None
    sql = f"SELECT 1 FROM {_table(Delivery)} WHERE id = %s AND claim_token = %s AND status = %s FOR UPDATE"
    return _execute(db, sql, [delivery_id, token, Delivery.Status.RUNNING]) is not None


def claim_sql(*, filtered: bool = False) -> str:
    """The claim statement (``manage.py bench --history`` shows its plan)."""
    table = _table(Delivery)
    only = "AND id = ANY(%s) " if filtered else ""
    return (
        f"WITH picked AS (SELECT id FROM {table} WHERE status IN (%s, %s) AND next_attempt_at <= %s {only}"
        "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) "
        f"UPDATE {table} AS d SET status = %s, claim_token = %s, claimed_until = %s, "
        "attempts = d.attempts + 1, updated_at = %s "
        # By primary key from an array: a join with the CTE, or repeating the status
        # condition here, lets the planner scan every waiting row (a whole backlog). The
        # condition holds already: the picked rows are locked, and FOR UPDATE re-checked
        # it on their latest version.
        "WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) RETURNING d.id"
    )


def claim_due(
    db: str, *, token: str, now: datetime, claimed_until: datetime, limit: int, ids: Optional[list[int]]
) -> Optional[list[int]]:
    """Claim up to ``limit`` due deliveries, oldest first, in one statement: the
    ``FOR UPDATE SKIP LOCKED`` pick and the conditional move to RUNNING together. Returns
    the claimed ids; None when this database has no fast path."""
    if not enabled(db):
        return None
    sql = claim_sql(filtered=ids is not None)
    waiting = list(Delivery.WAITING)
    params: list[Any] = [*waiting, now, *([list(ids)] if ids is not None else []), limit]
    params += [Delivery.Status.RUNNING, token, claimed_until, now]
    with connections[db].cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]
