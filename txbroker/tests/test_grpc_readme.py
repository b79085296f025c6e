"""The README's "Other languages: RocketMQ 5 clients" example, run as written (read from
README.md: the Python block after ``<!-- grpc-example -->``) against a real
``manage.py txbroker_grpc`` with the README's credentials; only the address is this test's."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from txbroker.models import Message
from txbroker.tests.processes import ROOT, start_grpc

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- grpc-example -->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "no <!-- grpc-example --> block in the README"
    return match.group(1)


def test_the_readme_python_client_example_works_as_written(broker_env, tmp_path):
    code = readme_example()
    assert '"127.0.0.1:8081"' in code and 'Credentials("erp", "erp-secret")' in code
    server = start_grpc(tmp_path, TXBROKER_GRPC_CREDENTIALS="erp:erp-secret")
    try:
        script = tmp_path / "example.py"
        script.write_text(code.replace('"127.0.0.1:8081"', f'"{server.endpoint}"'))
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    finally:
        server.proc.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    sent = re.search(r"^sent (\w+)$", result.stdout, re.MULTILINE).group(1)
    committed = re.search(r"^committed (\w+)$", result.stdout, re.MULTILINE).group(1)

    plain = Message.objects.get(pk=sent)
    assert plain.state == Message.State.COMMITTED and plain.tag == "created"
    # What the README says a Django consumer of the topic receives.
    assert plain.body == {"order_id": 1001, "total": "25.00"}
    assert plain.properties["source"] == "erp"
    assert Message.objects.get(pk=committed).state == Message.State.COMMITTED
