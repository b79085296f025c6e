"""The hot path's statements on PostgreSQL: each step of a message's life in one round trip.

The ORM writes each step as several statements inside a transaction (an INSERT per table,
then COMMIT). On PostgreSQL a data-modifying CTE does the same work in one statement,
which is atomic on its own: one round trip and one transaction instead of four or five.
Measured by ``manage.py bench`` (see the README's figures): in Python every statement
costs more than the database's work for it.

Each function here returns None when the database is not PostgreSQL (or the fast path is
off): the caller then runs the portable ORM path, which has the same effect. The
conditions (``state = 'HALF'``, ``claim_token = %s AND status = 'RUNNING'``) are the same
conditional UPDATEs as there: every state move is still one conditional UPDATE, only its
trace rows ride along, and only when the move happened. Every time is the database's
(``statement_timestamp()``, see txbroker.dbtime): columns left out of an INSERT take their
database default, which is that clock.
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
from django.db.models.expressions import DatabaseDefault

from txbroker.conf import txsettings
from txbroker.dbtime import SQL_NOW, sql_after
from txbroker.models import Delivery, Message, MessageKey, TraceEvent
from txbroker.ordering import claim_sql_condition

RUNNING = Delivery.Status.RUNNING


def enabled(db: str) -> bool:
    return connections[db].vendor == "postgresql" and txsettings.FASTPATH


def _fields(obj: Model, skip: tuple[str, ...] = ()) -> list:
    """The columns to insert for ``obj``: every concrete field but the auto id, ``skip``
    and those left to their database default (the database's clock)."""
    return [
        f
        for f in obj._meta.concrete_fields
        if not isinstance(f, (AutoField, BigAutoField))
        and f.name not in skip
        and not isinstance(getattr(obj, f.attname), DatabaseDefault)
    ]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(
    db: str, objs: Sequence[Model], *, cast: bool, extra: tuple[tuple[str, str], ...] = ()
) -> tuple[str, str, list[Any]]:
    """The column list, ``(...), (...)`` placeholders and parameters for ``objs`` (which
    leave the same fields to their defaults), prepared as the ORM prepares them. ``cast``
    types each value, as rows of a bare VALUES list need. ``extra``: (column, SQL) pairs
    written by an expression instead of the object's value."""
    connection = connections[db]
    fields = _fields(objs[0], skip=tuple(column for column, _ in extra))
    columns = ", ".join([*(_quote(f.column) for f in fields), *(_quote(column) for column, _ in extra)])
    placeholders = [f"CAST(%s AS {f.db_type(connection)})" for f in fields] if cast else ["%s"] * len(fields)
    row = "(" + ", ".join([*placeholders, *(sql for _, sql in extra)]) + ")"
    params = [f.get_db_prep_save(getattr(obj, f.attname), connection) for obj in objs for f in fields]
    return columns, ", ".join([row] * len(objs)), params


def _table(model: type[Model]) -> str:
    return _quote(model._meta.db_table)


def _execute(db: str, sql: str, params: list[Any]) -> Optional[tuple]:
    with connections[db].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def _insert(name: str, db: str, objs: Sequence[Model], *, guarded: bool) -> tuple[str, list[Any]]:
    """A CTE inserting ``objs``; ``guarded``: only when the ``moved`` CTE moved a row."""
    model = type(objs[0])
    if not guarded:
        columns, values, params = _rows(db, objs, cast=False)
        return f"{name} AS (INSERT INTO {_table(model)} ({columns}) VALUES {values})", params
    columns, values, params = _rows(db, objs, cast=True)
    sql = (
        f"{name} AS (INSERT INTO {_table(model)} ({columns}) "
        f"SELECT * FROM (VALUES {values}) AS v WHERE EXISTS (SELECT 1 FROM moved))"
    )
    return sql, params


# --- messages -----------------------------------------------------------------------------------
def store_half(
    db: str, message: Message, keys: Sequence[MessageKey], event: TraceEvent, *, immunity: float
) -> Optional[tuple[datetime, datetime]]:
    """INSERT the half message (first check ``immunity`` seconds from now, database time),
    its key rows and its HALF_STORED trace row in one statement. Returns the message's
    ``created_at`` and ``next_check_at``."""
    if not enabled(db):
        return None
    columns, values, params = _rows(db, [message], cast=False, extra=(("next_check_at", sql_after()),))
    parts = [
        f"m AS (INSERT INTO {_table(Message)} ({columns}) VALUES {values} RETURNING created_at, next_check_at)"
    ]
    params.append(immunity)
    if keys:
        sql, more = _insert("k", db, keys, guarded=False)
        parts.append(sql)
        params += more
    sql, more = _insert("t", db, [event], guarded=False)
    parts.append(sql)
    params += more
    return _execute(db, f"WITH {', '.join(parts)} SELECT created_at, next_check_at FROM m", params)


def message_commit(
    db: str,
    msg_id: str,
    *,
    check_times: Optional[int],
    check_token: Optional[str],
    deliveries: Sequence[Delivery],
    events: Sequence[TraceEvent],
) -> Optional[bool]:
    """HALF -> COMMITTED with the message's deliveries and trace rows, in one statement.
    ``check_token``: only while that check pass holds the message. True when it moved,
    False when it did not (nothing written), None when this database has no fast path."""
    if not enabled(db):
        return None
    counted = ", check_times = %s" if check_times is not None else ""
    params: list[Any] = [Message.State.COMMITTED, *([check_times] if check_times is not None else [])]
    params += [msg_id, Message.State.HALF]
    held = ""
    if check_token is not None:
        held = " AND check_token = %s"
        params.append(check_token)
    parts = [
        f"moved AS (UPDATE {_table(Message)} SET state = %s, resolved_at = {SQL_NOW}, next_check_at = NULL, "
        f"check_token = ''{counted} WHERE msg_id = %s AND state = %s{held} RETURNING msg_id)"
    ]
    for name, objs in (("d", deliveries), ("t", events)):
        if objs:
            sql, more = _insert(name, db, objs, guarded=True)
            parts.append(sql)
            params += more
    (moved,) = _execute(db, f"WITH {', '.join(parts)} SELECT count(*) FROM moved", params)
    return moved == 1


# --- deliveries ---------------------------------------------------------------------------------
def claim_sql(*, filtered: bool = False, blocking_groups: Sequence[str] = ()) -> str:
    """The claim statement (``manage.py bench --history`` shows its plan). Parameters:
    the two waiting statuses, run_alone, [the ids,] the limit, RUNNING, the token, the claim
    timeout. Ordered deliveries are held back by the rule of txbroker.ordering (one NOT
    EXISTS, skipped for unordered rows); ``blocking_groups``, the consumer groups whose
    message groups wait behind a DEAD delivery, are written in as literals (registered
    names: letters, digits and ``_ . : % -`` only, see txbroker.registry)."""
    table = _table(Delivery)
    only = "AND id = ANY(%s) " if filtered else ""
    return (
        f"WITH picked AS (SELECT id FROM {table} AS c WHERE status IN (%s, %s) AND next_attempt_at <= {SQL_NOW} "
        # remote = false: remote groups' deliveries are received over gRPC, never by Celery
        # (txbroker.remote_deliveries); the partial index txb_dlv_waiting_due needs it said.
        f"AND remote = false AND run_alone = %s {only}{claim_sql_condition('c', blocking_groups)} "
        "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) "
        f"UPDATE {table} AS d SET status = %s, claim_token = %s, claimed_until = {sql_after()}, "
        f"started_at = NULL, updated_at = {SQL_NOW} "
        # By primary key from an array: a join with the CTE, or repeating the status
        # condition here, lets the planner scan every waiting row (a whole backlog). The
        # condition holds already: the picked rows are locked, and FOR UPDATE re-checked
        # it on their latest version.
        "WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) RETURNING d.id"
    )


def claim_due(
    db: str,
    *,
    token: str,
    claim_timeout: float,
    limit: int,
    ids: Optional[list[int]],
    alone: bool,
    blocking_groups: Sequence[str] = (),
) -> Optional[list[int]]:
    """Claim up to ``limit`` due deliveries (``alone``: of those that run alone), oldest
    first, in one statement: the ``FOR UPDATE SKIP LOCKED`` pick and the conditional move
    to RUNNING together. Returns the claimed ids; None when this database has no fast path."""
    if not enabled(db):
        return None
    sql = claim_sql(filtered=ids is not None, blocking_groups=blocking_groups)
    params: list[Any] = [*Delivery.WAITING, alone, *([list(ids)] if ids is not None else []), limit]
    params += [RUNNING, token, claim_timeout]
    with connections[db].cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def delivery_start(db: str, delivery_id: int, token: str, *, claim_timeout: float) -> Optional[int]:
    """Record that the handler starts (an attempt counts from here) and renew the claim;
    only while the claim is ``token``'s. Returns the attempt number, 0 when the claim was
    lost, None when this database has no fast path."""
    if not enabled(db):
        return None
    row = _execute(
        db,
        f"UPDATE {_table(Delivery)} SET attempts = attempts + 1, started_at = {SQL_NOW}, "
        f"claimed_until = {sql_after()}, updated_at = {SQL_NOW} "
        "WHERE id = %s AND claim_token = %s AND status = %s RETURNING attempts",
        [claim_timeout, delivery_id, token, RUNNING],
    )
    return row[0] if row else 0


def lock_claim(db: str, delivery_id: int, token: str) -> Optional[bool]:
    """Lock the delivery's row if the claim is still ``token``'s (held to the end of the
    caller's transaction). None when this database has no fast path."""
    if not enabled(db):
        return None
    sql = f"SELECT 1 FROM {_table(Delivery)} WHERE id = %s AND claim_token = %s AND status = %s FOR UPDATE"
    return _execute(db, sql, [delivery_id, token, RUNNING]) is not None


def delivery_succeed(
    db: str, delivery_id: int, token: str, *, duration_ms: float
) -> Optional[tuple[bool, Optional[datetime]]]:
    """RUNNING -> SUCCEEDED (while the claim is ``token``'s), the handler's time kept on
    the row (its trace line, see txbroker.trace.with_successes). Returns (moved,
    succeeded_at); None when this database has no fast path."""
    if not enabled(db):
        return None
    row = _execute(
        db,
        f"UPDATE {_table(Delivery)} SET status = %s, claim_token = '', claimed_until = NULL, "
        f"succeeded_at = {SQL_NOW}, updated_at = {SQL_NOW}, last_error = '', run_alone = false, duration_ms = %s "
        "WHERE id = %s AND claim_token = %s AND status = %s RETURNING succeeded_at",
        [Delivery.Status.SUCCEEDED, duration_ms, delivery_id, token, RUNNING],
    )
    return (True, row[0]) if row else (False, None)


def delivery_fail(
    db: str,
    delivery_id: int,
    token: str,
    *,
    status: str,
    delay: Optional[float],
    error: str,
    events: Sequence[TraceEvent],
) -> Optional[bool]:
    """RUNNING -> RETRY (due ``delay`` seconds from now) | DEAD, while the claim is
    ``token``'s, with its trace rows only if it moved. None when this database has no fast
    path."""
    if not enabled(db):
        return None
    due = f", next_attempt_at = {sql_after()}" if delay is not None else ""
    params: list[Any] = [status, error, *([delay] if delay is not None else []), delivery_id, token, RUNNING]
    trace_sql, trace_params = _insert("t", db, events, guarded=True)
    sql = (
        f"WITH moved AS (UPDATE {_table(Delivery)} SET status = %s, claim_token = '', claimed_until = NULL, "
        f"last_error = %s, updated_at = {SQL_NOW}{due} "
        "WHERE id = %s AND claim_token = %s AND status = %s RETURNING id), "
        f"{trace_sql} SELECT count(*) FROM moved"
    )
    (moved,) = _execute(db, sql, [*params, *trace_params])
    return moved == 1


# --- a batch in one transaction (txbroker.batch) ------------------------------------------------
def batch_start(db: str, ids: Sequence[int], token: str, *, claim_timeout: float) -> Optional[dict[int, int]]:
    """Start the handlers of the claimed deliveries ``ids`` together (each one's attempt
    counts from here) and renew their claims, only those still ``token``'s. Returns
    {id: attempt number}; None when this database has no fast path."""
    if not enabled(db):
        return None
    with connections[db].cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(Delivery)} SET attempts = attempts + 1, started_at = {SQL_NOW}, "
            f"claimed_until = {sql_after()}, updated_at = {SQL_NOW} "
            "WHERE id = ANY(%s) AND claim_token = %s AND status = %s RETURNING id, attempts",
            [claim_timeout, list(ids), token, RUNNING],
        )
        return dict(cursor.fetchall())


