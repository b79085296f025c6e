"""The project's settings and txbroker's: every ``TXBROKER_*`` environment variable becomes
the Django setting of the same name (``config/settings/base.py``), how the README's
variables, the chaos runs and the tests' child processes reach txbroker, which reads Django
settings only."""

from __future__ import annotations

import subprocess
import sys

from txbroker.tests.processes import ROOT, child_env


def test_the_project_maps_every_txbroker_variable_onto_its_setting():
    code = "from txbroker.conf import txsettings; print(txsettings.CHECK_MAX, txsettings.RETRY_DELAYS)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=child_env(TXBROKER_CHECK_MAX="7", TXBROKER_RETRY_DELAYS="1s 2m"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "7 (1.0, 120.0)"
