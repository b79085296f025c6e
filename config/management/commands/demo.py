"""``manage.py demo``: the whole order-payment flow under load, then a summary and its
invariants (exit status 1 when one fails).

It pays through ``payments.services.payment_pay``, the service the API calls, from
``--concurrency`` threads, and waits for the consumers: run a worker and beat beside it
(``make run``), or pass ``--inline`` to drive deliveries and check-backs from this process.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.models import Count, Sum
from django.template.defaultfilters import pluralize

from notifications.models import Notification
from notifications.services import phone_set_verified
from orders.events import TOPIC as ORDER_TOPIC
from orders.models import Order
from orders.services import order_create
from payments.events import TOPIC as PAYMENT_TOPIC
from payments.exceptions import PaymentDeclined, PaymentError
from payments.models import Charge, PaymentRecord
from payments.services import payment_pay
from points.models import PointsRecord, UserPoints
from points.services import points_for_amount
from txbroker.models import Delivery, Message

CONSUMER_GROUPS = 3  # orders, points, notifications


@dataclass
class DemoRun:
    run_id: str
    orders: list[Order] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # order_id -> paid | declined | error name
    points_before: dict[int, int] = field(default_factory=dict)

    @property
    def order_ids(self) -> list[str]:
        return [o.order_id for o in self.orders]

    def paid(self) -> list[Order]:
        return [o for o in self.orders if self.outcomes.get(o.order_id) == "paid"]


class ProgressBar:
    """Redrawn in place on a terminal; otherwise one line per change (logs stay readable)."""

    def __init__(
        self, write: Callable[[str], None], label: str, total: int, width: int = 30, *, tty: bool = True
    ) -> None:
        self.write, self.label, self.total, self.width, self.tty = write, label, max(total, 1), width, tty
        self.done = None
        self._lock = threading.Lock()

    def update(self, done: int) -> None:
        with self._lock:
            if not self.tty:
                if done != self.done:
                    self.write(f"{self.label} {done}/{self.total}\n")
                self.done = done
                return
            self.done = done
            filled = int(self.width * min(done, self.total) / self.total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.write(f"\r{self.label:<12} [{bar}] {done}/{self.total}")

    def finish(self) -> None:
        if self.tty:
            self.write("\n")


class Command(BaseCommand):
    help = (
        "Create demo users and orders, pay them concurrently, wait for the consumers, check the invariants."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--orders", type=int, default=50, help="orders to create and pay (default 50)")
        parser.add_argument("--concurrency", type=int, default=8, help="paying threads (default 8)")
        parser.add_argument("--users", type=int, default=5, help="demo users (default 5)")
        parser.add_argument(
            "--decline-share",
            type=float,
            default=0.2,
            help="share of payments the gateway declines (default 0.2)",
        )
        parser.add_argument(
            "--timeout", type=float, default=120.0, help="seconds to wait for the consumers (default 120)"
        )
        parser.add_argument(
            "--inline",
            action="store_true",
            help="run deliveries and check-backs in this process (no worker needed)",
        )
        parser.add_argument("--seed", type=int, default=None, help="random seed (amounts, declines)")

    def handle(self, *args, **options) -> None:
        orders, concurrency, users = options["orders"], options["concurrency"], options["users"]
        share = options["decline_share"]
        if orders < 1 or concurrency < 1 or users < 1:
            raise CommandError("--orders, --concurrency and --users must be at least 1")
        if not 0.0 <= share <= 1.0:
            raise CommandError("--decline-share must be within 0..1")
        rng = random.Random(options["seed"])
        started = time.monotonic()

        demo_users = self._users(users)
        run = DemoRun(run_id=uuid.uuid4().hex[:8].upper())
        run.points_before = dict(
            UserPoints.objects.filter(user__in=demo_users).values_list("user_id", "points")
        )
        for index in range(orders):
            amount = Decimal(rng.randint(100, 50000)) / 100
            run.orders.append(
                order_create(
                    user=rng.choice(demo_users), amount=amount, order_id=f"DEMO-{run.run_id}-{index:05d}"
                )
            )
        declined = set(rng.sample(run.order_ids, round(orders * share)))
        self.stdout.write(
            f"demo run {run.run_id}: {orders} orders for {users} users, {len(declined)} to be declined, "
            f"{concurrency} paying threads"
        )

        self._pay(run, declined, concurrency)
        self._wait_for_consumers(run, options["timeout"], inline=options["inline"])
        elapsed = time.monotonic() - started

        self._summary(run, elapsed)
        failures = self._invariants(run)
        if failures:
            for failure in failures:
                self.stdout.write(self.style.ERROR(f"FAIL  {failure}"))
            raise CommandError(f"{len(failures)} invariant{pluralize(len(failures))} failed")
        self.stdout.write(self.style.SUCCESS("all invariants hold"))

    # --- steps --------------------------------------------------------------------------
    def _users(self, count: int) -> list:
        User = get_user_model()
        users = []
        for index in range(1, count + 1):
            # Load users only: no password, nobody logs in as them.
            user, created = User.objects.get_or_create(username=f"demo_user_{index}")
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            # The demo's own users: their numbers are taken as verified (no code to enter).
            phone_set_verified(user=user, phone=f"+86138{index:08d}")
            users.append(user)
        return users

    def _pay(self, run: DemoRun, declined: set[str], concurrency: int) -> None:
        bar = ProgressBar(self._write, "paying", len(run.orders), tty=self.stdout.isatty())
        bar.update(0)

        def pay(order: Order) -> tuple[str, str]:
            method = "sim_decline" if order.order_id in declined else "sim_approve"
            try:
                outcome = payment_pay(
                    user=order.user, order_id=order.order_id, amount=order.amount, payment_method=method
                )
                return order.order_id, "paid" if outcome.transaction_state == "COMMIT" else "pending"
            except PaymentDeclined:
                return order.order_id, "declined"
            except PaymentError as exc:
                return order.order_id, type(exc).__name__
            finally:
                connection.close()  # this thread's connection

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = [pool.submit(pay, order) for order in run.orders]
            for done, future in enumerate(as_completed(futures), start=1):
                order_id, outcome = future.result()
                run.outcomes[order_id] = outcome
                bar.update(done)
        bar.finish()
        # A PENDING payment (local transaction UNKNOWN) is settled by check-back.
        for order_id, outcome in run.outcomes.items():
            if outcome == "pending" and PaymentRecord.objects.filter(order_id=order_id).exists():
                run.outcomes[order_id] = "paid"

    def _wait_for_consumers(self, run: DemoRun, timeout: float, *, inline: bool) -> None:
        expected = len(run.paid()) * CONSUMER_GROUPS
        bar = ProgressBar(self._write, "consuming", expected, tty=self.stdout.isatty())
        deadline = time.monotonic() + timeout
        while True:
            if inline:
                from txbroker import checkback, delivery

                checkback.check_pass()
                delivery.deliver_due()
            deliveries = _deliveries(run.order_ids)
            finished = deliveries.filter(status__in=[Delivery.Status.SUCCEEDED, Delivery.Status.DEAD]).count()
            half = _messages(run.order_ids).filter(state=Message.State.HALF).exists()
            bar.update(finished)
            if finished >= expected and not half:
                break
            if time.monotonic() >= deadline:
                bar.finish()
                self.stdout.write(
                    self.style.WARNING(
                        f"gave up waiting after {timeout:g}s: is a worker running? (or pass --inline)"
                    )
                )
                return
            time.sleep(0.2)
        bar.finish()

    # --- report -------------------------------------------------------------------------
    def _summary(self, run: DemoRun, elapsed: float) -> None:
        ids = run.order_ids
        expected_points = sum(points_for_amount(o.amount) for o in run.paid())
        credited = PointsRecord.objects.filter(order_id__in=ids).aggregate(total=Sum("points"))["total"] or 0
        rows: list[tuple[str, str, object]] = []
        rows += _counted("orders", Order.objects.filter(order_id__in=ids), "status")
        rows += _counted("payment records", PaymentRecord.objects.filter(order_id__in=ids), "status")
        rows += _counted("gateway charges", Charge.objects.filter(order_id__in=ids), "status")
        rows += [("points", "credited", credited), ("points", "expected", expected_points)]
        rows += _counted("SMS", Notification.objects.filter(order_id__in=ids), "status")
        rows += _counted("messages", _messages(ids), "state")
        rows += [
            ("deliveries", f"{group} {status}", n)
            for group, status, n in _deliveries(ids)
            .values_list("consumer_group", "status")
            .annotate(n=Count("id"))
            .order_by("consumer_group", "status")
        ]
        rows += [
            ("payment timers", status, n)
            for status, n in _deliveries(ids, ORDER_TOPIC)
            .values_list("status")
            .annotate(n=Count("id"))
            .order_by("status")
        ]
        rows.append(("elapsed", "seconds", f"{elapsed:.1f}"))
        self._table(rows)

    def _table(self, rows: Iterable[tuple[str, str, object]]) -> None:
        rows = list(rows)
        widths = [max(len(str(row[i])) for row in [("what", "", ""), *rows]) for i in range(3)]
        line = "+".join("-" * (w + 2) for w in widths)
        self.stdout.write(line)
        previous = None
        for what, key, value in rows:
            label = what if what != previous else ""
            previous = what
            self.stdout.write(f" {label:<{widths[0]}} | {key:<{widths[1]}} | {value!s:>{widths[2]}}")
        self.stdout.write(line)

    def _invariants(self, run: DemoRun) -> list[str]:
        failures = []
        ids = run.order_ids
        paid = {o.order_id for o in run.paid()}
        statuses = dict(Order.objects.filter(order_id__in=ids).values_list("order_id", "status"))
        records = set(
            PaymentRecord.objects.filter(order_id__in=ids, status=PaymentRecord.Status.SUCCESS).values_list(
                "order_id", flat=True
            )
        )
        if records != paid:
            failures.append(f"payment records {len(records)} != successful payments {len(paid)}")
        not_paid = sorted(i for i in paid if statuses.get(i) != Order.Status.PAID)
        if not_paid:
            failures.append(
                f"{len(not_paid)} paid order{pluralize(len(not_paid), ' is,s are')} not PAID, e.g. {not_paid[0]}"
            )
        wrongly_paid = sorted(i for i in set(ids) - paid if statuses.get(i) != Order.Status.CREATED)
        if wrongly_paid:
            failures.append(
                f"{len(wrongly_paid)} unpaid order{pluralize(len(wrongly_paid), ' is,s are')} not CREATED, "
                f"e.g. {wrongly_paid[0]}"
            )
        expected: Counter = Counter()
        for order in run.paid():
            expected[order.user_id] += points_for_amount(order.amount)
        balances = dict(UserPoints.objects.filter(user_id__in=expected).values_list("user_id", "points"))
        for user_id, points in expected.items():
            credited = balances.get(user_id, 0) - run.points_before.get(user_id, 0)
            if credited != points:
                failures.append(f"user {user_id} was credited {credited} points, expected {points}")
        records_per_order = PointsRecord.objects.filter(order_id__in=ids).count()
        if records_per_order != len(paid):
            failures.append(f"{records_per_order} points records for {len(paid)} paid orders")
        sent = Notification.objects.filter(order_id__in=ids, status=Notification.Status.SENT).count()
        if sent != len(paid) or Notification.objects.filter(order_id__in=ids).count() != len(paid):
            failures.append(f"{sent} SMS sent for {len(paid)} paid orders")
        committed = _messages(ids).filter(state=Message.State.COMMITTED).count()
        if committed != len(paid):
            failures.append(f"{committed} committed messages for {len(paid)} paid orders")
        if _messages(ids).exclude(state__in=[Message.State.COMMITTED, Message.State.ROLLED_BACK]).exists():
            failures.append("some messages are neither COMMITTED nor ROLLED_BACK")
        succeeded = _deliveries(ids).filter(status=Delivery.Status.SUCCEEDED).count()
        if succeeded != len(paid) * CONSUMER_GROUPS or _deliveries(ids).count() != succeeded:
            failures.append(f"{succeeded} deliveries SUCCEEDED, expected {len(paid) * CONSUMER_GROUPS}")
        recalled = _deliveries(ids, ORDER_TOPIC).filter(status=Delivery.Status.RECALLED).count()
        if recalled != len(paid):
            failures.append(f"{recalled} payment timers recalled for {len(paid)} paid orders")
        approved = Charge.objects.filter(order_id__in=ids, status=Charge.Status.RECORDED).count()
        if approved != len(paid):
            failures.append(f"{approved} recorded charges for {len(paid)} paid orders")
        return failures

    def _write(self, text: str) -> None:
        self.stdout.write(text, ending="")
        self.stdout.flush()


def _messages(order_ids: list[str], topic: str = PAYMENT_TOPIC):
    """The orders' payment messages (``topic=ORDER_TOPIC``: their payment timers)."""
    return Message.objects.filter(topic=topic, key_rows__key__in=order_ids).distinct()


def _deliveries(order_ids: list[str], topic: str = PAYMENT_TOPIC):
    return Delivery.objects.filter(message__topic=topic, message__key_rows__key__in=order_ids)


def _counted(what: str, queryset, column: str) -> list[tuple[str, str, int]]:
    counts = queryset.order_by().values_list(column).annotate(n=Count("pk", distinct=True))
    return [(what, value, n) for value, n in sorted(counts)] or [(what, "-", 0)]