def batch_lock(db: str, ids: Sequence[int], token: str) -> set[int]:
    """Lock, to the end of the caller's transaction, those of ``ids`` whose claim is still
    ``token``'s (in id order, so two lockers never deadlock); returns their ids."""
    with connections[db].cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {_table(Delivery)} WHERE id = ANY(%s) AND claim_token = %s AND status = %s "
            "ORDER BY id FOR UPDATE",
            [list(ids), token, RUNNING],
        )
        return {row[0] for row in cursor.fetchall()}


def batch_unstart(db: str, ids: Sequence[int], token: str) -> int:
    """Take back the start of those of ``ids`` (locked by the caller) whose handler did not
    run in the batch's transaction: never started, attempts as before."""
    with connections[db].cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(Delivery)} SET attempts = attempts - 1, started_at = NULL, updated_at = {SQL_NOW} "
            "WHERE id = ANY(%s) AND claim_token = %s AND status = %s AND started_at IS NOT NULL",
            [list(ids), token, RUNNING],
        )
        return cursor.rowcount


def batch_succeed(db: str, durations: dict[int, float], token: str) -> dict[int, datetime]:
    """RUNNING -> SUCCEEDED of the deliveries ``durations`` names (while the claim is
    ``token``'s), each with its handler's time, in one statement. Returns {id:
    succeeded_at} of those that moved."""
    table = _table(Delivery)
    with connections[db].cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS d SET status = %s, claim_token = '', claimed_until = NULL, "
            f"succeeded_at = {SQL_NOW}, updated_at = {SQL_NOW}, last_error = '', run_alone = false, "
            "duration_ms = v.ms FROM unnest(%s::bigint[], %s::float8[]) AS v (id, ms) "
            "WHERE d.id = v.id AND d.claim_token = %s AND d.status = %s RETURNING d.id, d.succeeded_at",
            [Delivery.Status.SUCCEEDED, list(durations), list(durations.values()), token, RUNNING],
        )
        return dict(cursor.fetchall())
