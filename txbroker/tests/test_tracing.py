"""Tracing across the broker (txbroker.tracing), in child processes on the test database
(txbroker/tests/tracing_run.py), so that no tracer provider is ever set in the test runner:

- without OpenTelemetry (its import refused) messages flow as before, their properties
  carry no trace context, and no module of OpenTelemetry is imported;
- with the SDK and its in-memory exporter: the producer's ``send``/``create`` span, its
  context in the message's properties, ``settle`` spans for commit, rollback and
  check-back, and one ``process`` span per delivery attempt, a child of the producer's span,
  failed attempts marked as errors.

The cross-process test (web request -> worker) is payments/tests/test_tracing_flow.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from txbroker.models import Message
from txbroker.tests.helpers import send
from txbroker.tests.processes import child_env, project_dir
from txbroker.tests.spans import require_opentelemetry
from txbroker.tests.support.checkers import PRODUCER_GROUP
from txbroker.tests.support.consumers import TOPIC
from txbroker.tests.tracing_run import EXPLICIT

pytestmark = [pytest.mark.django_db(transaction=True)]


def run(mode: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "txbroker.tests.tracing_run", mode],
        cwd=project_dir(),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_opentelemetry_nothing_changes_and_nothing_is_imported(broker_env):
    report = run("blocked")
    assert report["enabled"] is False
    assert report["opentelemetry_modules"] == []
    assert report["importable"] is False  # the blocker held to the end
    assert report["states"] == {
        "fail": "COMMITTED",
        "check": "COMMITTED",
        "rollback": "ROLLED_BACK",
        "plain": "COMMITTED",
        "operator": "ROLLED_BACK",
        "explicit": "COMMITTED",
    }
    assert report["properties"] == {
        "fail": {},
        "check": {},
        "rollback": {},
        "plain": {},
        "operator": {},
        "explicit": {"traceparent": EXPLICIT},
    }
    assert report["deliveries"] > 0


def test_spans_follow_the_messaging_conventions(broker_env):
    require_opentelemetry()
    report = run("memory")
    assert report["enabled"] is True and report["importable"] is True
    spans, sent = report["spans"], report["sent"]

    def about(name: str) -> list[dict]:
        msg_id = sent[name]
        return [s for s in spans if s["attributes"].get("messaging.message.id") == msg_id]

    def producer_span(name: str) -> dict:
        (span,) = [s for s in about(name) if s["kind"] == "PRODUCER"]
        return span

    # The producer's spans; the message carries their context.
    producers = [
        ("fail", "send"),
        ("check", "send"),
        ("rollback", "send"),
        ("operator", "send"),
        ("plain", "create"),
    ]
    for name, operation in producers:
        span = producer_span(name)
        assert span["name"] == f"{operation} {TOPIC}"
        assert span["attributes"]["messaging.operation.type"] == operation
        assert span["attributes"]["messaging.system"] == "txbroker"
        assert span["attributes"]["messaging.destination.name"] == TOPIC
        assert span["attributes"]["messaging.rocketmq.message.keys"] == [f"t-{name}"]
        traceparent = report["properties"][name]["traceparent"]
        assert traceparent.split("-")[1:3] == [span["trace_id"], span["span_id"]]
    assert producer_span("fail")["attributes"]["messaging.rocketmq.client_group"] == PRODUCER_GROUP
    assert producer_span("fail")["attributes"]["messaging.rocketmq.message.type"] == "transaction"
    assert producer_span("plain")["attributes"]["messaging.rocketmq.message.type"] == "normal"
    assert producer_span("check")["attributes"]["txbroker.outcome"] == "HALF"

    # Settlement: the producer's commit and rollback under its send span.
    for name, operation in [("fail", "commit"), ("rollback", "rollback")]:
        send = producer_span(name)
        (settle,) = [s for s in about(name) if s["name"] == f"{operation} {TOPIC}"]
        assert settle["kind"] == "CLIENT" and settle["parent_id"] == send["span_id"]
        assert settle["attributes"]["messaging.operation.type"] == "settle"
        assert settle["attributes"]["messaging.operation.name"] == operation
        assert settle["attributes"]["txbroker.settled_by"] == "producer"
    assert not [s for s in about("rollback") if s["kind"] == "CONSUMER"]
    # An operator's rollback outside any span: under the producer's span, linked to it.
    send = producer_span("operator")
    (settle,) = [s for s in about("operator") if s["name"] == f"rollback {TOPIC}"]
    assert settle["trace_id"] == send["trace_id"] and settle["parent_id"] == send["span_id"]
    assert settle["links"] == [{"trace_id": send["trace_id"], "span_id": send["span_id"]}]
    assert settle["attributes"]["txbroker.settled_by"] == "operator"

    # Check-back: a check span continuing the producer's trace, the commit under it.
    send = producer_span("check")
    (check,) = [s for s in about("check") if s["name"] == f"check {TOPIC}"]
    assert check["trace_id"] == send["trace_id"] and check["parent_id"] == send["span_id"]
    assert check["links"] == [{"trace_id": send["trace_id"], "span_id": send["span_id"]}]
    assert check["attributes"]["messaging.operation.type"] == "settle"
    assert check["attributes"]["txbroker.outcome"] == "COMMITTED"
    (commit,) = [s for s in about("check") if s["name"] == f"commit {TOPIC}"]
    assert commit["parent_id"] == check["span_id"]
    assert commit["attributes"]["txbroker.settled_by"] == "check-back"

    # Delivery: a process span per attempt, a child of the producer's span; the first
    # attempts of t-fail failed (errors, retried), the second ones succeeded.
    send = producer_span("fail")
    processes = [s for s in about("fail") if s["kind"] == "CONSUMER"]
    groups = {s["attributes"]["messaging.consumer.group.name"] for s in processes}
    assert groups == {"test_all_group", "test_pay_group", "test_refund_group"}
    for span in processes:
        assert span["name"] == f"process {TOPIC}"
        assert span["trace_id"] == send["trace_id"] and span["parent_id"] == send["span_id"]
        attributes = span["attributes"]
        assert attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.rocketmq.client_group"] == attributes["messaging.consumer.group.name"]
        assert attributes["messaging.rocketmq.message.tag"] == "pay"
        if attributes["txbroker.delivery.attempt"] == 1:
            assert span["status"] == "ERROR" and "exception" in span["events"]
            assert attributes["error.type"] == "RuntimeError"
            assert attributes["txbroker.outcome"] == "RETRY"
        else:
            assert span["status"] == "UNSET" and attributes["txbroker.outcome"] == "SUCCEEDED"
    attempts = sorted(s["attributes"]["txbroker.delivery.attempt"] for s in processes)
    assert attempts == [1, 1, 1, 2, 2, 2]

    # A plain message's deliveries continue its create span.
    create = producer_span("plain")
    plain = [s for s in about("plain") if s["kind"] == "CONSUMER"]
    assert plain and all(s["parent_id"] == create["span_id"] for s in plain)

    # A traceparent the producer set itself is kept, and its deliveries continue it.
    assert report["properties"]["explicit"] == {"traceparent": EXPLICIT}
    _, trace_id, span_id, _ = EXPLICIT.split("-")
    relayed = [s for s in about("explicit") if s["kind"] == "CONSUMER"]
    assert relayed and all(s["trace_id"] == trace_id and s["parent_id"] == span_id for s in relayed)


def test_installed_but_not_configured_stores_no_context(broker_env):
    """This test process has OpenTelemetry's API (when the extra is installed) and no SDK
    configured: the no-op tracer records nothing and the message carries no context."""
    msg_id = send("t-unconfigured").msg_id
    assert Message.objects.get(pk=msg_id).properties == {}
