"""The deliveries of consumer groups subscribed over gRPC (``Delivery.remote``): every
state move, each one conditional UPDATE (or a ``FOR UPDATE SKIP LOCKED`` claim) with its
trace rows in the same statement, by the database's clock.

    PENDING | RETRY --receive (ReceiveMessage; attempt counted)--> RUNNING, invisible
        (claimed_until) for the request's invisible duration
        (FIFO group: only the first unfinished of its message group, see txbroker.ordering)
    RUNNING --ack (AckMessage)--> SUCCEEDED
            --change invisible duration--> RUNNING, claimed_until moved, a new claim token
            --forward to dead letter queue--> DEAD
            --invisibility expired (reclaim)--> RETRY, due at once | DEAD once its attempts
              reached the group's max attempts

The receipt handle a client gets names the delivery and its claim token: an ack, a
change or a forward with a handle whose claim was taken back (expired and reclaimed,
received again, or rotated by a change) matches no row and changes nothing.

Retries follow RocketMQ 5: the invisible duration is the wait before the next attempt.
A push consumer whose listener failed sets it from the backoff policy the server sent
(txbroker.remote_groups); a simple consumer that does not ack gets the message again once
the invisible duration it asked for has passed. When the invisibility ends, the attempt
has failed: the message is due again at once, or DEAD (a dead letter, replayable from the
admin like any other) once it had the group's max attempts.

PostgreSQL only (the gRPC endpoint needs it): each move is hand-written SQL.
"""

# S608: only table names from the models' metadata are formatted into SQL; values are parameters.
# ruff: noqa: S608
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from django.db import connections, transaction

from txbroker.db import broker_db
from txbroker.dbtime import SQL_NOW, sql_after
from txbroker.exceptions import ConfigurationError
from txbroker.models import Delivery, Message, RemoteSubscription, TraceEvent
from txbroker.ordering import claim_sql_condition

logger = logging.getLogger("txbroker.delivery")

Status = Delivery.Status
Event = TraceEvent.Event
HANDLE_PREFIX = "txb1"
DLV = Delivery._meta.db_table
MSG = Message._meta.db_table
TRACE = TraceEvent._meta.db_table


@dataclass(frozen=True)
class Received:
    """One delivery a ReceiveMessage call claimed, with its message."""

    delivery_id: int
    receipt_handle: str
    attempt: int
    msg_id: str
    topic: str
    tag: str
    keys: Any
    body: Any
    properties: Any
    producer_group: str
    message_group: str
    created_at: datetime
    resolved_at: Optional[datetime]
    deliver_at: Optional[datetime]


def receipt_handle(delivery_id: int, token: str) -> str:
    return f"{HANDLE_PREFIX}:{delivery_id}:{token}"


def parse_receipt_handle(handle: str) -> Optional[tuple[int, str]]:
    """(delivery id, claim token), or None for a handle this broker did not give."""
    prefix, _, rest = (handle or "").partition(":")
    number, _, token = rest.partition(":")
    if prefix != HANDLE_PREFIX or not number.isdigit() or len(token) != 32:
        return None
    return int(number), token


def _cursor():
    connection = connections[broker_db()]
    if connection.vendor != "postgresql":
        raise ConfigurationError("remote (gRPC) consumer groups need PostgreSQL")
    return connection.cursor()


def _trace_cte(event: str, detail_sql: str, *, outcome: str = "") -> str:
    """A CTE writing one trace row per row the ``moved`` CTE returns (its message_id,
    consumer_group and attempts columns, which ``detail_sql`` may use); the actor is the
    statement's last parameter."""
    event, outcome = getattr(event, "value", event), getattr(outcome, "value", outcome)
    return (
        f"t AS (INSERT INTO {TRACE} (message_id, at, event, consumer_group, detail, actor, outcome) "
        f"SELECT message_id, {SQL_NOW}, '{event}', consumer_group, {detail_sql}, %s, '{outcome}' FROM moved)"
    )


def who(client: str, address: str) -> str:
    """A client as the trace shows it: its id and address."""
    return f"{client} at {address}" if address else client


