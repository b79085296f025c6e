from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from txbroker.selectors import STAT_STATUSES, stats


class Command(BaseCommand):
    help = "Messages per state; per consumer group deliveries per status, lag and oldest pending age."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="the REST API's /stats/ JSON")

    def handle(self, *args, **options):
        data = stats()
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(self.style.MIGRATE_HEADING("Messages"))
        for state, n in data["messages"].items():
            self.stdout.write(f"  {state:<12} {n:>10}")
        self.stdout.write(self.style.MIGRATE_HEADING("Deliveries"))
        columns = [*STAT_STATUSES, "lag", "oldest pending"]
        width = max([len("group"), *(len(g) for g in data["deliveries"])])
        self.stdout.write("  " + f"{'group':<{width}} " + " ".join(f"{c:>14}" for c in columns))
        for group, counts in data["deliveries"].items():
            cells = [str(counts[s]) for s in STAT_STATUSES]
            cells += [str(counts["lag"]), f"{counts['oldest_pending_age_seconds']:.1f}s"]
            self.stdout.write("  " + f"{group:<{width}} " + " ".join(f"{c:>14}" for c in cells))
