"""The bench's table, JSON and optional plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


# txbroker's peers: the designs a user could pick instead of it (raw is a ceiling, not one).
PEERS = ("naive", "celery_outbox", "procrastinate")


def best_peer(runs: dict[str, dict[str, Any]]) -> Optional[str]:
    """The peer that ran with the most payments/s fully consumed; None if none ran."""
    ran = [name for name in PEERS if runs.get(name, {}).get("payments_per_s")]
    return max(ran, key=lambda name: runs[name]["payments_per_s"], default=None)


def ratios(runs: dict[str, dict[str, Any]]) -> dict[str, Optional[float]]:
    pps = {name: run.get("payments_per_s") for name, run in runs.items()}
    best = best_peer(runs)
    found = {
        "txbroker_vs_naive": ratio(pps.get("txbroker"), pps.get("naive")),
        "txbroker_vs_raw": ratio(pps.get("txbroker"), pps.get("raw")),
        "txbroker_vs_best_peer": ratio(pps.get("txbroker"), pps.get(best) if best else None),
    }
    if "txbroker_ordered" in runs:
        # Payments in 100 message groups, each consumed in order, against no groups.
        found["ordered_vs_unordered"] = ratio(pps.get("txbroker_ordered"), pps.get("txbroker"))
    return found


def _fmt(value: Any, width: int) -> str:
    text = "-" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))
    return text.rjust(width)


def table(runs: dict[str, dict[str, Any]]) -> str:
    header = (
        f"{'run':<14}{'pay/s':>8}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'stmt/pay':>10}{'tx/pay':>8}{'pg tx':>7}{'cpu ms/pay: prod':>18}{'worker':>8}{'pg':>7}{'redis':>7}"
    )
    lines = [header, "-" * len(header)]
    for name, run in runs.items():
        latency = run["latency_ms"]["all"]
        cpu = run["cpu_ms_per_payment"]
        lines.append(
            f"{name:<14}{_fmt(run['payments_per_s'], 8)}{_fmt(latency['p50'], 8)}{_fmt(latency['p95'], 8)}"
            f"{_fmt(latency['p99'], 8)}{_fmt(run['statements_per_payment']['total'], 10)}"
            f"{_fmt(run['transactions_per_payment']['total'], 8)}"
            f"{_fmt(run['transactions_per_payment'].get('postgres'), 7)}"
            f"{_fmt(cpu['producer'], 18)}{_fmt(cpu['worker'], 8)}{_fmt(cpu['postgres'], 7)}{_fmt(cpu['redis'], 7)}"
        )
    lines.append("latency: ms from the payment call's return to its consumers' commits (all three groups)")
    for name, run in runs.items():
        if run.get("note"):
            lines.append(f"{name}: {run['note']}")
    return "\n".join(lines)


def group_table(runs: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'run':<14}{'group':<15}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>9}"]
    for name, run in runs.items():
        for group, figures in run["latency_ms"].items():
            lines.append(
                f"{name:<14}{group:<15}{_fmt(figures['p50'], 8)}{_fmt(figures['p95'], 8)}"
                f"{_fmt(figures['p99'], 8)}{_fmt(figures['max'], 9)}"
            )
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def plot(path: Path, samples: dict[str, list[float]]) -> None:
    """Cumulative distributions of commit -> all three consumed, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in samples.items():
        if not values:
            continue
        ordered = sorted(max(v, 0.01) for v in values)
        ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("payment call returned -> all three groups consumed (ms, log scale)")
    ax.set_ylabel("fraction of payments")
    ax.axvline(100, color="grey", linestyle=":", linewidth=1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title("txbroker bench: latency distributions")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