# --- receive ------------------------------------------------------------------------------
def remote_receive(
    *, group: str, topic: str, limit: int, invisible: float, client: str, address: str = ""
) -> list[Received]:
    """Claim up to ``limit`` due deliveries of remote ``group`` for messages of ``topic``
    (oldest first; a FIFO group's by the ordering rule), invisible to others for
    ``invisible`` seconds: one statement (SKIP LOCKED pick, conditional move to RUNNING
    counting the attempt, a trace row each, the messages read back)."""
    token = uuid.uuid4().hex
    actor = who(client, address)[:150]
    sql = (
        f"WITH picked AS (SELECT c.id FROM {DLV} AS c WHERE c.remote AND c.consumer_group = %s "
        f"AND c.status IN ('PENDING', 'RETRY') AND c.next_attempt_at <= {SQL_NOW} "
        f"AND EXISTS (SELECT 1 FROM {MSG} AS m WHERE m.msg_id = c.message_id AND m.topic = %s) "
        f"{claim_sql_condition('c')} "
        "ORDER BY c.next_attempt_at, c.id LIMIT %s FOR UPDATE SKIP LOCKED), "
        f"moved AS (UPDATE {DLV} AS d SET status = 'RUNNING', claim_token = %s, "
        f"claimed_until = {sql_after()}, started_at = {SQL_NOW}, attempts = d.attempts + 1, "
        f"updated_at = {SQL_NOW} WHERE d.id = ANY(ARRAY(SELECT id FROM picked)) "
        "AND d.status IN ('PENDING', 'RETRY') "
        "RETURNING d.id, d.message_id, d.consumer_group, d.attempts), "
        + _trace_cte(
            Event.DELIVERY_ATTEMPT,
            "'attempt ' || attempts || ': received over gRPC by ' || %s || ', invisible for ' || %s || ' s'",
        )
        + " SELECT moved.id, moved.attempts, m.msg_id, m.topic, m.tag, m.keys, m.body, m.properties, "
        "m.producer_group, m.message_group, m.created_at, m.resolved_at, m.deliver_at "
        f"FROM moved JOIN {MSG} AS m ON m.msg_id = moved.message_id ORDER BY moved.id"
    )
    params = [group, topic, limit, token, invisible, actor, f"{invisible:g}", actor]
    with _cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    field = Message._meta.get_field
    received = []
    for (
        pk,
        attempts,
        msg_id,
        m_topic,
        tag,
        keys,
        body,
        props,
        producer,
        mgroup,
        created,
        resolved,
        at,
    ) in rows:
        received.append(
            Received(
                delivery_id=pk,
                receipt_handle=receipt_handle(pk, token),
                attempt=attempts,
                msg_id=msg_id,
                topic=m_topic,
                tag=tag,
                keys=field("keys").from_db_value(keys, None, connections[broker_db()]),
                body=field("body").from_db_value(body, None, connections[broker_db()]),
                properties=field("properties").from_db_value(props, None, connections[broker_db()]),
                producer_group=producer,
                message_group=mgroup,
                created_at=created,
                resolved_at=resolved,
                deliver_at=at,
            )
        )
    # FIFO: claim_sql_condition lets one delivery of a message group through per claim.
    return received


# --- the moves of a received delivery ------------------------------------------------------
def _held(handle: str) -> Optional[tuple[int, str]]:
    return parse_receipt_handle(handle)


def remote_ack(*, group: str, handle: str, client: str, address: str = "") -> bool:
    """RUNNING -> SUCCEEDED, while the claim is the handle's. False: a stale or unknown
    handle (nothing written)."""
    held = _held(handle)
    if held is None:
        return False
    actor = who(client, address)[:150]
    sql = (
        f"WITH moved AS (UPDATE {DLV} SET status = 'SUCCEEDED', claim_token = '', claimed_until = NULL, "
        f"succeeded_at = {SQL_NOW}, updated_at = {SQL_NOW}, last_error = '' "
        "WHERE id = %s AND claim_token = %s AND status = 'RUNNING' AND remote AND consumer_group = %s "
        "RETURNING message_id, consumer_group, attempts), "
        + _trace_cte(
            Event.DELIVERY_ATTEMPT,
            "'attempt ' || attempts || ': SUCCEEDED, acknowledged over gRPC by ' || %s",
            outcome=TraceEvent.Outcome.SUCCEEDED,
        )
        + " SELECT count(*) FROM moved"
    )
    with _cursor() as cursor:
        cursor.execute(sql, [*held, group, actor, actor])
        return cursor.fetchone()[0] == 1


def remote_change_invisible(
    *, group: str, handle: str, invisible: float, client: str, address: str = ""
) -> Optional[str]:
    """RUNNING -> RUNNING invisible for ``invisible`` seconds from now, under a new claim
    token; returns the new receipt handle (None: stale or unknown handle, nothing
    written). A push consumer's nack is this, with its backoff delay."""
    held = _held(handle)
    if held is None:
        return None
    token = uuid.uuid4().hex
    actor = who(client, address)[:150]
    sql = (
        f"WITH moved AS (UPDATE {DLV} SET claim_token = %s, claimed_until = {sql_after()}, "
        f"updated_at = {SQL_NOW} "
        "WHERE id = %s AND claim_token = %s AND status = 'RUNNING' AND remote AND consumer_group = %s "
        "RETURNING message_id, consumer_group, attempts), "
        + _trace_cte(
            Event.DELIVERY_ATTEMPT,
            "'attempt ' || attempts || ': invisible for ' || %s || ' s more, by ' || %s",
        )
        + " SELECT count(*) FROM moved"
    )
    with _cursor() as cursor:
        cursor.execute(sql, [token, invisible, *held, group, f"{invisible:g}", actor, actor])
        moved = cursor.fetchone()[0] == 1
    return receipt_handle(held[0], token) if moved else None


