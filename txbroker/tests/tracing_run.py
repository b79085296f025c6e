"""Run by test_tracing.py in a child process (``python -m txbroker.tests.tracing_run MODE``),
on the test database: sends, delivers and checks back a few messages in this process and
prints what it saw as one JSON object.

MODE ``blocked``: OpenTelemetry cannot be imported (a meta path finder refuses it, as if it
were not installed). MODE ``memory``: the SDK records every span with its in-memory
exporter. Either way the process's own global state is its own, never the test runner's."""

from __future__ import annotations

import importlib.abc
import json
import sys
import time
from typing import Any

EXPLICIT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class BlockOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


def memory_exporter() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def deliver_all(expected: int) -> None:
    from txbroker import delivery
    from txbroker.models import Delivery

    deadline = time.monotonic() + 30
    while Delivery.objects.filter(status="SUCCEEDED").count() < expected:
        if time.monotonic() > deadline:
            raise SystemExit("deliveries did not all succeed within 30 s")
        delivery.deliver_due(budget_seconds=5)
        time.sleep(0.05)  # the retry delay (TXBROKER_RETRY_DELAYS) runs on the database's clock


def main(mode: str) -> None:
    exporter = None
    if mode == "blocked":
        sys.meta_path.insert(0, BlockOpenTelemetry())
    else:
        exporter = memory_exporter()

    import django

    django.setup()
    from django.db import transaction

    from txbroker import OutgoingMessage, Producer, operations, tracing
    from txbroker.checkback import check_pass
    from txbroker.models import Delivery, Message
    from txbroker.tests.helpers import send
    from txbroker.tests.support.consumers import TOPIC
    from txbroker.tests.support.models import Plan

    Plan.objects.create(key="t-fail", fail_times=1)
    sent = {
        "fail": send("t-fail", tag="pay").msg_id,  # its handlers fail their first attempt
        "check": send("t-check", answer="UNKNOWN", check_immunity_seconds=0).msg_id,
        "rollback": send("t-rollback", answer="ROLLBACK").msg_id,
        "operator": send("t-operator", answer="UNKNOWN", check_immunity_seconds=600).msg_id,
        # A context the producer put in the properties itself (relayed from elsewhere).
        "explicit": send("t-explicit", tag="note", properties={"traceparent": EXPLICIT}).msg_id,
    }
    operations.resolve(sent["operator"], commit=False, actor="tester")  # outside any span
    with transaction.atomic():
        sent["plain"] = Producer("test_plain_group").send(
            OutgoingMessage(topic=TOPIC, tag="note", keys=["t-plain"], body={})
        )
    check_pass()  # t-check: its local record exists, so the checker answers COMMIT
    expected = Delivery.objects.count()
    deliver_all(expected)

    report = {
        "enabled": tracing.ENABLED,
        "opentelemetry_modules": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"),
        "sent": sent,
        "states": {name: Message.objects.get(pk=msg_id).state for name, msg_id in sent.items()},
        "properties": {name: Message.objects.get(pk=msg_id).properties for name, msg_id in sent.items()},
        "deliveries": expected,
        "spans": [],
    }
    try:
        import opentelemetry.trace  # noqa: F401

        report["importable"] = True
    except ModuleNotFoundError:
        report["importable"] = False
    if exporter is not None:
        from txbroker.tests.spans import as_dict

        report["spans"] = [as_dict(span) for span in exporter.get_finished_spans()]
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
