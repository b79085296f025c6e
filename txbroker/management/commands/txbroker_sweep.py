from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from txbroker import delivery
from txbroker.management.base import counted


class Command(BaseCommand):
    help = "Run one delivery sweep now: take back expired claims and enqueue tasks for due deliveries."

    def add_arguments(self, parser):
        parser.add_argument("--max-tasks", type=int, default=64, help="at most this many delivery tasks")

    def handle(self, *args, max_tasks: int = 64, **options):
        if max_tasks < 1:
            raise CommandError("--max-tasks must be at least 1")
        report = delivery.sweep(max_tasks=max_tasks)
        if not (report.due or report.reclaimed):
            self.stdout.write(self.style.SUCCESS("nothing due: no delivery waits, no claim expired"))
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"enqueued {counted(report.enqueued, 'delivery task')} for "
                f"{counted(report.due, 'due delivery', 'due deliveries')}; "
                f"reclaimed {counted(report.reclaimed, 'expired claim')}"
            )
        )
