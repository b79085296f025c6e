"""What must hold for the refunds of a chaos run (txbroker design), once settled.

Every refund the gateway made (its books: ``SimulatedGatewayRefund``) is recorded REFUNDED
with its message, and a refund the client was told about (200/201) is one of them. For each
refunded order: the order REFUNDED, one REFUND points record taking back exactly what its
payment awarded (the order's records net to zero), one REFUND SMS; nothing of a refund for an
order that has none. And the reason refunds ride ordered messages: per order and per
consumer group, the payment was consumed before the refund (the refund's sequence in the
order's message group is the later one, its delivery started only after the payment's
delivery succeeded, and its effect rows came after the payment's).

A poison order's refund message is poison too (picked by the same key): its deliveries end
DEAD like its payment's, and its effects are not checked (counted under ``poison``).

Counted like the payment checks (``harness.chaos.invariants``): ``lost`` (a refund made and
not recorded or not applied), ``doubled`` (a refund effect twice, or with no refund behind
it), ``stuck`` (a refund left PENDING or APPROVED), ``other`` (a refund consumed before its
payment, points not netting to zero).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any


def check_refunds(
    *, records: dict, outcomes: list, poison_orders: set, lost, doubled, stuck, other, note
) -> dict[str, Any]:
    from notifications.models import Notification
    from orders.models import Order
    from payments.models import Refund, SimulatedGatewayRefund
    from points.models import PointsRecord
    from txbroker.models import Delivery

    refunds = {
        r["order_id"]: r
        for r in Refund.objects.filter(status=Refund.Status.REFUNDED)
        .exclude(message_id="")
        .values("order_id", "message_id", "amount", "charge_id")
    }
    for order_id, status in Refund.objects.exclude(status=Refund.Status.REFUNDED).values_list(
        "order_id", "status"
    ):
        note("refund_unfinished", stuck, f"{order_id}: {status}")
    keys = {f"refund-{r['charge_id']}" for r in Refund.objects.values("charge_id")}
    recorded_keys = {f"refund-{r['charge_id']}" for r in refunds.values()}
    for key in SimulatedGatewayRefund.objects.values_list("idempotency_key", flat=True):
        if key not in recorded_keys and key in keys:
            note("refund_at_gateway_unrecorded", lost, key)
    for outcome in outcomes:
        if outcome.refund_final_status in (200, 201) and outcome.order_id not in refunds:
            note("refund_acknowledged_without_record", lost, outcome.order_id)

    orders = dict(Order.objects.values_list("order_id", "status"))
    points: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for order_id, reason, pk, value in PointsRecord.objects.values_list("order_id", "reason", "pk", "points"):
        points[order_id][reason].append((pk, value))
    sms: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for order_id, kind, pk in Notification.objects.filter(channel=Notification.Channel.SMS).values_list(
        "order_id", "kind", "pk"
    ):
        sms[order_id][kind].append(pk)

    for order_id in set(refunds) - poison_orders:
        if orders.get(order_id) != Order.Status.REFUNDED:
            note("order_not_refunded", lost, f"{order_id}: {orders.get(order_id)}")
        paid_rows, taken = points[order_id]["PAYMENT"], points[order_id]["REFUND"]
        if not taken:
            note("refund_points_missing", lost, order_id)
        elif len(taken) > 1:
            note("refund_points_doubled", doubled, order_id, len(taken) - 1)
        elif paid_rows and sum(v for _, v in paid_rows) + taken[0][1] != 0:
            note("refund_points_not_net_zero", other, f"{order_id}: {paid_rows} {taken}")
        if paid_rows and taken and max(pk for pk, _ in paid_rows) > taken[0][0]:
            note("points_refunded_before_awarded", other, order_id)
        refund_sms = sms[order_id]["REFUND"]
        if not refund_sms:
            note("refund_notification_missing", lost, order_id)
        elif len(refund_sms) > 1:
            note("refund_notification_doubled", doubled, order_id, len(refund_sms) - 1)
        if refund_sms and sms[order_id]["PAYMENT"] and min(refund_sms) < max(sms[order_id]["PAYMENT"]):
            note("refund_sms_before_payment_sms", other, order_id)
    for order_id, status in orders.items():
        if status == Order.Status.REFUNDED and order_id not in refunds:
            note("refunded_without_refund", doubled, order_id)
    for order_id, rows in points.items():
        if rows["REFUND"] and order_id not in refunds:
            note("refund_points_without_refund", doubled, order_id)
    for order_id, kinds in sms.items():
        if kinds["REFUND"] and order_id not in refunds:
            note("refund_notification_without_refund", doubled, order_id)

    checked = {o: r for o, r in refunds.items() if o not in poison_orders}
    pairs = _consumed_in_order(checked, records, other, note, Delivery)
    requested = [o for o in outcomes if o.refund_requested]
    return {
        "requested": len(requested),
        "refunded": len(refunds),
        "answers": dict(Counter(str(s) for o in requested for s in o.refund_answers)),
        "unfinished_requests": sum(1 for o in requested if o.refund_final_status not in (200, 201)),
        "poison": len(set(refunds) & poison_orders),
        "consumer_group_pairs_in_order": pairs,
        "orders_points_net_zero": sum(
            1 for order_id in checked if sum(v for rows in points[order_id].values() for _, v in rows) == 0
        ),
    }


def _consumed_in_order(refunds: dict, records: dict, other, note, Delivery) -> int:
    """Per refunded order and consumer group: the payment's delivery SUCCEEDED before the
    refund's delivery started, and the refund's sequence is the later one. Returns how many
    (order, group) pairs were checked and held."""
    message_ids = {r["message_id"] for r in refunds.values()} | {
        records[o]["message_id"] for o in refunds if o in records
    }
    deliveries = {
        (d["message_id"], d["consumer_group"]): d
        for d in Delivery.objects.filter(message_id__in=message_ids).values(
            "message_id", "consumer_group", "status", "sequence", "started_at", "succeeded_at"
        )
    }
    held = 0
    for order_id, refund in refunds.items():
        record = records.get(order_id)
        if record is None:
            note("refund_without_payment_record", other, order_id)
            continue
        for (msg_id, group), refund_delivery in deliveries.items():
            if msg_id != refund["message_id"]:
                continue
            pay = deliveries.get((record["message_id"], group))
            if pay is None:
                note("refund_delivery_without_payment_delivery", other, f"{order_id} {group}")
                continue
            in_order = (
                pay["status"] == "SUCCEEDED"
                and pay["sequence"] is not None
                and refund_delivery["sequence"] is not None
                and pay["sequence"] < refund_delivery["sequence"]
                and (
                    refund_delivery["started_at"] is None
                    or (
                        pay["succeeded_at"] is not None
                        and pay["succeeded_at"] <= refund_delivery["started_at"]
                    )
                )
            )
            if in_order:
                held += 1
            else:
                note(
                    "refund_consumed_before_payment",
                    other,
                    f"{order_id} {group}: pay {pay} refund {refund_delivery}",
                )
    return held
