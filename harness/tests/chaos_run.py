"""Run ``manage.py chaos`` as a process of its own, as an operator would, for the chaos tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.procs import ROOT


@dataclass
class ChaosRun:
    returncode: int
    report: dict
    stdout: str
    output: str  # the tails of stdout and stderr, for assertion messages


def run_chaos(run_dir: Path, database: str, options: list[str], *, drop_env: tuple[str, ...]) -> ChaosRun:
    """``manage.py chaos OPTIONS`` on database ``database`` (never the developer's: a
    `make chaos` may be going on), its files and JSON report in ``run_dir``. Environment
    variables starting with one of ``drop_env`` are not passed on: the run sets its own."""
    report_path = run_dir / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_env)}
    env.update({"DJANGO_DEBUG": "1", "DJANGO_EXTRA_APPS": "harness"})
    argv = [
        sys.executable,
        "manage.py",
        "chaos",
        *options,
        f"--json={report_path}",
        f"--run-dir={run_dir}",
        f"--database-url=postgres://postgres@127.0.0.1:5432/{database}",
    ]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout[-6000:] + result.stderr[-4000:]
    assert report_path.exists(), output
    return ChaosRun(result.returncode, json.loads(report_path.read_text()), result.stdout, output)
