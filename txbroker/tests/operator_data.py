"""Messages in every state, made in process through the real producer, check-back and
delivery code (no rows written by hand), for the operator tests (admin, API, commands,
metrics). Needs a transactional test: the producer refuses to run inside an atomic block."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from txbroker import LocalTransactionState, checkback, delivery
from txbroker.models import Delivery, Message
from txbroker.tests.helpers import send
from txbroker.tests.support.models import Plan

ALL_GROUPS = ("test_all_group", "test_pay_group", "test_refund_group")


def run_deliveries(rounds: int = 10) -> None:
    """Run every waiting delivery now, retries included, until none is waiting."""
    for _ in range(rounds):
        Delivery.objects.filter(status__in=Delivery.WAITING).update(next_attempt_at=timezone.now())
        delivery.deliver_due(budget_seconds=5)
        if not Delivery.objects.filter(status__in=Delivery.WAITING).exists():
            return


def make_committed(key: str, *, tag: str = "pay") -> str:
    """COMMITTED, every delivery SUCCEEDED."""
    msg_id = send(key, tag=tag).msg_id
    run_deliveries()
    return msg_id


def make_dead(key: str, broker_setting, *, tag: str = "pay") -> str:
    """COMMITTED, every delivery DEAD (its handler keeps failing; no retry allowed)."""
    Plan.objects.update_or_create(key=key, defaults={"fail_times": 99})
    broker_setting("TXBROKER_MAX_RECONSUME_TIMES", "0")
    msg_id = send(key, tag=tag).msg_id
    run_deliveries()
    broker_setting("TXBROKER_MAX_RECONSUME_TIMES", None)
    assert set(Delivery.objects.filter(message_id=msg_id).values_list("status", flat=True)) == {"DEAD"}
    return msg_id


def make_half(key: str) -> str:
    """HALF: the local transaction answered UNKNOWN; not due for a check for an hour."""
    return send(key, answer=LocalTransactionState.UNKNOWN, check_immunity_seconds=3600).msg_id


def make_rolled_back(key: str) -> str:
    return send(key, answer=LocalTransactionState.ROLLBACK).msg_id


def make_discarded(key: str, broker_setting) -> str:
    """DISCARDED: its checker answers UNKNOWN and TXBROKER_CHECK_MAX is 1."""
    Plan.objects.update_or_create(key=key, defaults={"check_answer": "UNKNOWN"})
    msg_id = send(key, answer=LocalTransactionState.UNKNOWN).msg_id
    broker_setting("TXBROKER_CHECK_MAX", "1")
    Message.objects.filter(pk=msg_id).update(next_check_at=timezone.now() - timedelta(seconds=1))
    checkback.check_pass()
    broker_setting("TXBROKER_CHECK_MAX", None)
    assert Message.objects.get(pk=msg_id).state == Message.State.DISCARDED
    return msg_id


@pytest.fixture(autouse=True)
def plain_http(settings) -> None:
    """Tests speak plain HTTP: no redirect to HTTPS (production settings have it on)."""
    settings.SECURE_SSL_REDIRECT = False
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False


@dataclass
class World:
    committed: str
    dead: str
    half: str
    rolled_back: str
    discarded: str


@pytest.fixture
def world(transactional_db, broker_env, broker_setting) -> World:
    """One message in each state, each with its own order key."""
    return World(
        committed=make_committed("order-ok"),
        dead=make_dead("order-dead", broker_setting),
        half=make_half("order-half"),
        rolled_back=make_rolled_back("order-rb"),
        discarded=make_discarded("order-discarded", broker_setting),
    )


def make_user(username: str, *, staff: bool, perms: tuple[str, ...] = ()):
    user = get_user_model().objects.create_user(username=username, password="pw-" + username, is_staff=staff)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def bulk_insert_messages(count: int, *, start: int = 0, groups: tuple[str, ...] = ALL_GROUPS) -> None:
    """``count`` COMMITTED messages numbered from ``start + 1`` (key ``bulk-<n>``, newer as
    ``n`` grows), their keys and one SUCCEEDED delivery per group, by ``INSERT ... SELECT
    generate_series`` (seconds for hundreds of thousands of rows)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO txbroker_message (msg_id, topic, tag, keys, body, properties, producer_group,
                                          state, check_times, created_at, resolved_at)
            SELECT lpad(to_hex(i), 12, '0') || md5(i::text)::varchar(20), 'bulk_topic', 'pay',
                   jsonb_build_array('bulk-' || i), jsonb_build_object('order', i), '{}'::jsonb,
                   'bulk_producer_group', 'COMMITTED', 0,
                   now() - make_interval(secs => 300000 - i), now() - make_interval(secs => 300000 - i)
            FROM generate_series(%s, %s) AS i
            """,
            [start + 1, start + count],
        )
        cursor.execute(
            """
            INSERT INTO txbroker_messagekey (message_id, key)
            SELECT msg_id, keys->>0 FROM txbroker_message
            WHERE topic = 'bulk_topic' AND NOT EXISTS (SELECT 1 FROM txbroker_messagekey k WHERE k.message_id = msg_id)
            """
        )
        for group in groups:
            cursor.execute(
                """
                INSERT INTO txbroker_delivery (message_id, consumer_group, status, attempts, next_attempt_at,
                                               claim_token, last_error, created_at, updated_at, succeeded_at)
                SELECT msg_id, %s, 'SUCCEEDED', 1, created_at, '', '', created_at, created_at, created_at
                FROM txbroker_message m WHERE topic = 'bulk_topic' AND NOT EXISTS
                    (SELECT 1 FROM txbroker_delivery d WHERE d.message_id = m.msg_id AND d.consumer_group = %s)
                """,
                [group, group],
            )
        cursor.execute("ANALYZE txbroker_message")
        cursor.execute("ANALYZE txbroker_delivery")
        cursor.execute("ANALYZE txbroker_messagekey")
