from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from txbroker import operations
from txbroker.conf import parse_duration
from txbroker.management.base import ProgressBar, counted


class Command(BaseCommand):
    help = (
        "Delete finished messages (ROLLED_BACK, or COMMITTED with every delivery SUCCEEDED) older than "
        "--older-than, with their deliveries, keys and trace, in batches. Never HALF, DISCARDED, or "
        "anything with an undone or DEAD delivery."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="a duration: 7d, 12h, 30m")
        parser.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
        parser.add_argument("--batch-size", type=int, default=1000, help="messages per transaction")

    def handle(self, *args, older_than: str, dry_run: bool = False, batch_size: int = 1000, **options):
        try:
            seconds = parse_duration(older_than)
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from exc
        if seconds <= 0:
            raise CommandError("--older-than must be more than 0")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        age = timedelta(seconds=seconds)
        if dry_run:
            report = operations.purge(older_than=age, dry_run=True)
            self.stdout.write(
                f"dry run: would delete {counted(report.messages, 'message')} older than {older_than}, "
                f"with {_contents(report)}; nothing changed"
            )
            return
        bar = ProgressBar(self, "messages deleted")
        report = operations.purge(older_than=age, batch_size=batch_size, progress=bar)
        bar.finish()
        self.stdout.write(
            self.style.SUCCESS(
                f"deleted {counted(report.messages, 'message')} older than {older_than}, "
                f"with {_contents(report)}"
            )
        )


def _contents(report) -> str:
    deliveries = counted(report.deliveries, "delivery", "deliveries")
    return f"{deliveries}, {counted(report.trace_events, 'trace event')} and {counted(report.keys, 'key')}"
