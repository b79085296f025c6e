"""The chaos report: one table, a column per design, and the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("duration (s)", ("duration_seconds",)),
    ("load (s)", ("load_seconds",)),
    ("settled after (s)", ("settle", "seconds")),
    ("payments attempted", ("payments", "attempted")),
    ("  succeeded (200/201)", ("payments", "succeeded")),
    ("  pending (202)", ("payments", "pending_202")),
    ("  declined (402)", ("payments", "declined")),
    ("  unfinished (no answer, 409, 5xx)", ("payments", "unfinished")),
    ("  SUCCESS payment records", ("payments", "records_success")),
    ("  orders PAID", ("payments", "orders_paid")),
    ("refunds requested (txbroker)", ("refunds", "requested")),
    ("  refunded", ("refunds", "refunded")),
    ("  pay consumed before refund (order x group)", ("refunds", "consumer_group_pairs_in_order")),
    ("  orders whose points net to zero", ("refunds", "orders_points_net_zero")),
    ("LOST", ("lost",)),
    ("DOUBLED", ("doubled",)),
    ("STUCK", ("stuck",)),
    ("FALSE ROLLBACKS", ("false_rollbacks",)),
    ("other violations", ("other_violations",)),
    ("rolled back by check-back", ("rollbacks_by_check_back", "total")),
    ("  producer killed meanwhile", ("rollbacks_by_check_back", "producer_killed")),
    ("  producer frozen meanwhile", ("rollbacks_by_check_back", "producer_frozen")),
    ("  producer alive (false rollbacks)", ("rollbacks_by_check_back", "false")),
    ("freeze: processes frozen in a transaction", ("freeze", "count")),
    ("freeze: how they ended", ("freeze", "ends")),
    ("freeze: longest / kept to the end of the load (s)", ("freeze", "spans")),
    ("pg-crash: crashes", ("pg_crash", "crashes")),
    ("pg-crash: downtime total / max (s)", ("pg_crash", "downtime")),
    ("skew: processes ahead (s)", ("skew", "label")),
    ("poison: payments", ("poison", "payments")),
    ("poison: deliveries DEAD as expected", ("poison", "deliveries_dead")),
    ("poison: effects not applied (not lost)", ("poison", "effects_missing")),
    ("poison: worker exits", ("poison", "worker_exits")),
    ("slow-check: checker calls blocked", ("faults_injected", "checker_block")),
    ("deaths: gunicorn WORKER TIMEOUT", ("deaths", "gunicorn_worker_timeout")),
    ("deaths: Celery hard time limit", ("deaths", "celery_hard_time_limit")),
)


def _get(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return "-"
        value = value[key]
    return value


def _kinds(reports: dict[str, dict[str, Any]], section: str) -> list[str]:
    kinds: set[str] = set()
    for report in reports.values():
        kinds.update(report.get(section, {}))
    return sorted(kinds)


def _derived(report: dict[str, Any]) -> dict[str, Any]:
    """Cells made of several figures."""
    report = dict(report)
    crash = report.get("pg_crash")
    if isinstance(crash, dict) and "crashes" in crash:
        report["pg_crash"] = {
            **crash,
            "downtime": f"{crash['downtime_total_seconds']} / {crash['downtime_max_seconds']}",
        }
    freeze = report.get("freeze")
    if isinstance(freeze, dict) and "count" in freeze:
        freeze = {**freeze, "spans": f"{freeze['longest_seconds']} / {freeze['kept_seconds']}"}
        report["freeze"] = {**freeze, "ends": ", ".join(f"{n} {end}" for end, n in freeze["by_end"].items())}
    skew = report.get("skew")
    if isinstance(skew, dict):
        label = f"{', '.join(skew['processes'])} +{skew['seconds']:g}" if skew.get("processes") else 0
        report["skew"] = {**skew, "label": label}
    if report.get("design") == "naive":
        report.pop("false_rollbacks", None)
    else:  # checker calls exist in txbroker only: none blocked is a 0
        report["faults_injected"] = {"checker_block": 0, **report.get("faults_injected", {})}
    return report


def table(reports: dict[str, dict[str, Any]]) -> str:
    reports = {design: _derived(report) for design, report in reports.items()}
    designs = list(reports)
    rows: list[tuple[str, list[Any]]] = [
        (label, [_get(reports[d], path) for d in designs]) for label, path in ROWS
    ]
    for section, title in (
        ("lost_by_kind", "lost"),
        ("doubled_by_kind", "doubled"),
        ("stuck_by_kind", "stuck"),
        ("other_violations_by_kind", "violation"),
        ("faults_injected", "fault"),
        ("restarts_by_supervisor", "restarted"),
    ):
        for kind in _kinds(reports, section):
            rows.append((f"{title}: {kind}", [reports[d].get(section, {}).get(kind, 0) for d in designs]))
    rows.append(
        (
            "SMS sent more than once (provider)",
            [_get(reports[d], ("sms_provider", "extra_sends")) for d in designs],
        )
    )
    rows.append(
        (
            "charges ABANDONED (to refund)",
            [reports[d].get("charges", {}).get("ABANDONED", 0) for d in designs],
        )
    )
    rows.append(
        (
            "charges left PENDING/APPROVED",
            [sum(reports[d].get("charges", {}).get(s, 0) for s in ("PENDING", "APPROVED")) for d in designs],
        )
    )
    rows.append(
        (
            "charges settled by reconciliation",
            [sum(reports[d].get("charges_reconciled", {}).values()) for d in designs],
        )
    )
    rows.append(
        (
            "messages settled by check-back",
            [_get(reports[d], ("messages", "settled_by_check_back")) for d in designs],
        )
    )
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(12, *(len(str(v[i])) for _, v in rows), len(designs[i])) + 2 for i in range(len(designs))]
    lines = ["".ljust(width) + "".join(d.rjust(cols[i]) for i, d in enumerate(designs))]
    lines.append("-" * (width + sum(cols)))
    for label, values in rows:
        lines.append(label.ljust(width) + "".join(str(v).rjust(cols[i]) for i, v in enumerate(values)))
    return "\n".join(lines)


def false_rollback_lines(reports: dict[str, dict[str, Any]]) -> list[str]:
    """txbroker's false rollbacks, one line each with its cause."""
    main = reports["txbroker"]
    counts = main.get("rollbacks_by_check_back", {})
    if not main.get("false_rollbacks"):
        return []
    lines = [
        "",
        f"false rollbacks (txbroker): {main['false_rollbacks']}, by cause {counts.get('false_by_cause', {})}",
    ]
    lines += [f"  {example}" for example in main.get("false_rollback_examples", [])]
    return lines


def combined(reports: dict[str, dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON: txbroker's lost/doubled/stuck/false_rollbacks at the top level, every
    design in full."""
    main = reports["txbroker"]
    return {
        "lost": int(main["lost"]),
        "doubled": int(main["doubled"]),
        "stuck": int(main["stuck"]),
        "false_rollbacks": int(main["false_rollbacks"]),
        "violations": int(main["violations"]),
        "settings": settings,
        "designs": reports,
    }


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
