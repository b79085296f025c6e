"""Tracing in the processes a test starts: they run under ``opentelemetry-instrument``,
configured by OpenTelemetry's standard environment variables only, and export their spans
with :class:`JsonLinesSpanExporter` (one JSON object per span, a file per process) into a
folder the test reads. The exporter is found the way the SDK finds any exporter, by its
entry point (``OTEL_TRACES_EXPORTER``): :func:`traced_env` writes a small distribution's
metadata naming it into the test's folder and puts that folder on the children's path."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

EXPORTER_NAME = "txbroker_test_spans"
SPANS_DIR_VARIABLE = "TXBROKER_TEST_SPANS_DIR"

try:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
except ImportError:  # the tests that use it skip (see require_opentelemetry)
    SpanExporter = object  # type: ignore[assignment,misc]


def require_opentelemetry() -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the tracing extra is not installed")
    pytest.importorskip("opentelemetry.distro", reason="opentelemetry-distro is not installed")


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span, as one JSON line, to ``spans-<pid>.jsonl`` in the folder
    named by TXBROKER_TEST_SPANS_DIR."""

    def __init__(self) -> None:
        self.folder = Path(os.environ[SPANS_DIR_VARIABLE])

    def export(self, spans: Sequence[Any]) -> Any:
        lines = "".join(json.dumps(as_dict(span)) + "\n" for span in spans)
        with open(self.folder / f"spans-{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def as_dict(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": _hex(context.trace_id, 32),
        "span_id": _hex(context.span_id, 16),
        "parent_id": _hex(span.parent.span_id, 16) if span.parent else None,
        "attributes": {k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()},
        "links": [
            {"trace_id": _hex(link.context.trace_id, 32), "span_id": _hex(link.context.span_id, 16)}
            for link in span.links
        ],
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
        "service": span.resource.attributes.get("service.name"),
        "pid": os.getpid(),
    }


def traced_env(folder: Path, service: str) -> dict[str, str]:
    """The environment of a child process that exports its spans into ``folder``: the
    standard OTEL_* variables, and our exporter's entry point on its path."""
    spans = folder / "spans"
    spans.mkdir(exist_ok=True)
    plugins = folder / "otel-plugins"
    dist = plugins / "txbroker_test_spans-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: txbroker-test-spans\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        f"[opentelemetry_traces_exporter]\n{EXPORTER_NAME} = txbroker.tests.spans:JsonLinesSpanExporter\n"
    )
    path = [str(plugins), os.environ.get("PYTHONPATH", "")]
    return {
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": EXPORTER_NAME,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        # Spans reach the file within a tenth of a second (the default waits 5 s).
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        SPANS_DIR_VARIABLE: str(spans),
    }


def traced(argv: list[str]) -> list[str]:
    """``argv`` run under ``opentelemetry-instrument`` (zero-code instrumentation: the SDK
    configured from the environment, Django, Celery and psycopg instrumented)."""
    command = Path(sys.executable).with_name("opentelemetry-instrument")
    if not command.exists():
        command = Path(shutil.which("opentelemetry-instrument") or "opentelemetry-instrument")
    return [str(command), *argv]


def read_spans(folder: Path) -> list[dict[str, Any]]:
    """Every span the traced processes exported so far."""
    spans = []
    for path in sorted((folder / "spans").glob("spans-*.jsonl")):
        text = path.read_text(encoding="utf-8")
        # A last line without its newline is still being written: read it next time.
        complete = text[: text.rfind("\n") + 1]
        spans.extend(json.loads(line) for line in complete.splitlines())
    return spans