def remote_forward_dead(*, group: str, handle: str, client: str, address: str = "", reason: str = "") -> bool:
    """RUNNING -> DEAD now (ForwardMessageToDeadLetterQueue: a FIFO push consumer that
    exhausted its local retries); a dead letter like any other, replayable."""
    held = _held(handle)
    if held is None:
        return False
    actor = who(client, address)[:150]
    error = reason or "forwarded to the dead letter queue by the client"
    sql = (
        f"WITH moved AS (UPDATE {DLV} SET status = 'DEAD', claim_token = '', claimed_until = NULL, "
        f"last_error = %s, updated_at = {SQL_NOW} "
        "WHERE id = %s AND claim_token = %s AND status = 'RUNNING' AND remote AND consumer_group = %s "
        "RETURNING message_id, consumer_group, attempts), "
        + _trace_cte(
            Event.DELIVERY_ATTEMPT,
            "'attempt ' || attempts || ': FAILED: ' || %s || ' (' || %s || ')'",
            outcome=TraceEvent.Outcome.FAILED,
        )
        + f", dead AS (INSERT INTO {TRACE} (message_id, at, event, consumer_group, detail, actor, outcome) "
        f"SELECT message_id, {SQL_NOW}, '{Event.DEAD.value}', consumer_group, %s, %s, '' FROM moved)"
        + " SELECT count(*) FROM moved"
    )
    with _cursor() as cursor:
        cursor.execute(sql, [error, *held, group, error, actor, actor, error, actor])
        return cursor.fetchone()[0] == 1


# --- invisibility expired ------------------------------------------------------------------
def remote_reclaim_expired(*, group: Optional[str] = None, limit: int = 1000) -> int:
    """Take back remote deliveries whose invisibility ended (database time): each a failed
    attempt, due again at once, or DEAD once it had its group's max attempts. ``group``:
    only that group's (a ReceiveMessage call does this before it claims). Returns how
    many moved."""
    only = "AND consumer_group = %s " if group else ""
    pick = (
        f"SELECT d.id, d.message_id, d.consumer_group, d.attempts, d.claim_token, m.topic FROM {DLV} AS d "
        f"JOIN {MSG} AS m ON m.msg_id = d.message_id WHERE d.remote AND d.status = 'RUNNING' "
        f"AND d.claimed_until < {SQL_NOW} {only.replace('consumer_group', 'd.consumer_group')}"
        "ORDER BY d.claimed_until LIMIT %s FOR UPDATE OF d SKIP LOCKED"
    )
    moved = 0
    with transaction.atomic(using=broker_db()), _cursor() as cursor:
        cursor.execute(pick, [*([group] if group else []), limit])
        expired = cursor.fetchall()
        limits = _max_attempts({(row[2], row[5]) for row in expired})
        for pk, msg_id, consumer_group, attempts, token, topic in expired:
            most = limits.get((consumer_group, topic))
            dead = attempts >= most
            moved += _expire(cursor, pk, msg_id, consumer_group, attempts, token, most, dead)
    return moved


def _max_attempts(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    from txbroker.conf import txsettings

    found = {
        (g, t): n
        for g, t, n in RemoteSubscription.objects.using(broker_db())
        .filter(consumer_group__in={g for g, _ in pairs})
        .values_list("consumer_group", "topic", "max_attempts")
    }
    return {pair: found.get(pair, txsettings.GRPC_MAX_ATTEMPTS) for pair in pairs}


def _expire(
    cursor, pk: int, msg_id: str, group: str, attempts: int, token: str, most: int, dead: bool
) -> int:
    """One expired delivery (locked by the caller's transaction): RETRY due now | DEAD, with
    its failed attempt's trace row (what the dashboard counts) and DEAD's."""
    what = f"attempt {attempts}: FAILED: not acknowledged within its invisible duration"
    failed = TraceEvent.Outcome.FAILED.value
    if dead:
        status = Status.DEAD
        rows = [
            (Event.DELIVERY_ATTEMPT.value, what, failed),
            (Event.DEAD.value, f"{attempts} attempts failed (max attempts {most}); last: {what}", ""),
        ]
    else:
        status = Status.RETRY
        rows = [(Event.DELIVERY_ATTEMPT.value, f"{what}; due again now (at most {most} attempts)", failed)]
    values = ", ".join(["(%s, %s, %s)"] * len(rows))
    cursor.execute(
        f"WITH moved AS (UPDATE {DLV} SET status = %s, claim_token = '', claimed_until = NULL, "
        f"next_attempt_at = {SQL_NOW}, last_error = %s, updated_at = {SQL_NOW} "
        "WHERE id = %s AND claim_token = %s AND status = 'RUNNING' RETURNING message_id, consumer_group), "
        f"t AS (INSERT INTO {TRACE} (message_id, at, event, consumer_group, detail, actor, outcome) "
        f"SELECT message_id, {SQL_NOW}, v.event, consumer_group, v.detail, '', v.outcome "
        f"FROM moved CROSS JOIN (VALUES {values}) AS v(event, detail, outcome)) SELECT count(*) FROM moved",
        [status.value, what, pk, token, *[value for row in rows for value in row]],
    )
    done = cursor.fetchone()[0]
    if done and dead:
        logger.error("delivery %s of message %s to remote group %s is DEAD: %s", pk, msg_id, group, what)
    return done
