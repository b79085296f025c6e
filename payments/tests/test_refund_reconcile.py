"""Refund reconciliation: a refund its process left PENDING or APPROVED (killed between the
gateway and the message) is finished by the charge reconciliation task, once, with the same
gateway key; young refunds and refunds whose message is still HALF are left alone."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from orders.tests.factories import OrderFactory
from payments import refunds
from payments.clock import db_ago
from payments.events import TAG_REFUND, TOPIC
from payments.models import Charge, Refund, SimulatedGatewayRefund
from payments.refund_reconciliation import refund_reconcile_stale
from payments.tasks import charge_reconcile
from txbroker import LocalTransactionState, OutgoingMessage
from txbroker.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def paid_order(client_for, amount="30.00"):
    order = OrderFactory(amount=amount)
    client = client_for(order.user)
    response = client.post(
        "/api/payments/", {"order_id": order.order_id, "amount": str(order.amount)}, format="json"
    )
    assert response.status_code == 201, response.content
    return order, client


def left_pending(order) -> Refund:
    """A refund claimed by a process that died before asking the gateway."""
    charge = Charge.objects.get(order_id=order.order_id, status=Charge.Status.RECORDED)
    refund, created = refunds._refund_claim(charge=charge, actor=order.user, reason="died")
    assert created
    return refund


def left_approved(order) -> Refund:
    """A refund the gateway made, whose process died before sending its message."""
    refund = left_pending(order)
    refunds._refund_at_gateway(refund=refund, charge=refund.charge)
    refund.refresh_from_db()
    assert refund.status == Refund.Status.APPROVED
    return refund


def age(refund: Refund, seconds: float = 120) -> None:
    Refund.objects.filter(pk=refund.pk).update(updated_at=db_ago(seconds))


def refund_messages(order_id: str):
    return Message.objects.filter(topic=TOPIC, tag=TAG_REFUND, message_group=order_id)


def gateway_refunds(refund: Refund) -> int:
    return SimulatedGatewayRefund.objects.filter(idempotency_key=refund.idempotency_key).count()


@pytest.mark.parametrize("left", [left_pending, left_approved], ids=["pending", "approved"])
def test_a_refund_left_by_a_dead_process_is_finished_once_and_its_owner_then_gets_200(client_for, left):
    order, client = paid_order(client_for)
    refund = left(order)
    # Meanwhile the owner's retries are told it is being refunded.
    busy = client.post(f"/api/payments/{order.order_id}/refund/", None, format="json")
    assert busy.status_code == 409
    age(refund)

    report = refund_reconcile_stale()

    assert report.examined == 1 and report.outcomes == {"recorded": 1}
    refund.refresh_from_db()
    assert refund.status == Refund.Status.REFUNDED
    (message,) = refund_messages(order.order_id)
    assert message.state == Message.State.COMMITTED and message.msg_id == refund.message_id
    assert message.properties["refund_id"] == str(refund.pk)
    assert gateway_refunds(refund) == 1
    answer = client.post(f"/api/payments/{order.order_id}/refund/", None, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["message_id"] == refund.message_id
    assert refund_reconcile_stale().examined == 0


def test_young_refunds_are_left_to_their_process(client_for):
    order, _ = paid_order(client_for)
    refund = left_approved(order)

    assert refund_reconcile_stale().examined == 0
    refund.refresh_from_db()
    assert refund.status == Refund.Status.APPROVED
    assert not refund_messages(order.order_id).exists()


def test_a_refund_whose_message_is_half_is_left_to_check_back(client_for):
    order, _ = paid_order(client_for)
    refund = left_approved(order)
    message = OutgoingMessage(
        topic=TOPIC,
        tag=TAG_REFUND,
        keys=(order.order_id,),
        body={"order_id": order.order_id},
        properties={"refund_id": str(refund.pk)},
        message_group=order.order_id,
    )
    from payments.checkers import refund_producer

    sent = refund_producer.send_message_in_transaction(message, lambda m, a: LocalTransactionState.UNKNOWN)
    assert sent.message_state == Message.State.HALF
    age(refund)

    report = refund_reconcile_stale()

    assert report.outcomes == {"left_to_check_back": 1}
    assert refund_messages(order.order_id).count() == 1
    refund.refresh_from_db()
    assert refund.status == Refund.Status.APPROVED


def test_the_dead_process_coming_back_after_reconciliation_changes_nothing(client_for):
    """A frozen web process resumes after reconciliation finished its refund: its gateway
    call is answered from the same key and its message rolls back."""
    order, _ = paid_order(client_for)
    refund = left_approved(order)
    age(refund)
    refund_reconcile_stale()

    stale_copy = Refund.objects.get(pk=refund.pk)
    Refund.objects.filter(pk=refund.pk).update(status=Refund.Status.REFUNDED)  # as it is
    stale_copy.status = Refund.Status.APPROVED  # what the frozen process still believes
    with pytest.raises(refunds.PaymentUnavailable):
        refunds._refund_message_send(refund=stale_copy)

    assert gateway_refunds(refund) == 1
    states = sorted(refund_messages(order.order_id).values_list("state", flat=True))
    assert states == [Message.State.COMMITTED, Message.State.ROLLED_BACK]
    assert (
        Refund.objects.get(pk=refund.pk).message_id
        == refund_messages(order.order_id).get(state=Message.State.COMMITTED).msg_id
    )


def test_an_abandoned_charges_refund_is_finished_without_a_message(client_for):
    order, _ = paid_order(client_for)
    charge = Charge.objects.get(order_id=order.order_id)
    Charge.objects.filter(pk=charge.pk).update(status=Charge.Status.ABANDONED)
    charge.refresh_from_db()
    refund, _ = refunds._refund_claim(charge=charge, actor=order.user, reason="operator")
    age(refund)

    assert refund_reconcile_stale().outcomes == {"recorded": 1}
    refund.refresh_from_db()
    assert refund.status == Refund.Status.REFUNDED and refund.message_id == ""
    assert gateway_refunds(refund) == 1
    assert not refund_messages(order.order_id).exists()


def test_the_beat_task_and_the_command_finish_refunds(client_for):
    first, _ = paid_order(client_for)
    second, _ = paid_order(client_for)
    age(left_pending(first))
    age(left_approved(second))

    result = charge_reconcile.apply().get()
    assert result["refunds"] == {"examined": 1 + 1, "outcomes": {"recorded": 2}}

    third, _ = paid_order(client_for)
    age(left_pending(third))
    out = StringIO()
    call_command("payments_reconcile", stdout=out)
    assert "1 unfinished refund: 1 recorded" in out.getvalue()
    assert Refund.objects.filter(status=Refund.Status.REFUNDED).count() == 3
