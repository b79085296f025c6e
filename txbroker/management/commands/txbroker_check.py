from __future__ import annotations

from django.core.management.base import BaseCommand

from txbroker import checkback
from txbroker.management.base import ProgressBar, counted
from txbroker.models import Message


class Command(BaseCommand):
    help = "Run one check-back pass now: ask the producer groups' checkers about every due HALF message."

    def handle(self, *args, **options):
        due = Message.objects.due_for_check().count()
        if due:
            self.stdout.write(f"{counted(due, 'HALF message')} due for a check")
        bar = ProgressBar(self, "checked")
        report = checkback.check_pass(progress=lambda r: r.checked and bar(r.checked, due or None))
        bar.finish()
        if not report.checked:
            self.stdout.write(self.style.SUCCESS("nothing due: no HALF message waits for a check"))
            return
        settled = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items())) or "nothing settled"
        self.stdout.write(self.style.SUCCESS(f"checked {counted(report.checked, 'message')}: {settled}"))
