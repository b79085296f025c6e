from __future__ import annotations

from django.core.management.base import BaseCommand

from txbroker import checkback
from txbroker.management.base import ProgressBar
from txbroker.models import Message


class Command(BaseCommand):
    help = "Run one check-back pass now: ask the producer groups' checkers about every due HALF message."

    def handle(self, *args, **options):
        due = Message.objects.due_for_check().count()
        self.stdout.write(f"{due} HALF message(s) due for a check")
        bar = ProgressBar(self, "checked")
        report = checkback.check_pass(progress=lambda r: bar(r.checked, due or None))
        bar.finish()
        settled = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "nothing to settle"
        self.stdout.write(self.style.SUCCESS(f"checked {report.checked}: {settled}"))
