"""One design's chaos run, inside a process whose database is the run's own (the ``chaos``
command starts it that way): migrate, users, processes, load under faults, faults off,
settle (bounded), invariants."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.chaos import invariants
from harness.chaos.cluster import Cluster
from harness.chaos.injector import Injector, Schedule
from harness.chaos.load import plan_payments, run_load
from harness.procs import FAST_BROKER_ENV, service_env

DESIGNS = ("txbroker", "naive")
PAY_PATHS = {"txbroker": "/api/payments/", "naive": "/api/naive/payments/"}
DEFAULT_FAULTS = (
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
FAULT_LOG_LINE = re.compile(r"fault injected: (\w+), pid \d+ (?:exits now|raises)")
# However long the backlog takes, a run never waits longer than this to settle.
SETTLE_HARD_LIMIT = 900.0


@dataclass
class RunOptions:
    payments: int = 1000
    concurrency: int = 16
    users: int = 0
    decline_share: float = 0.15
    rounding_share: float = 0.3
    seed: int = 1
    faults: str = DEFAULT_FAULTS
    schedule: Schedule = field(default_factory=Schedule)
    web_workers: int = 4
    web_threads: int = 4
    worker_concurrency: int = 3
    settle_timeout: float = 0.0  # 0: the bound computed from the broker's intervals
    database_url: str = ""
    redis_url: str = ""
    redis_whole_server: bool = True
    run_dir: Path = Path(".")


def settle_bound() -> float:
    """Charge reconciliation (its threshold and two intervals) + transaction timeout + a few
    check intervals + a claim timeout + every retry delay, plus a minute for the backlog:
    past this, what is not settled is stuck."""
    from txbroker.conf import parse_duration, parse_durations

    env = FAST_BROKER_ENV
    return (
        float(FAST_RECONCILE_ENV["PAYMENTS_CHARGE_RECONCILE_AFTER"])
        + 2 * float(FAST_RECONCILE_ENV["PAYMENTS_CHARGE_RECONCILE_INTERVAL"])
        + parse_duration(env["TXBROKER_TRANSACTION_TIMEOUT"])
        + 3 * parse_duration(env["TXBROKER_CHECK_INTERVAL"])
        + parse_duration(env["TXBROKER_CLAIM_TIMEOUT"])
        + sum(parse_durations(env["TXBROKER_RETRY_DELAYS"]))
        + 60
    )


def fault_points_fired(log_paths: list[Path]) -> Counter:
    fired: Counter = Counter()
    for path in log_paths:
        for match in FAULT_LOG_LINE.finditer(path.read_text(errors="replace")):
            fired[match.group(1)] += 1
    return fired


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
            extra=FAST_RECONCILE_ENV,
        )

    cluster = Cluster(
        log_dir=run_dir / "logs",
        env=env_with(options.faults),
        web_workers=options.web_workers,
        web_threads=options.web_threads,
        worker_concurrency=options.worker_concurrency,
    )
    say(f"[{design}] starting gunicorn ({options.web_workers} workers), 2 Celery workers, beat")
    cluster.start()
    injector = Injector(
        cluster=cluster,
        database_url=options.database_url,
        redis_url=options.redis_url,
        redis_whole_server=options.redis_whole_server,
        schedule=options.schedule,
        rng=random.Random(options.seed),
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
        )
        say(f"[{design}] {len(plans)} payments, {options.concurrency} clients, faults on")
        load_started = time.monotonic()
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
        say(f"[{design}] load done in {load_seconds:.0f}s; faults off (processes restarted without them)")
        cluster.replace_all(env_with(""), roles=("worker", "web"))
        settle = _settle(design, options, say)
    finally:
        injector.stop()
        cluster.stop()
    connections.close_all()
    report = invariants.check(design=design, outcomes=outcomes, sms_path=run_dir / "sms.jsonl")
    fired = fault_points_fired(cluster.log_paths())
    report["faults_injected"] = {**dict(sorted(injector.injected.items())), **dict(sorted(fired.items()))}
    report["restarts_by_supervisor"] = dict(cluster.restarts)
    report["injector_errors"] = injector.errors[:10]
    report["settle"] = settle
    report["load_seconds"] = round(load_seconds, 1)
    report["duration_seconds"] = round(time.monotonic() - started, 1)
    report["logs"] = str(run_dir / "logs")
    return report


def _settle(design: str, options: RunOptions, say: Callable[[str], None]) -> dict[str, Any]:
    """Wait until nothing is left to do; bounded, extended only while the backlog shrinks."""
    bound = options.settle_timeout or settle_bound()
    started = time.monotonic()
    deadline = started + bound
    remaining = _open_work(design, options)
    quiet_polls = 0
    while time.monotonic() < min(deadline, started + SETTLE_HARD_LIMIT):
        time.sleep(1.0)
        now_open = _open_work(design, options)
        if now_open["total"] < remaining["total"]:
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

    from notifications.models import Notification
    from orders.models import Order
    from payments.models import Charge
    from points.models import PointsRecord
    from txbroker.models import Delivery, Message

    connections.close_all()
    if design == "txbroker":
        half = Message.objects.filter(state=Message.State.HALF).count()
        running = Delivery.objects.filter(status__in=[*Delivery.WAITING, Delivery.Status.RUNNING]).count()
        # Charges a killed process left PENDING/APPROVED: reconciliation's work.
        charges = Charge.objects.unsettled().count()
        return {
            "total": half + running + charges,
            "half_messages": half,
            "open_deliveries": running,
            "unsettled_charges": charges,
        }
    import redis

    client = redis.Redis.from_url(options.redis_url, socket_timeout=5)
    try:
        queued = int(client.llen("celery"))
    finally:
        client.close()
    # The naive design has no record of what is left: the queue, and effects still moving.
    effects = (
        PointsRecord.objects.count()
        + Notification.objects.count()
        + Order.objects.filter(status=Order.Status.PAID).count()
    )
    return {"total": queued, "queued_tasks": queued, "effects": effects}
