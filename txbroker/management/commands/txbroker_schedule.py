from django.core.management.base import BaseCommand

from txbroker.schedule import ensure_periodic_tasks


class Command(BaseCommand):
    help = "Create the check-back and sweep periodic tasks when missing (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--sync", action="store_true", help="also reset their intervals to the TXBROKER_* settings"
        )

    def handle(self, *args, sync: bool = False, **options):
        done = ensure_periodic_tasks(sync=sync)
        self.stdout.write("\n".join(done) if done else "periodic tasks already in place")
