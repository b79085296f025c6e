"""``manage.py bench``: txbroker against the naive design, the raw ceiling and its peers
(``--designs ...,celery_outbox,procrastinate``: django-celery-outbox and procrastinate).

Runs each design against fresh tables in the configured database (which must be a bench
or test database: the bench empties its tables) with a real Celery worker pool, and
reports payments per second fully consumed, latency percentiles, statements and
transactions per payment and CPU time. ``make bench`` runs it on PostgreSQL + Redis;
``make bench-embedded`` on the embedded defaults (SQLite + filesystem transport).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from harness.bench.designs import DESIGNS, OPTIONAL_DESIGNS, PEERS
from harness.bench.report import best_peer, group_table, plot, ratios, table, write_json
from harness.bench.runner import RunConfig, run_design

PEERS_NEED_POSTGRESQL = (
    "{designs}: the peers run on PostgreSQL with the harness installed (DJANGO_EXTRA_APPS=harness "
    "installs django_celery_outbox and procrastinate.contrib.django there)"
)
BENCH_DATABASE_REFUSED = (
    "the bench empties its tables: point DATABASE_URL at a database whose name contains "
    "'bench' or starts with 'test' (`make bench` creates txbroker_bench), not {name!r}"
)


def bench_database_allowed() -> bool:
    name = str(connection.settings_dict["NAME"])
    base = Path(name).name if connection.vendor == "sqlite" else name
    return "bench" in name or base.startswith("test")


def _use_broker(url: str) -> None:
    """Point this process's Celery (and txbroker's wake-up marks) at ``url``, dropping any
    connection pool made for the previous broker."""
    from celery import current_app

    settings.CELERY_BROKER_URL = url
    # Celery reads the variable before its configuration (celery.app.utils.Settings).
    os.environ["CELERY_BROKER_URL"] = url
    current_app.conf.broker_url = url
    if current_app._pool is not None:
        current_app._pool.force_close_all()
        current_app._pool = None
    current_app.amqp._producer_pool = None


class Command(BaseCommand):
    help = (
        "Benchmark txbroker against the naive on_commit + delay design, the raw ceiling and "
        "(optionally) its peers django-celery-outbox and procrastinate."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--payments", type=int, default=2000)
        parser.add_argument("--concurrency", type=int, default=2, help="producer processes")
        parser.add_argument("--workers", type=int, default=2, help="Celery worker pool processes")
        parser.add_argument(
            "--designs",
            default=",".join(DESIGNS),
            help=f"comma separated, of {', '.join(DESIGNS + OPTIONAL_DESIGNS)}",
        )
        parser.add_argument(
            "--rate", type=float, help="payments per second in total (default: as fast as possible)"
        )
        parser.add_argument("--repeat", type=int, default=1, help="runs per design; the median is kept")
        parser.add_argument("--no-half-rate", action="store_true", help="skip the txbroker run at half rate")
        parser.add_argument("--json", dest="json_path", help="write the figures to this JSON file")
        parser.add_argument("--plot", dest="plot_path", help="write latency distributions to this PNG")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds a run may take")
        parser.add_argument("--work-dir", help="logs and counters (default: a temporary folder)")
        parser.add_argument(
            "--history",
            action="store_true",
            help="instead: check pass, sweep, claim and list pages with 1k vs 1M finished messages",
        )
        parser.add_argument(
            "--history-sizes", default="1000,1000000", help="finished messages, smallest first"
        )
        parser.add_argument(
            "--memory", action="store_true", help="instead: worker RSS over --deliveries deliveries"
        )
        parser.add_argument("--deliveries", type=int, default=100_000)
        parser.add_argument(
            "--shared-redis",
            action="store_true",
            help="use CELERY_BROKER_URL as it is (default with Redis: a private redis-server, so "
            "that no other worker on the same Redis takes the bench's tasks)",
        )

    def handle(self, *args, **options) -> None:
        if not bench_database_allowed():
            raise CommandError(BENCH_DATABASE_REFUSED.format(name=connection.settings_dict["NAME"]))
        designs = [d.strip() for d in options["designs"].split(",") if d.strip()]
        unknown = set(designs) - set(DESIGNS + OPTIONAL_DESIGNS)
        if unknown:
            raise CommandError(f"unknown designs: {', '.join(sorted(unknown))}")
        peers = [design for design in designs if design in PEERS]
        if peers and not apps.is_installed("procrastinate.contrib.django"):
            raise CommandError(PEERS_NEED_POSTGRESQL.format(designs=", ".join(peers)))
        if min(options["payments"], options["concurrency"], options["workers"], options["repeat"]) < 1:
            raise CommandError("--payments, --concurrency, --workers and --repeat must be at least 1")
        work_dir = Path(options["work_dir"] or tempfile.mkdtemp(prefix="txbroker-bench-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        private = None
        if settings.CELERY_BROKER_URL.startswith("redis") and not options["shared_redis"]:
            private = self.private_redis(work_dir)
        try:
            if options["history"]:
                return self.history(options)
            if options["memory"]:
                return self.memory(options, work_dir)
            return self.compare(options, work_dir, designs)
        finally:
            if private is not None:
                private.stop()

    def private_redis(self, work_dir: Path):
        """A redis-server of the bench's own (harness.procs), made this process's broker and
        its children's (they get ``settings.CELERY_BROKER_URL`` in their environment) until
        the returned server is stopped."""
        from harness.services import RedisServer

        server = RedisServer(work_dir)
        previous = settings.CELERY_BROKER_URL
        _use_broker(server.url)
        self.stdout.write(f"private redis-server at {server.url}")
        stop = server.stop

        def stop_and_restore() -> None:
            _use_broker(previous)
            stop()

        server.stop = stop_and_restore
        return server

    def compare(self, options, work_dir: Path, designs: list[str]) -> None:
        cfg = RunConfig(
            payments=options["payments"],
            concurrency=options["concurrency"],
            workers=options["workers"],
            work_dir=work_dir,
            timeout=options["timeout"],
            rate=options["rate"],
        )
        self.stdout.write(
            f"bench on {connection.vendor} ({connection.settings_dict['NAME']}), {cfg.payments} payments, "
            f"{cfg.concurrency} producers, {cfg.workers} worker processes; logs in {work_dir}"
        )
        # Designs run in rotation, --repeat times: each keeps its median run by payments/s
        # (a shared machine's background load hits every design alike).
        tried: dict[str, list[dict]] = {design: [] for design in designs}
        for round_ in range(options["repeat"]):
            for design in designs:
                label = design if options["repeat"] == 1 else f"{design}#{round_ + 1}"
                tried[design].append(run_design(design, cfg, label=label, progress=self.stdout.write))
        runs = {}
        for design, attempts in tried.items():
            ordered = sorted(attempts, key=lambda run: run["payments_per_s"] or 0)
            runs[design] = ordered[len(ordered) // 2]
            runs[design]["payments_per_s_runs"] = [run["payments_per_s"] for run in attempts]
        if (
            "txbroker" in runs
            and not options["no_half_rate"]
            and not options["rate"]
            and runs["txbroker"]["payments_per_s"]
        ):
            half = runs["txbroker"]["payments_per_s"] / 2
            cfg.rate = half
            runs["txbroker_half"] = run_design(
                "txbroker", cfg, label="txbroker_half", progress=self.stdout.write
            )

        samples = {name: run.pop("_all_ms") for name, run in runs.items()}
        self.stdout.write("")
        self.stdout.write(table(runs))
        self.stdout.write("")
        self.stdout.write(group_table(runs))
        figures = ratios(runs)
        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(
                f"txbroker/naive = {figures['txbroker_vs_naive']}   txbroker/raw = {figures['txbroker_vs_raw']}   "
                f"txbroker/best peer ({best_peer(runs)}) = {figures['txbroker_vs_best_peer']}"
            )
        )
        document = {
            "database": connection.vendor,
            "broker": settings.CELERY_BROKER_URL.split("://", 1)[0],
            "config": {"payments": cfg.payments, "producers": cfg.concurrency, "workers": cfg.workers},
            "ratios": figures,
            "designs": runs,
        }
        if options["json_path"]:
            write_json(Path(options["json_path"]), document)
            self.stdout.write(f"figures written to {options['json_path']}")
        if options["plot_path"]:
            plot(Path(options["plot_path"]), samples)
            self.stdout.write(f"latency plot written to {options['plot_path']}")

    def history(self, options) -> None:
        from harness.bench.history import history_bench

        sizes = tuple(int(size) for size in options["history_sizes"].split(","))
        results = history_bench(sizes=sizes, progress=self.stdout.write)
        for name, plan in results["plans"].items():
            self.stdout.write(f"\n-- plan: {name}\n{plan}")
        self.stdout.write("")
        header = f"{'finished messages':>18}{'check pass ms':>15}{'sweep ms':>10}{'claim pass ms':>15}"
        self.stdout.write(header)
        for size, figures in results["sizes"].items():
            self.stdout.write(
                f"{int(size):>18,}{figures['check_pass']:>15}{figures['sweep']:>10}{figures['claim_pass']:>15}"
            )
        self.stdout.write(f"{'ratio':>18}" + "".join(f"{v!s:>15}" for v in results["ratios"].values()))
        self.stdout.write("\nlist pages (server ms / queries):")
        for size, figures in results["sizes"].items():
            pages = ", ".join(
                f"{name} {page.get('ms', page.get('status'))} ms / {page.get('queries', '-')}"
                for name, page in figures["pages"].items()
            )
            self.stdout.write(f"  {int(size):>10,}: {pages}")
        seq = results["seq_scans_in_plans"]
        self.stdout.write(
            self.style.SUCCESS("no sequential scan in the hot plans")
            if not seq
            else self.style.WARNING(f"sequential scans in: {', '.join(seq)}")
        )
        if options["json_path"]:
            write_json(Path(options["json_path"]), {"history": results})

    def memory(self, options, work_dir: Path) -> None:
        from harness.bench.memory import memory_bench

        results = memory_bench(options["deliveries"], work_dir, progress=self.stdout.write)
        self.stdout.write(
            f"{results['deliveries']:,} deliveries in {results['seconds']}s: pool process RSS "
            f"{results['rss_after_warmup_mb']} MB after warm-up, {results['rss_end_mb']} MB at the end "
            f"({results['growth_after_warmup']:+.1%})"
        )
        if options["json_path"]:
            write_json(Path(options["json_path"]), {"memory": results})
