"""One design's chaos run, inside a process whose database is the run's own (the ``chaos``
command starts it that way): migrate, users, processes, load under faults, faults off,
settle (bounded), invariants."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.chaos import invariants
from harness.chaos.cluster import Cluster
from harness.chaos.faults import FaultPlan
from harness.chaos.history import ProcessHistory, death_counts, read_logs
from harness.chaos.injector import Injector
from harness.chaos.load import plan_payments, run_load
from harness.procs import CHAOS_BROKER_ENV, service_env
from harness.services import PrivatePostgres, RabbitServer

DESIGNS = ("txbroker", "naive")
PAY_PATHS = {"txbroker": "/api/payments/", "naive": "/api/naive/payments/"}
DEFAULT_FAULT_POINTS = (
    "after_half_stored=0.05,after_local_transaction=0.05,handler_before_commit=0.1,"
    "handler_after_commit=0.05,handler_first_attempt_error=0.3"
)
# Charge reconciliation at the pace of the broker's short intervals: a charge left by a
# killed web worker is settled about ten seconds later, within the clients' retries. The
# simulated gateway answers at once here, so a charge it does not know is closed as soon as
# reconciliation looks (gateway timeout below the threshold).
FAST_RECONCILE_ENV = {
    "PAYMENTS_CHARGE_RECONCILE_AFTER": "10",
    "PAYMENTS_CHARGE_RECONCILE_INTERVAL": "2",
    "PAYMENTS_GATEWAY_TIMEOUT": "5",
}
# However long the backlog takes, a run never waits longer than this to settle.
SETTLE_HARD_LIMIT = 900.0


@dataclass
class RunOptions:
    payments: int = 1000
    concurrency: int = 16
    users: int = 0
    decline_share: float = 0.15
    refund_share: float = 0.2  # of the payments, refunded by their owners (txbroker only)
    rounding_share: float = 0.3
    seed: int = 1
    fault_points: str = DEFAULT_FAULT_POINTS
    plan: FaultPlan = field(default_factory=FaultPlan)
    web_workers: int = 4
    web_threads: int = 4
    worker_concurrency: int = 3
    settle_timeout: float = 0.0  # 0: the bound computed from the broker's intervals
    database_url: str = ""
    redis_url: str = ""
    redis_whole_server: bool = True
    run_dir: Path = Path(".")
    postgres_dir: Path | None = None  # the run's own PostgreSQL cluster (pg-crash)
    postgres_port: int = 0
    rabbitmq_dir: Path | None = None  # the run's own RabbitMQ node (--broker amqp)


def settle_bound(plan: FaultPlan | None = None) -> float:
    """Charge reconciliation (its threshold and two intervals) + transaction timeout + a few
    check intervals and check timeouts + a claim timeout + every retry delay, plus a minute
    for the backlog; with poison, every attempt of a poison delivery (each one a claim
    timeout, a sweep and a retry delay): past this, what is not settled is stuck."""
    from txbroker.conf import parse_duration, parse_durations, txsettings

    env = CHAOS_BROKER_ENV
    delays = parse_durations(env["TXBROKER_RETRY_DELAYS"])
    bound = (
        float(FAST_RECONCILE_ENV["PAYMENTS_CHARGE_RECONCILE_AFTER"])
        + 2 * float(FAST_RECONCILE_ENV["PAYMENTS_CHARGE_RECONCILE_INTERVAL"])
        + parse_duration(env["TXBROKER_TRANSACTION_TIMEOUT"])
        + 3 * (parse_duration(env["TXBROKER_CHECK_INTERVAL"]) + txsettings.CHECK_TIMEOUT)
        + parse_duration(env["TXBROKER_CLAIM_TIMEOUT"])
        + sum(delays)
        + 60
    )
    if plan is not None and plan.active_poison_share:
        per_attempt = (
            parse_duration(env["TXBROKER_CLAIM_TIMEOUT"])
            + parse_duration(env["TXBROKER_SWEEP_INTERVAL"])
            + max(delays)
        )
        bound += (txsettings.MAX_RECONSUME_TIMES + 1) * per_attempt
    return bound


def run_design(design: str, options: RunOptions, say: Callable[[str], None]) -> dict[str, Any]:
    from django.core.management import call_command
    from django.db import connections

    from harness.load import users_create
    from payments.schedule import ensure_periodic_tasks as ensure_payments_tasks
    from txbroker.schedule import ensure_periodic_tasks

    started = time.monotonic()
    run_dir = options.run_dir
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    call_command("migrate", verbosity=0, interactive=False)
    ensure_periodic_tasks(sync=True)
    ensure_payments_tasks(sync=True)  # this process runs with FAST_RECONCILE_ENV (chaos command)
    users = users_create(count=options.users or max(4, options.payments // 20), prefix=f"chaos-{design}")
    connections.close_all()  # the injector terminates every connection to this database

    def env_with(faults: str) -> dict[str, str]:
        return service_env(
            database_url=options.database_url,
            broker_url=options.redis_url,
            run_dir=run_dir,
            faults=faults,
            extra={**FAST_RECONCILE_ENV, **run_extra_env()},
        )

    plan = options.plan
    cluster = Cluster(
        log_dir=run_dir / "logs",
        env=env_with(plan.fault_points(options.fault_points)),
        web_workers=options.web_workers,
        web_threads=options.web_threads,
        worker_concurrency=options.worker_concurrency,
        clock_offsets=plan.clock_offsets(),
    )
    skewed = ", ".join(f"{name} {offset:+g}s" for name, offset in cluster.clock_offsets.items())
    say(
        f"[{design}] starting gunicorn ({options.web_workers} workers), 2 Celery workers, beat"
        + (f" (clocks: {skewed})" if skewed else "")
    )
    cluster.start()
    postgres = (
        PrivatePostgres(options.postgres_dir, port=options.postgres_port) if options.postgres_dir else None
    )
    injector = Injector(
        cluster=cluster,
        database_url=options.database_url,
        redis_url=options.redis_url,
        redis_whole_server=options.redis_whole_server,
        plan=plan,
        rng=random.Random(options.seed),
        postgres=postgres,
        rabbitmq=RabbitServer.attach(options.rabbitmq_dir) if options.rabbitmq_dir else None,
    )
    report: dict[str, Any] = {}
    try:
        injector.start()
        plans = plan_payments(
            count=options.payments,
            users=users,
            tag=design,
            seed=options.seed,
            decline_share=options.decline_share,
            rounding_share=options.rounding_share,
            # The naive design has no refund: its on_commit tasks keep no order per order.
            refund_share=options.refund_share if design == "txbroker" else 0.0,
        )
        say(
            f"[{design}] {len(plans)} payments, {options.concurrency} clients, faults on: "
            + ", ".join(plan.describe()["kinds"])
        )
        load_started = time.monotonic()
        load_wall_started = time.time()
        outcomes = run_load(
            plans,
            base_url=cluster.base_url,
            pay_path=PAY_PATHS[design],
            concurrency=options.concurrency,
            progress=lambda done, total, finals: say(
                f"[{design}]   {done}/{total} paid; answers {dict(sorted(finals.items(), key=str))}"
            ),
        )
        load_seconds = time.monotonic() - load_started
        injector.stop_faults()
        say(
            f"[{design}] load done in {load_seconds:.0f}s; faults off (processes restarted without them"
            + (", poison messages stay poison)" if plan.active_poison_share else ")")
        )
        cluster.replace_all(env_with(plan.lasting_fault_points()), roles=("worker", "web"))
        settle = _settle(design, options, say)
    finally:
        injector.stop()
        cluster.stop()
    connections.close_all()
    logs = read_logs(cluster.log_paths(), cluster.log_offsets)
    history = ProcessHistory.of([*cluster.deaths, *logs.deaths], injector.freezes)
    injected = injector.report()
    report = invariants.check(
        design=design,
        outcomes=outcomes,
        sms_path=run_dir / "sms.jsonl",
        poison_share=plan.active_poison_share,
        history=history,
        timeline=injector.timeline,
        crashes=[(c.at, c.up_at) for c in injector.crashes],
    )
    report["poison"]["worker_exits"] = sum(logs.poison_subjects.values())
    report["faults_injected"] = {
        **dict(sorted(injector.injected.items())),
        **dict(sorted(logs.fault_points.items())),
    }
    report["deaths"] = death_counts(history_deaths(history))
    report["freeze"] = injected["freeze"]
    report["pg_crash"] = injected["pg_crash"]
    if design == "txbroker":
        report["pg_crash"]["deliveries_resumed_after_seconds"] = _work_resumed(injector.crashes)
    report["rabbitmq_restart"] = {
        "count": len(injector.rabbitmq_restarts),
        "down_seconds": [round(up - down, 1) for down, up in injector.rabbitmq_restarts],
    }
    report["skew"] = {
        "seconds": plan.skew_seconds if cluster.clock_offsets else 0,
        "processes": sorted(cluster.clock_offsets),
        "starts_under_faketime": cluster.skewed_starts,
    }
    report["fault_plan"] = plan.describe()
    report["fault_timeline"] = [[round(t - load_wall_started, 1), kind] for t, kind in injector.timeline]
    report["restarts_by_supervisor"] = dict(cluster.restarts)
    report["injector_errors"] = injector.errors[:10]
    report["settle"] = settle
    report["load_seconds"] = round(load_seconds, 1)
    report["duration_seconds"] = round(time.monotonic() - started, 1)
    report["logs"] = str(run_dir / "logs")
    return report


def run_extra_env() -> dict[str, str]:
    """Settings of this run the chaos command passes on (its own environment's)."""
    import os

    return {k: os.environ[k] for k in ("TXBROKER_MAX_RECONSUME_TIMES",) if os.environ.get(k)}


def history_deaths(history: ProcessHistory):
    for deaths in history.deaths.values():
        yield from deaths


def _work_resumed(crashes) -> list[float | None]:
    """Per crash: seconds from the server accepting connections again to the first
    delivery that succeeded (the workers carried on), None if none did."""
    from datetime import UTC, datetime

    from txbroker.models import Delivery

    resumed: list[float | None] = []
    for crash in crashes:
        if crash.up_at is None:
            resumed.append(None)
            continue
        up = datetime.fromtimestamp(crash.up_at, tz=UTC)
        # A success is kept on its delivery row (txbroker.trace), not as a trace row.
        first = (
            Delivery.objects.filter(status=Delivery.Status.SUCCEEDED, succeeded_at__gte=up)
            .order_by("succeeded_at")
            .values_list("succeeded_at", flat=True)
            .first()
        )
        resumed.append(None if first is None else round(first.timestamp() - crash.up_at, 1))
    return resumed


def _settle(design: str, options: RunOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """Wait until nothing is left to do; bounded, extended only while the backlog shrinks
    (or its deliveries are still being attempted: poison ones take every attempt)."""
    bound = options.settle_timeout or settle_bound(options.plan)
    started = time.monotonic()
    deadline = started + bound
    remaining = _open_work(design, options)
    quiet_polls = 0
    while time.monotonic() < min(deadline, started + SETTLE_HARD_LIMIT):
        time.sleep(1.0)
        now_open = _open_work(design, options)
        if now_open["total"] < remaining["total"] or now_open.get("attempts", 0) > remaining.get(
            "attempts", 0
        ):
            deadline = max(deadline, time.monotonic() + 30)  # progress: the backlog drains
        quiet_polls = quiet_polls + 1 if now_open["total"] == 0 and now_open == remaining else 0
        remaining = now_open
        if quiet_polls >= 3:
            break
    seconds = time.monotonic() - started
    settled = remaining["total"] == 0
    say(f"[{design}] {'settled' if settled else 'NOT settled'} after {seconds:.0f}s (bound {bound:.0f}s)")
    return {"settled": settled, "seconds": round(seconds, 1), "bound_seconds": round(bound, 1), **remaining}


def _open_work(design: str, options: RunOptions) -> dict[str, int]:
    from django.db import connections
    from django.db.models import Sum

    from notifications.models import Notification
    from orders.events import TOPIC as ORDER_TOPIC
    from orders.models import Order
    from payments.models import Charge, Refund
    from points.models import PointsRecord
    from txbroker.models import Delivery, Message

    connections.close_all()
    if design == "txbroker":
        half = Message.objects.filter(state=Message.State.HALF).count()
        # Orders' payment timers are not work left: due ORDERS_PAYMENT_TIMEOUT after their
        # order (the default outlasts a run), RECALLED once it is paid.
        open_deliveries = Delivery.objects.filter(
            status__in=[*Delivery.WAITING, Delivery.Status.RUNNING]
        ).exclude(message__topic=ORDER_TOPIC)
        running = open_deliveries.count()
        attempts = open_deliveries.aggregate(n=Sum("attempts"))["n"] or 0
        # Charges and refunds a killed process left PENDING/APPROVED: reconciliation's work.
        charges = Charge.objects.unsettled().count()
        refunds = Refund.objects.exclude(status=Refund.Status.REFUNDED).count()
        return {
            "total": half + running + charges + refunds,
            "half_messages": half,
            "open_deliveries": running,
            "unsettled_charges": charges,
            "unfinished_refunds": refunds,
            "attempts": attempts,
        }
    from kombu import Connection

    # The Celery queue's ready messages, on either broker (a passive declare).
    with Connection(options.redis_url, connect_timeout=5) as conn:
        try:
            queued = int(conn.default_channel.queue_declare(queue="celery", passive=True).message_count)
        except conn.channel_errors:  # never declared: nothing was ever queued
            queued = 0
    # The naive design has no record of what is left: the queue, and effects still moving.
    effects = (
        PointsRecord.objects.count()
        + Notification.objects.count()
        + Order.objects.filter(status=Order.Status.PAID).count()
    )
    return {"total": queued, "queued_tasks": queued, "effects": effects}
