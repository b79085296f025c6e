"""What must hold once a chaos run has settled, checked on the final state and counted.

Counted as ``lost``: an effect a successful payment should have and does not (order not
PAID, no points record, no notification; a user's balance short of their records), and a
payment the client was told succeeded (200/201) with no record, a charge the gateway
approved that is neither recorded nor marked for refund (ABANDONED). ``doubled``: an effect
recorded more than once, an effect with no successful payment behind it, a balance above
the user's records. ``stuck``: what is left unsettled: HALF messages, deliveries PENDING,
RETRY or RUNNING, DEAD deliveries, DISCARDED messages the checker could have settled,
charges still PENDING or APPROVED (a payment whose process died, not reconciled).
Anything else wrong (wrong points, a message settled against its record, a declined
payment with a record) is counted under ``other_violations``.

Poison messages (``--faults poison``: the messages ``txbroker.faults.is_poison`` picks kill
their worker in every handler attempt) are expected to end with every delivery DEAD,
"worker died during the handler", after max reconsume times + 1 attempts: such a delivery
is a dead letter doing its job, not stuck, and the effects it never applied are counted
under ``poison``, not ``lost``. A poison delivery still open, or DEAD for another reason,
is stuck. In the naive design poison is by order id: its three tasks kill their worker.

``false_rollbacks``: payment messages rolled back by check-back whose producer was alive
(``harness.chaos.rollbacks``).

Refunds (txbroker design) are checked by ``harness.chaos.refund_checks``, counted under the
same four kinds; a refunded order counts as paid-then-refunded (REFUNDED, not PAID).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness.chaos.history import ProcessHistory
from harness.chaos.load import Outcome
from harness.chaos.refund_checks import check_refunds
from harness.chaos.rollbacks import check_back_rollbacks

SMS_ORDER = re.compile(r"for order (\S+) received")


def _floor_points(amount: Decimal) -> int:
    from points.services import points_for_amount

    return points_for_amount(Decimal(amount))


def check(
    *,
    design: str,
    outcomes: list[Outcome],
    sms_path: Path,
    poison_share: float = 0.0,
    history: ProcessHistory | None = None,
    timeline: list[tuple[float, str]] | None = None,
    crashes: list[tuple[float, float | None]] | None = None,
) -> dict[str, Any]:
    from notifications.models import Notification
    from orders.models import Order
    from payments.models import Charge, PaymentRecord, Refund
    from points.models import PointsRecord, UserPoints
    from txbroker.faults import is_poison

    found: dict[str, Any] = {"design": design}
    lost: Counter = Counter()
    doubled: Counter = Counter()
    stuck: Counter = Counter()
    other: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)

    def note(kind: str, counter: Counter, item: str, n: int = 1) -> None:
        counter[kind] += n
        if len(examples[kind]) < 5:
            examples[kind].append(item)

    records = {
        r["order_id"]: r
        for r in PaymentRecord.objects.filter(status=PaymentRecord.Status.SUCCESS).values(
            "order_id", "user_id", "amount", "message_id"
        )
    }
    orders = dict(Order.objects.values_list("order_id", "status"))
    refunded = set(
        Refund.objects.filter(status=Refund.Status.REFUNDED)
        .exclude(message_id="")
        .values_list("order_id", flat=True)
    )
    points_rows: dict[str, list[int]] = defaultdict(list)
    # Payment awards and payment SMS (a refund adds a REFUND record and a REFUND SMS).
    for order_id, points in PointsRecord.objects.filter(reason=PointsRecord.Reason.PAYMENT).values_list(
        "order_id", "points"
    ):
        points_rows[order_id].append(points)
    notifications = Counter(
        Notification.objects.filter(
            channel=Notification.Channel.SMS, kind=Notification.Kind.PAYMENT
        ).values_list("order_id", flat=True)
    )

    # Poison: by order id in both designs (txbroker picks a message by its first key).
    poison_orders = {order_id for order_id in records if poison_share and is_poison(order_id, poison_share)}
    poison_missing: Counter = Counter()

    # Every SUCCESS payment record: order PAID, one points record of floor(amount), one SMS.
    for order_id, record in records.items():
        missing = poison_missing if order_id in poison_orders else lost
        expected = Order.Status.REFUNDED if order_id in refunded else Order.Status.PAID
        if orders.get(order_id) != expected:
            note("order_not_paid", missing, f"{order_id}: {orders.get(order_id)}, expected {expected}")
        rows = points_rows.get(order_id, [])
        if not rows:
            note("points_record_missing", missing, order_id)
        elif len(rows) > 1:
            note("points_record_doubled", doubled, order_id, len(rows) - 1)
        if rows and rows[0] != _floor_points(record["amount"]):
            note("points_wrong_amount", other, f"{order_id}: {rows[0]} for {record['amount']}")
        count = notifications.get(order_id, 0)
        if count == 0:
            note("notification_missing", missing, order_id)
        elif count > 1:
            note("notification_doubled", doubled, order_id, count - 1)
    # Effects with no successful payment behind them.
    for order_id, status in orders.items():
        if status == Order.Status.PAID and order_id not in records:
            note("paid_without_payment", doubled, order_id)
    for order_id in points_rows:
        if order_id not in records:
            note("points_without_payment", doubled, order_id)
    for order_id in notifications:
        if order_id not in records:
            note("notification_without_payment", doubled, order_id)

    # Each user's balance is the sum of their records.
    sums: dict[int, int] = defaultdict(int)
    for user_id, points in PointsRecord.objects.values_list("user_id", "points"):
        sums[user_id] += points
    balances = dict(UserPoints.objects.values_list("user_id", "points"))
    for user_id in set(sums) | set(balances):
        balance, total = balances.get(user_id, 0), sums.get(user_id, 0)
        if balance > total:
            note("balance_above_records", doubled, f"user {user_id}: {balance} > {total}")
        elif balance < total:
            note("balance_below_records", lost, f"user {user_id}: {balance} < {total}")

    # What the clients were told.
    answers: Counter = Counter()
    for outcome in outcomes:
        for status in outcome.answers:
            answers[status] += 1
            if status in (200, 201) and outcome.order_id not in records:
                note("acknowledged_without_record", lost, outcome.order_id)
            if status == 402 and outcome.order_id in records:
                note("declined_with_record", other, outcome.order_id)
    found["http_answers"] = {str(k): v for k, v in sorted(answers.items())}

    found["poison"] = {
        "share": poison_share,
        "payments": len(poison_orders),
        "effects_missing": sum(poison_missing.values()),
    }
    false_rollbacks = 0
    if design == "txbroker":
        found["messages"], found["deliveries"] = _check_broker(
            records, lost, stuck, other, note, poison_share=poison_share, poison=found["poison"]
        )
        if history is not None:
            found["rollbacks_by_check_back"], found["false_rollback_examples"] = check_back_rollbacks(
                history, timeline or [], crashes or []
            )
            false_rollbacks = found["rollbacks_by_check_back"]["false"]
        found["refunds"] = check_refunds(
            records=records,
            outcomes=outcomes,
            poison_orders=poison_orders,
            lost=lost,
            doubled=doubled,
            stuck=stuck,
            other=other,
            note=note,
        )
    found["false_rollbacks"] = false_rollbacks
    found["charges_reconciled"] = _check_charges(records, lost, stuck, note)

    # Informational: the SMS provider's view (at-least-once: a crash between the provider's
    # accept and the commit sends it again), and the gateway charges by status.
    sent = Counter()
    if sms_path.exists():
        for line in sms_path.read_text(encoding="utf-8").splitlines():
            match = SMS_ORDER.search(json.loads(line)["text"]) if line.strip() else None
            if match:
                sent[match.group(1)] += 1
    found["sms_provider"] = {
        "sent": sum(sent.values()),
        "orders_sent_more_than_once": sum(1 for n in sent.values() if n > 1),
        "extra_sends": sum(n - 1 for n in sent.values() if n > 1),
    }
    found["charges"] = dict(Counter(Charge.objects.values_list("status", flat=True)))

    succeeded = sum(1 for o in outcomes if o.final_status in (200, 201))
    found["payments"] = {
        "attempted": len(outcomes),
        "orders_created": sum(1 for o in outcomes if o.order_created),
        "succeeded": succeeded,
        "pending_202": sum(1 for o in outcomes if o.final_status == 202),
        "declined": sum(1 for o in outcomes if o.final_status == 402),
        "declines_planned": sum(1 for o in outcomes if o.decline),
        "unfinished": sum(1 for o in outcomes if o.final_status not in (200, 201, 202, 402)),
        "records_success": len(records),
        "orders_paid": sum(1 for s in orders.values() if s == Order.Status.PAID),
    }
    found["unfinished_examples"] = [
        f"{o.order_id}: {o.final_status} {o.detail} (answers {o.answers})"
        for o in outcomes
        if o.final_status not in (200, 201, 202, 402)
    ][:5]
    found["lost_by_kind"] = dict(lost)
    found["doubled_by_kind"] = dict(doubled)
    found["stuck_by_kind"] = dict(stuck)
    found["other_violations_by_kind"] = dict(other)
    found["examples"] = dict(examples)
    found["lost"] = sum(lost.values())
    found["doubled"] = sum(doubled.values())
    found["stuck"] = sum(stuck.values())
    found["other_violations"] = sum(other.values())
    found["violations"] = (
        found["lost"] + found["doubled"] + found["stuck"] + found["other_violations"] + false_rollbacks
    )
    return found


def _check_charges(records, lost, stuck, note) -> dict[str, int]:
    """Every charge settled once quiet: none left PENDING/APPROVED, and every charge the
    gateway approved (its books: ``SimulatedGatewayCharge``) is RECORDED with its payment or
    ABANDONED (to refund). A charge whose gateway call never ran (its process died first) or
    failed may end ERROR: nothing was charged. Returns the final statuses of the charges
    reconciliation settled."""
    from payments.models import Charge, SimulatedGatewayCharge
    from payments.reconciliation import CHARGE_RECONCILED

    for pk, order_id, status in Charge.objects.unsettled().values_list("pk", "order_id", "status"):
        note("charge_unsettled", stuck, f"charge {pk} ({order_id}) {status}")
    approved = set(
        SimulatedGatewayCharge.objects.filter(
            approved=True, idempotency_key__startswith=Charge.IDEMPOTENCY_KEY_PREFIX
        ).values_list("idempotency_key", flat=True)
    )
    for pk, order_id, status in Charge.objects.exclude(
        status__in=[*Charge.UNSETTLED, Charge.Status.RECORDED, Charge.Status.ABANDONED]
    ).values_list("pk", "order_id", "status"):
        if f"{Charge.IDEMPOTENCY_KEY_PREFIX}{pk}" in approved:
            note("charge_approved_unaccounted", lost, f"charge {pk} ({order_id}) {status}")
    for pk, order_id in Charge.objects.filter(status=Charge.Status.RECORDED).values_list("pk", "order_id"):
        if order_id not in records:
            note("charge_recorded_without_record", lost, f"charge {pk} ({order_id})")
    return dict(
        Counter(Charge.objects.filter(reason__startswith=CHARGE_RECONCILED).values_list("status", flat=True))
    )


def _check_broker(
    records, lost, stuck, other, note, *, poison_share: float, poison: dict
) -> tuple[dict, dict]:
    from orders.events import TOPIC as ORDER_TOPIC
    from payments.events import TOPIC
    from payments.models import Refund
    from txbroker.delivery_transitions import VOID_BATCH, WORKER_LOST, max_reconsume_times
    from txbroker.faults import is_poison, poison_identity
    from txbroker.models import Delivery, Message, TraceEvent
    from txbroker.registry import registry

    states = Counter(Message.objects.filter(topic=TOPIC).values_list("state", flat=True))
    by_message = {r["message_id"]: order_id for order_id, r in records.items()}
    # A refund's message is recorded by its Refund (harness.chaos.refund_checks).
    by_message.update(Refund.objects.exclude(message_id="").values_list("message_id", "order_id"))
    checked = set(
        TraceEvent.objects.filter(event=TraceEvent.Event.CHECK)
        .values_list("message_id", flat=True)
        .distinct()
    )
    settled_by_check: Counter = Counter()
    for msg_id, state, keys in Message.objects.filter(topic=TOPIC).values_list("msg_id", "state", "keys"):
        key = keys[0] if keys else ""
        if msg_id in checked:
            settled_by_check[state] += 1
        if state == Message.State.HALF:
            note("message_half", stuck, f"{msg_id} ({key})")
        elif state == Message.State.COMMITTED and msg_id not in by_message:
            note("committed_without_record", other, f"{msg_id} ({key})")
        elif state == Message.State.ROLLED_BACK and msg_id in by_message:
            note("rolled_back_with_record", other, f"{msg_id} ({key})")
        elif state == Message.State.DISCARDED:
            details = TraceEvent.objects.filter(message_id=msg_id, event=TraceEvent.Event.CHECK).values_list(
                "detail", flat=True
            )
            if not details or not all("UNKNOWN" in d for d in details):
                note("discarded_but_checker_could_tell", stuck, f"{msg_id} ({key})")
    for order_id, record in records.items():
        state = Message.objects.filter(pk=record["message_id"]).values_list("state", flat=True).first()
        if state != Message.State.COMMITTED:
            note("record_without_committed_message", lost, f"{order_id}: message {state}")

    poison_messages = (
        {
            msg_id
            for msg_id, keys in Message.objects.filter(topic=TOPIC).values_list("msg_id", "keys")
            if is_poison(poison_identity(msg_id, keys), poison_share)
        }
        if poison_share
        else set()
    )
    poison_dead = 0
    # The orders' payment timers (order_topic) are no payment work: PENDING until their due
    # time (ORDERS_PAYMENT_TIMEOUT outlasts a run), RECALLED once paid. Counted apart.
    timers = Counter(Delivery.objects.filter(message__topic=ORDER_TOPIC).values_list("status", flat=True))
    deliveries = Counter(
        Delivery.objects.exclude(message__topic=ORDER_TOPIC).values_list("status", flat=True)
    )
    unfinished = Delivery.objects.exclude(status__in=[Delivery.Status.SUCCEEDED]).exclude(
        message__topic=ORDER_TOPIC
    )
    for row in unfinished.values(
        "message_id", "message__topic", "consumer_group", "status", "last_error", "attempts"
    ):
        if row["message_id"] in poison_messages and row["status"] == Delivery.Status.DEAD:
            limit = max_reconsume_times(registry.consumer_for(row["message__topic"], row["consumer_group"]))
            if row["last_error"].startswith(WORKER_LOST) and row["attempts"] == limit + 1:
                poison_dead += 1  # a dead letter doing its job
                continue
        kind = "delivery_dead" if row["status"] == Delivery.Status.DEAD else "delivery_open"
        if row["message_id"] in poison_messages:
            kind = f"poison_{kind}"
        last = (row["last_error"].strip().splitlines() or [""])[-1][:160]
        note(
            kind,
            stuck,
            f"{row['message_id']} {row['consumer_group']} {row['status']} after {row['attempts']} attempts: {last}",
        )
    poison["messages"] = len(poison_messages)
    poison["deliveries_dead"] = poison_dead
    first_errors = TraceEvent.objects.filter(
        event=TraceEvent.Event.DELIVERY_ATTEMPT, detail__contains="InjectedFault"
    ).count()
    reclaimed = TraceEvent.objects.filter(event=TraceEvent.Event.RECLAIMED).count()
    reclaimed_unstarted = TraceEvent.objects.filter(
        event=TraceEvent.Event.RECLAIMED, detail__startswith="claim expired before the handler started"
    ).count()
    reclaimed_batch = TraceEvent.objects.filter(
        event=TraceEvent.Event.RECLAIMED, detail__startswith=VOID_BATCH
    ).count()
    released = TraceEvent.objects.filter(event=TraceEvent.Event.RELEASED).count()
    return (
        {"states": dict(states), "settled_by_check_back": dict(settled_by_check)},
        {
            "statuses": dict(deliveries),
            "payment_timers": dict(timers),
            "attempts_failed_by_injected_error": first_errors,
            "claims_reclaimed_after_a_crash": reclaimed,
            # batch-mates of a delivery whose worker died: taken back unstarted, a claim
            # timeout later
            "claims_reclaimed_unstarted": reclaimed_unstarted,
            # deliveries of a batch transaction whose worker died: their starts undone,
            # to run alone (txbroker.batch)
            "claims_reclaimed_with_their_batch": reclaimed_batch,
            "claims_released_on_sigterm": released,
        },
    )
