from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from txbroker.selectors import STAT_STATUSES, stats

# The default table fits a 100-column terminal: per group what is waiting (lag), failing
# (RETRY), dead, and how long the oldest has waited. --wide adds every status.
WIDTH = 100
NARROW_COLUMNS = ["lag", "RETRY", "DEAD", "oldest pending"]
WIDE_COLUMNS = [*STAT_STATUSES, "lag", "oldest pending"]


def _cell(counts: dict, column: str) -> str:
    if column == "oldest pending":
        return f"{counts['oldest_pending_age_seconds']:.1f}s"
    return str(counts[column])


def _shortened(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: (keep + 1) // 2] + "~" + text[len(text) - keep // 2 :]


def _line(name: str, name_width: int, cells: list[str], widths: list[int]) -> str:
    return f"  {name:<{name_width}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))


class Command(BaseCommand):
    help = (
        "Messages per state; per consumer group lag, retries, dead letters and oldest pending age "
        "(--wide: deliveries per status too)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="the REST API's /stats/ JSON")
        parser.add_argument(
            "--wide",
            action="store_true",
            help="every delivery status, full group names (wider than 100 columns)",
        )

    def handle(self, *args, **options):
        data = stats()
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(self.style.MIGRATE_HEADING("Messages"))
        for state, n in data["messages"].items():
            self.stdout.write(f"  {state:<12} {n:>10}")
        self.stdout.write(self.style.MIGRATE_HEADING("Deliveries"))
        columns = WIDE_COLUMNS if options["wide"] else NARROW_COLUMNS
        groups = data["deliveries"]
        rows = [[_cell(counts, c) for c in columns] for counts in groups.values()]
        widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
        cells_width = sum(w + 2 for w in widths)
        name_width = max([len("group"), *(len(g) for g in groups)])
        if not options["wide"]:
            name_width = max(len("group"), min(name_width, WIDTH - 2 - cells_width))
        self.stdout.write(_line("group", name_width, columns, widths))
        for group, row in zip(groups, rows, strict=True):
            name = group if options["wide"] else _shortened(group, name_width)
            self.stdout.write(_line(name, name_width, row, widths))
