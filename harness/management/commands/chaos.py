"""``manage.py chaos``: prove it, Jepsen-style. Real processes, real load over HTTP, faults
injected while it runs, then invariants checked on the final state; ``--baseline`` runs the
same against the naive design and reports side by side.

The run never touches the developer's data: it creates its own PostgreSQL database
(``--database-url``, whose name must contain "chaos"; dropped afterwards unless ``--keep``)
and starts its own Redis server (so FLUSHALL wipes nothing else), or with ``--broker amqp``
its own RabbitMQ node (so the ``rabbitmq-restart`` fault restarts nobody else's). With the ``pg-crash``
fault the databases live on a PostgreSQL cluster of the run's own (``initdb`` on a free
port, removed afterwards unless ``--keep``): crashing it harms nobody. Each design runs in
a child process of this command whose settings point at that database.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from harness.chaos.faults import BROKERS, FAULT_KINDS, FaultPlan, parse_fault_kinds
from harness.chaos.report import combined, false_rollback_lines, table, write_json
from harness.chaos.runner import DEFAULT_FAULT_POINTS, DESIGNS, FAST_RECONCILE_ENV, RunOptions, run_design
from harness.procs import ROOT, service_env
from harness.services import PrivatePostgres, RabbitServer, RedisServer, database_drop, database_recreate

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/txbroker_chaos"
CHAOS_DATABASE_REFUSED = "the chaos run drops its database: its name must contain 'chaos', not {name!r}"
CHAOS_VIOLATED = (
    "txbroker violated its invariants: lost={lost} doubled={doubled} stuck={stuck} "
    "false_rollbacks={false_rollbacks} other={other}"
)
# Options passed on to the child process that runs one design, as they are.
CHILD_OPTIONS = (
    "payments",
    "concurrency",
    "users",
    "decline_share",
    "refund_share",
    "rounding_share",
    "seed",
    "faults",
    "fault_points",
    "kill_every",
    "redis_every",
    "broker",
    "rabbitmq_every",
    "pg_every",
    "freeze_every",
    "freeze_scale",
    "pg_crash_every",
    "pg_crash_down",
    "skew_seconds",
    "poison_share",
    "slow_check_share",
    "web_workers",
    "web_threads",
    "worker_concurrency",
    "settle_timeout",
)


class Command(BaseCommand):
    help = "Crash, wipe and cut everything under load; check nothing was lost, doubled or left stuck."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser) -> None:
        parser.add_argument("--payments", type=int, default=1000)
        parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP clients")
        parser.add_argument("--users", type=int, default=0, help="default: payments / 20, at least 4")
        parser.add_argument("--decline-share", type=float, default=0.15)
        parser.add_argument(
            "--refund-share",
            type=float,
            default=0.2,
            help="share of payments refunded by their owners, half at once (txbroker design only)",
        )
        parser.add_argument("--rounding-share", type=float, default=0.3, help="amounts like 0.99, 99.99")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--faults",
            default="all",
            help=f"comma list of fault kinds: {', '.join(FAULT_KINDS)} (default: all)",
        )
        parser.add_argument(
            "--fault-points", default=DEFAULT_FAULT_POINTS, help="TXBROKER_FAULTS of the processes"
        )
        parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between SIGKILLs")
        parser.add_argument("--redis-every", type=float, default=15.0, help="seconds between Redis wipes")
        parser.add_argument(
            "--broker",
            choices=BROKERS,
            default="redis",
            help="the run's own broker: a private redis-server (default) or a private RabbitMQ node",
        )
        parser.add_argument(
            "--rabbitmq-every", type=float, default=30.0, help="seconds between RabbitMQ restarts"
        )
        parser.add_argument(
            "--pg-every", type=float, default=10.0, help="seconds between pg_terminate_backend"
        )
        parser.add_argument("--freeze-every", type=float, default=20.0, help="seconds between freezes")
        parser.add_argument(
            "--freeze-scale", type=float, default=1.0, help="freezes last 30-120 s times this"
        )
        parser.add_argument(
            "--pg-crash-every", type=float, default=30.0, help="seconds between PostgreSQL crashes"
        )
        parser.add_argument(
            "--pg-crash-down", type=float, default=3.0, help="seconds PostgreSQL stays down after a crash"
        )
        parser.add_argument("--skew-seconds", type=float, default=300.0, help="clock skew of the skewed")
        parser.add_argument("--poison-share", type=float, default=0.01, help="share of poison messages")
        parser.add_argument(
            "--slow-check-share", type=float, default=0.1, help="share of checker calls that block"
        )
        # Shortened for the run like the retry delays: each attempt of a poison delivery
        # kills a pool process and stalls its batch-mates for a claim timeout.
        parser.add_argument(
            "--max-reconsume-times",
            type=int,
            default=5,
            help="TXBROKER_MAX_RECONSUME_TIMES of the processes (default 5; 0: txbroker's own, 16)",
        )
        parser.add_argument("--web-workers", type=int, default=4)
        parser.add_argument("--web-threads", type=int, default=4)
        parser.add_argument("--worker-concurrency", type=int, default=3)
        parser.add_argument("--settle-timeout", type=float, default=0.0, help="0: computed from intervals")
        parser.add_argument("--baseline", action="store_true", help="also run the naive design")
        parser.add_argument("--json", dest="json_path", help="write the report here")
        parser.add_argument(
            "--database-url", default=os.environ.get("CHAOS_DATABASE_URL", DEFAULT_DATABASE_URL)
        )
        parser.add_argument(
            "--redis-url",
            default=os.environ.get("CHAOS_REDIS_URL", ""),
            help="a shared Redis to use (FLUSHDB of its db); default: a private redis-server",
        )
        parser.add_argument("--run-dir", help="logs and SMS files (default: var/chaos/<time>)")
        parser.add_argument("--keep", action="store_true", help="keep the databases for inspection")
        # Internal: the child process that runs one design.
        parser.add_argument("--inner-design", choices=DESIGNS, help="internal")
        parser.add_argument("--inner-report", help="internal")
        parser.add_argument("--inner-postgres-dir", help="internal")
        parser.add_argument("--inner-postgres-port", type=int, default=0, help="internal")
        parser.add_argument("--inner-rabbitmq-dir", help="internal")

    def handle(self, *args, **options) -> None:
        if options["inner_design"]:
            self._inner(options)
            return
        if options["payments"] < 1 or options["concurrency"] < 1:
            raise CommandError("--payments and --concurrency must be at least 1")
        try:
            kinds = parse_fault_kinds(options["faults"], options["broker"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        options["faults"] = ",".join(k for k in FAULT_KINDS if k in kinds)
        name = urlsplit(options["database_url"]).path.lstrip("/")
        if "chaos" not in name:
            raise CommandError(CHAOS_DATABASE_REFUSED.format(name=name))
        if options["seed"] is None:
            options["seed"] = random.SystemRandom().randint(1, 10**6)
        run_dir = Path(
            options["run_dir"] or Path(settings.VAR_DIR) / "chaos" / time.strftime("%Y%m%d-%H%M%S")
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        self.stdout.write(f"chaos run in {run_dir} (seed {options['seed']})")

        rabbitmq = RabbitServer.create(run_dir / "rabbitmq") if options["broker"] == "amqp" else None
        if rabbitmq is not None:
            self.stdout.write(f"RabbitMQ of the run's own: port {rabbitmq.port}, {rabbitmq.base_dir}")
        redis_server = None if options["redis_url"] or rabbitmq else RedisServer(run_dir)
        # The run's broker URL (--redis-url names it whichever broker it is).
        redis_url = rabbitmq.url if rabbitmq else options["redis_url"] or redis_server.url
        options["rabbitmq"] = rabbitmq
        postgres = None
        reports: dict[str, dict[str, Any]] = {}
        try:
            if "pg-crash" in kinds:
                postgres = PrivatePostgres.create()
                options["database_url"] = postgres.url(name)
                self.stdout.write(
                    f"PostgreSQL of the run's own (pg-crash): port {postgres.port}, {postgres.data_dir}"
                )
            for design in ("txbroker", "naive") if options["baseline"] else ("txbroker",):
                reports[design] = self._run_child(
                    design, options, run_dir / design, redis_url, redis_server, postgres
                )
        finally:
            if redis_server is not None:
                redis_server.stop()
            if rabbitmq is not None:
                rabbitmq.stop()
            if postgres is not None:
                if options["keep"]:
                    postgres.stop()
                    self.stdout.write(
                        f"kept PostgreSQL's data in {postgres.data_dir} (start it with pg_ctl -D "
                        f"{postgres.data_dir} start, as the postgres user when root)"
                    )
                else:
                    postgres.remove(log_to=run_dir / "postgres.log")

        summary = combined(reports, self._settings(options))
        self.stdout.write("")
        self.stdout.write(table(reports))
        for line in false_rollback_lines(reports):
            self.stdout.write(line)
        self.stdout.write("")
        self.stdout.write(
            json.dumps({k: summary[k] for k in ("lost", "doubled", "stuck", "false_rollbacks", "violations")})
        )
        if options["json_path"]:
            write_json(options["json_path"], summary)
            self.stdout.write(f"report written to {options['json_path']}")
        main = reports["txbroker"]
        if main["violations"]:
            raise CommandError(
                CHAOS_VIOLATED.format(
                    lost=main["lost"],
                    doubled=main["doubled"],
                    stuck=main["stuck"],
                    false_rollbacks=main["false_rollbacks"],
                    other=main["other_violations"],
                )
            )
        self.stdout.write(self.style.SUCCESS("txbroker: 0 lost, 0 doubled, 0 stuck, 0 false rollbacks"))

    def _run_child(
        self, design: str, options: dict, run_dir: Path, redis_url: str, redis_server, postgres
    ) -> dict[str, Any]:
        database_url = options["database_url"] + ("_naive" if design == "naive" else "")
        run_dir.mkdir(parents=True, exist_ok=True)
        database_recreate(database_url)
        if redis_server is not None:
            from harness.services import redis_wipe

            redis_wipe(redis_url, whole_server=True)
        if options["rabbitmq"] is not None:
            self._purge(redis_url)
        report_path = run_dir / "report.json"
        argv = [
            sys.executable,
            "manage.py",
            "chaos",
            "--inner-design",
            design,
            "--inner-report",
            str(report_path),
        ]
        for key in CHILD_OPTIONS:
            argv += [f"--{key.replace('_', '-')}", str(options[key])]
        argv += ["--database-url", database_url, "--redis-url", redis_url, "--run-dir", str(run_dir)]
        if postgres is not None:
            argv += [
                "--inner-postgres-dir",
                str(postgres.base_dir),
                "--inner-postgres-port",
                str(postgres.port),
            ]
        if options["rabbitmq"] is not None:
            argv += ["--inner-rabbitmq-dir", str(options["rabbitmq"].base_dir)]
        extra = dict(FAST_RECONCILE_ENV)
        if options["max_reconsume_times"]:
            extra["TXBROKER_MAX_RECONSUME_TIMES"] = str(options["max_reconsume_times"])
        env = service_env(database_url=database_url, broker_url=redis_url, run_dir=run_dir, extra=extra)
        env["CHAOS_REDIS_WHOLE_SERVER"] = "1" if redis_server is not None else "0"
        try:
            result = subprocess.run(argv, cwd=ROOT, env=env, check=False)
            if result.returncode != 0 or not report_path.exists():
                raise CommandError(f"the {design} run failed (exit {result.returncode}); logs in {run_dir}")
            return json.loads(report_path.read_text())
        finally:
            if not options["keep"]:
                database_drop(database_url)

    def _inner(self, options: dict) -> None:
        run_options = RunOptions(
            payments=options["payments"],
            concurrency=options["concurrency"],
            users=options["users"],
            decline_share=options["decline_share"],
            refund_share=options["refund_share"],
            rounding_share=options["rounding_share"],
            seed=options["seed"],
            fault_points=options["fault_points"],
            plan=FaultPlan(
                kinds=parse_fault_kinds(options["faults"], options["broker"]),
                kill_every=options["kill_every"],
                redis_every=options["redis_every"],
                rabbitmq_every=options["rabbitmq_every"],
                pg_every=options["pg_every"],
                freeze_every=options["freeze_every"],
                freeze_scale=options["freeze_scale"],
                pg_crash_every=options["pg_crash_every"],
                pg_crash_down=options["pg_crash_down"],
                skew_seconds=options["skew_seconds"],
                poison_share=options["poison_share"],
                slow_check_share=options["slow_check_share"],
            ),
            web_workers=options["web_workers"],
            web_threads=options["web_threads"],
            worker_concurrency=options["worker_concurrency"],
            settle_timeout=options["settle_timeout"],
            database_url=options["database_url"],
            redis_url=options["redis_url"],
            redis_whole_server=os.environ.get("CHAOS_REDIS_WHOLE_SERVER") == "1",
            run_dir=Path(options["run_dir"]),
            postgres_dir=Path(options["inner_postgres_dir"]) if options["inner_postgres_dir"] else None,
            postgres_port=options["inner_postgres_port"],
            rabbitmq_dir=Path(options["inner_rabbitmq_dir"]) if options["inner_rabbitmq_dir"] else None,
        )
        report = run_design(options["inner_design"], run_options, lambda line: self.stdout.write(line))
        write_json(options["inner_report"], report)

    @staticmethod
    def _purge(broker_url: str) -> None:
        """No wake-up left in the run's RabbitMQ from the design before."""
        from kombu import Connection

        with Connection(broker_url, connect_timeout=5) as conn:
            try:
                conn.default_channel.queue_purge("celery")
            except conn.channel_errors:
                pass  # never declared

    @staticmethod
    def _settings(options: dict) -> dict[str, Any]:
        from harness.procs import CHAOS_BROKER_ENV

        # What the run was given (the report repeats it, so that a run can be repeated).
        return {
            **{k: options[k] for k in (*CHILD_OPTIONS, "max_reconsume_times")},
            "broker": CHAOS_BROKER_ENV,
            "reconciliation": FAST_RECONCILE_ENV,
        }
