"""The three designs the bench compares, each doing the same domain work for a payment:
read the order, check it is not paid yet, charge the (simulated) gateway, insert the
``PaymentRecord``; then its three consumers: order PAID, points awarded, SMS recorded.

- ``raw``: all of it in process, each consumer in its own transaction, no messaging: the
  ceiling of any design in Python.
- ``naive``: ``harness.naive.naive_payment_pay``: commit, then ``on_commit`` -> three
  Celery tasks running the same services.
- ``txbroker``: the full protocol through ``payment_producer`` (half message, the record
  insert as the local transaction, commit, three deliveries, one wake-up task).
- ``txbroker_ordered`` (optional): ``txbroker`` with each payment message in one of
  ``ORDERED_GROUPS`` message groups (by order number): per group and consumer group, a
  delivery waits for the one before it, so this measures what ordering costs.
- ``celery_outbox`` and ``procrastinate`` (optional, PostgreSQL only): the two peers of
  ``harness.peers``: the same check, charge and record, the three consumers written to
  django-celery-outbox's outbox table or deferred as procrastinate jobs in the record's
  transaction, run by the same services in their own worker processes.
- ``product`` (optional): ``payments.services.payment_pay`` as the product runs it, with
  its ``Charge`` rows on top of the protocol (more work than the other three do).

The bench measures latency from the payment's commit to each consumer's commit. For
``raw`` that is the record's commit (``pay_raw`` returns it); for the others it is when
the payment call returns, as its client would see it (after the publish for ``naive``,
after the message commit and its wake-up for ``txbroker``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from notifications.models import Notification, NotificationProfile
from notifications.services import sms_notify_payment
from orders.models import Order
from orders.selectors import order_get
from orders.services import order_mark_paid
from payments.events import TAG, TOPIC, PaymentSucceeded
from payments.gateways import get_gateway
from payments.models import Charge, PaymentRecord, Refund, SimulatedGatewayCharge, SimulatedGatewayRefund
from payments.recording import payment_record_insert
from points.models import PointsRecord, UserPoints
from points.services import points_award_for_payment
from txbroker.models import Delivery, Message, MessageKey, TraceEvent

DESIGNS = ("raw", "naive", "txbroker")
PEERS = ("celery_outbox", "procrastinate")
OPTIONAL_DESIGNS = ("product", "txbroker_orm", "txbroker_serial", "txbroker_ordered", *PEERS)
ORDERED_GROUPS = 100
# Environment of a design's processes: txbroker_orm is txbroker with this work's hot-path
# levers off (the ORM's statements, a wake-up per commit), for before/after figures.
DESIGN_ENV: dict[str, dict[str, str]] = {
    "txbroker_orm": {"TXBROKER_FASTPATH": "0", "TXBROKER_WAKEUP_COALESCE": "0"},
    # txbroker with one transaction per delivery instead of one per claimed batch.
    "txbroker_serial": {"TXBROKER_BATCH_TRANSACTION": "0"},
}
AMOUNT = Decimal("99.90")
USER_PREFIX = "bench-user-"


class BenchPaymentFailed(Exception):
    pass


def _checked_order(user, order_id: str, amount: Decimal) -> Order:
    order = order_get(user=user, order_id=order_id)
    if order is None or order.amount != amount:
        raise BenchPaymentFailed(f"order {order_id} missing or amount differs")
    if PaymentRecord.objects.filter(order_id=order_id).exists() or order.status != Order.Status.CREATED:
        raise BenchPaymentFailed(f"order {order_id} is already paid")
    return order


def _charge(order: Order, prefix: str) -> None:
    gateway = get_gateway()
    result = gateway.charge(
        order_id=order.order_id,
        amount=order.amount,
        payment_method=gateway.default_payment_method,
        idempotency_key=f"{prefix}-{order.order_id}",
    )
    if not result.approved:
        raise BenchPaymentFailed(result.reason or "declined")


def _record(event: PaymentSucceeded, message_id: str = "") -> PaymentRecord:
    return payment_record_insert(event=event, message_id=message_id)


def pay_raw(user, order_id: str, amount: Decimal) -> float:
    order = _checked_order(user, order_id, amount)
    _charge(order, "raw")
    event = PaymentSucceeded(order_id=order_id, user_id=user.pk, amount=amount, pay_time=timezone.now())
    with transaction.atomic():
        _record(event)
    committed_at = time.time()
    with transaction.atomic():
        order_mark_paid(order_id=order_id)
    with transaction.atomic():
        points_award_for_payment(order_id=order_id, user_id=user.pk, amount=amount)
    with transaction.atomic():
        sms_notify_payment(order_id=order_id, user_id=user.pk, amount=amount)
    return committed_at


def pay_naive(user, order_id: str, amount: Decimal) -> None:
    from harness.naive import naive_payment_pay

    naive_payment_pay(user=user, order_id=order_id, amount=amount)


def pay_txbroker(user, order_id: str, amount: Decimal, *, message_group: str = "") -> None:
    from payments.checkers import payment_producer
    from txbroker import LocalTransactionState, OutgoingMessage

    order = _checked_order(user, order_id, amount)
    _charge(order, "txbroker")
    event = PaymentSucceeded(order_id=order_id, user_id=user.pk, amount=amount, pay_time=timezone.now())

    def record_payment(message, arg) -> LocalTransactionState:
        with transaction.atomic():
            _record(event, message.msg_id)
        return LocalTransactionState.COMMIT

    sent = payment_producer.send_message_in_transaction(
        OutgoingMessage(
            topic=TOPIC, tag=TAG, keys=(order_id,), body=event.as_body(), message_group=message_group
        ),
        record_payment,
    )
    if sent.message_state != Message.State.COMMITTED:
        raise BenchPaymentFailed(f"message {sent.msg_id} is {sent.message_state}")


def pay_txbroker_ordered(user, order_id: str, amount: Decimal) -> None:
    number = int(order_id.rsplit("-", 1)[1])
    pay_txbroker(user, order_id, amount, message_group=f"G{number % ORDERED_GROUPS:03d}")


def _pay_peer(user, order_id: str, amount: Decimal, *, prefix: str, enqueue: Callable[..., None]) -> None:
    order = _checked_order(user, order_id, amount)
    _charge(order, prefix)
    event = PaymentSucceeded(order_id=order_id, user_id=user.pk, amount=amount, pay_time=timezone.now())
    with transaction.atomic():
        _record(event)
        enqueue(body=event.as_body())


def pay_celery_outbox(user, order_id: str, amount: Decimal) -> None:
    from harness.peers.outbox import payment_outbox_enqueue

    _pay_peer(user, order_id, amount, prefix="outbox", enqueue=payment_outbox_enqueue)


def pay_procrastinate(user, order_id: str, amount: Decimal) -> None:
    from harness.peers.jobs import payment_jobs_defer

    _pay_peer(user, order_id, amount, prefix="procrastinate", enqueue=payment_jobs_defer)


def pay_product(user, order_id: str, amount: Decimal) -> None:
    from payments.services import payment_pay

    outcome = payment_pay(user=user, order_id=order_id, amount=amount)
    if outcome.status != PaymentRecord.Status.SUCCESS:
        raise BenchPaymentFailed(f"payment of {order_id} is {outcome.status}")


PAY: dict[str, Callable] = {
    "raw": pay_raw,
    "naive": pay_naive,
    "txbroker": pay_txbroker,
    "txbroker_orm": pay_txbroker,
    "txbroker_serial": pay_txbroker,
    "txbroker_ordered": pay_txbroker_ordered,
    "product": pay_product,
    "celery_outbox": pay_celery_outbox,
    "procrastinate": pay_procrastinate,
}

# What a peer does not do that txbroker does, beside its figures (it is not handicapped
# for it: each runs as its documentation recommends).
NOTES: dict[str, str] = {
    "naive": "no outbox: a crash between commit and publish loses the three tasks; no handler retry",
    "celery_outbox": (
        "at-least-once: a relay crash after publishing resends (stale timeout), so a handler "
        "may run twice (no exactly-once effects); handler retries live in Redis (Celery "
        "autoretry), no per-group retry schedule or dead letters in the database; relay idles "
        "1 s when the outbox is empty; worker CPU includes the relay"
    ),
    "procrastinate": (
        "at-least-once: a job whose worker dies mid-run is retried only if the application "
        "schedules stalled-job recovery (a periodic task of its own, not set up here); the "
        "handler's commit and the job's status are separate transactions (no exactly-once "
        "effects); no per-group delivery view beyond the jobs table; its worker's own queries "
        "(psycopg pool) are not in statements_per_payment"
    ),
}

# The peers' own tables, emptied with the others when their apps are installed.
PEER_TABLES = {
    "django_celery_outbox": ["celery_outbox", "celery_outbox_dead_letter"],
    "procrastinate": [
        "procrastinate_events",
        "procrastinate_jobs",
        "procrastinate_periodic_defers",
        "procrastinate_workers",
    ],
}

# Children first, so that a DELETE (SQLite) never trips a foreign key.
TABLES = [
    TraceEvent,
    Delivery,
    MessageKey,
    Message,
    Notification,
    NotificationProfile,
    PointsRecord,
    UserPoints,
    Refund,
    Charge,
    SimulatedGatewayCharge,  # the gateway's books: charge ids restart, so must its keys
    SimulatedGatewayRefund,
    PaymentRecord,
    Order,
]


def tables_reset() -> None:
    """Empty the tables a bench run writes (broker, domain, and the bench's users)."""
    from django.apps import apps

    names = [model._meta.db_table for model in TABLES]
    installed = {config.label for config in apps.get_app_configs()}
    names += [name for label, tables in PEER_TABLES.items() if label in installed for name in tables]
    User = get_user_model()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY")
        else:
            for name in names:
                cursor.execute(f"DELETE FROM {name}")  # noqa: S608 - our own table names
    User.objects.filter(username__startswith=USER_PREFIX).delete()


def orders_create(payments: int, *, users: int = 200) -> list[tuple[str, int, Decimal]]:
    """``payments`` CREATED orders spread over ``users`` users who have a phone number.
    Returns (order_id, user_id, amount) for each, in the order they will be paid."""
    User = get_user_model()
    users = max(1, min(users, payments))
    now = timezone.now()
    unusable = "!"  # what set_unusable_password() stores: nobody logs in as a bench user
    User.objects.bulk_create(
        User(username=f"{USER_PREFIX}{i}", password=unusable, date_joined=now) for i in range(users)
    )
    user_ids = list(
        User.objects.filter(username__startswith=USER_PREFIX).order_by("pk").values_list("pk", flat=True)
    )
    NotificationProfile.objects.bulk_create(
        NotificationProfile(user_id=pk, phone=f"+86138{pk:08d}"[:16], phone_verified_at=now, updated_at=now)
        for pk in user_ids
    )
    rows = [(f"BENCH-{i:08d}", user_ids[i % len(user_ids)], AMOUNT) for i in range(payments)]
    Order.objects.bulk_create(
        (
            Order(order_id=order_id, user_id=user_id, amount=amount, created_at=now, updated_at=now)
            for order_id, user_id, amount in rows
        ),
        batch_size=2000,
    )
    return rows


def consumed_counts() -> dict[str, int]:
    """How many payments each consumer group has consumed (the domain rows say)."""
    return {
        "orders": Order.objects.filter(status=Order.Status.PAID).count(),
        "points": PointsRecord.objects.count(),
        "notifications": Notification.objects.count(),
    }


def consumption_times() -> dict[str, dict[str, float]]:
    """order_id -> {group: epoch seconds of its consumer's write} from the domain rows."""
    times: dict[str, dict[str, float]] = {}
    for order_id, at in Order.objects.filter(status=Order.Status.PAID).values_list("order_id", "updated_at"):
        times.setdefault(order_id, {})["orders"] = at.timestamp()
    for order_id, at in PointsRecord.objects.values_list("order_id", "created_at"):
        times.setdefault(order_id, {})["points"] = at.timestamp()
    for order_id, at in Notification.objects.values_list("order_id", "created_at"):
        times.setdefault(order_id, {})["notifications"] = at.timestamp()
    return times


GROUPS = ("orders", "points", "notifications")
