"""A payment whose process is alive is not failed by a lost database session: the local
transaction that records it is tried again on a new session (a connection cut by
``pg_terminate_backend``, as a failover or a server restart does), within
PAYMENTS_RECORD_RETRY_SECONDS, so check-back never rolls it back."""

from __future__ import annotations

import pytest
from django.db import connection

from orders.tests.factories import OrderFactory
from payments import recording
from payments.tests.fixtures import effects
from txbroker.testing import side_connection

pytestmark = pytest.mark.django_db(transaction=True)


def cut_own_session() -> None:
    """Terminate this thread's PostgreSQL session from another connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    killer = side_connection()  # psycopg 3 or psycopg2, as Django's
    try:
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        killer.commit()
    finally:
        killer.close()


def test_a_session_cut_inside_the_local_transaction_is_retried_and_the_payment_commits(
    client_for, monkeypatch, broker_env, caplog
):
    order = OrderFactory(amount="42.00")
    original = recording._payment_record
    tries = []

    def cut_on_the_first_try(message, intent):
        tries.append(message.msg_id)
        if len(tries) == 1:
            connection.ensure_connection()
            cut_own_session()  # the next statement of this try fails: the session is gone
        return original(message, intent)

    monkeypatch.setattr(recording, "_payment_record", cut_on_the_first_try)
    response = client_for(order.user).post(
        "/api/payments/", {"order_id": order.order_id, "amount": "42.00"}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["transaction_state"] == "COMMIT"
    assert len(tries) == 2 and tries[0] == tries[1]
    state = effects(order.order_id)
    assert state["messages"] == ["COMMITTED"]
    assert state["charges"] == ["RECORDED"]
    assert len(state["records"]) == 1
    assert "lost its database session; trying again" in caplog.text


def test_a_session_lost_for_longer_than_the_retry_bound_answers_unknown(
    client_for, monkeypatch, broker_env, settings
):
    settings.PAYMENTS_RECORD_RETRY_SECONDS = 0.5
    order = OrderFactory(amount="43.00")
    original = recording._payment_record
    tries = []

    def always_cut(message, intent):
        tries.append(1)
        connection.ensure_connection()
        cut_own_session()
        return original(message, intent)

    monkeypatch.setattr(recording, "_payment_record", always_cut)
    response = client_for(order.user).post(
        "/api/payments/", {"order_id": order.order_id, "amount": "43.00"}, format="json"
    )

    assert response.status_code == 202, response.json()  # check-back settles it
    assert 2 <= len(tries) <= 5
    assert effects(order.order_id)["messages"] == ["HALF"]
