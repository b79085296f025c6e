"""Operators see the RocketMQ clients that use txbroker over gRPC: group, kind, address,
whether each is live by the database's clock, and who holds its telemetry stream."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.urls import reverse

from txbroker.models import GrpcClient
from txbroker.tests import operator_data

pytestmark = pytest.mark.django_db
plain_http = operator_data.plain_http


def test_the_admin_lists_grpc_clients_live_or_not(admin_client):
    GrpcClient.objects.create(
        client_id="live-client",
        group="grpc-orders",
        kind="PRODUCER",
        address="10.0.0.5:50123",
        agent="PYTHON 5.1.2",
        stream_process="host-a:42",
        stream_seen_at=Now(),
    )
    GrpcClient.objects.create(
        client_id="gone-client", group="billing", kind="SIMPLE_CONSUMER", stream_process="host-b:7"
    )
    GrpcClient.objects.filter(client_id="gone-client").update(last_heartbeat_at=Now() - timedelta(hours=1))

    html = admin_client.get(reverse("admin:txbroker_grpcclient_changelist")).content.decode()

    live_row = html[html.index("live-client") :].split("</tr>")[0]
    gone_row = html[html.index("gone-client") :].split("</tr>")[0]
    assert "10.0.0.5:50123" in live_row and "PYTHON 5.1.2" in live_row and "host-a:42" in live_row
    assert 'alt="True"' in live_row
    assert 'alt="False"' in gone_row and "host-b:7" not in gone_row


def test_search_by_group(admin_client):
    GrpcClient.objects.create(client_id="c-1", group="grpc-orders", kind="PRODUCER")
    GrpcClient.objects.create(client_id="c-2", group="billing", kind="PUSH_CONSUMER")
    html = admin_client.get(
        reverse("admin:txbroker_grpcclient_changelist"), {"q": "billing"}
    ).content.decode()
    assert "c-2" in html and "c-1" not in html


def test_the_api_lists_grpc_clients(admin_client):
    GrpcClient.objects.create(
        client_id="c-1",
        group="grpc-orders",
        kind="PRODUCER",
        address="10.0.0.5:1",
        agent="PYTHON 5.1.2",
        stream_process="host-a:42",
        stream_seen_at=Now(),
    )
    GrpcClient.objects.create(
        client_id="c-2", group="billing", kind="PUSH_CONSUMER", stream_process="host-b:7"
    )
    GrpcClient.objects.filter(client_id="c-2").update(last_heartbeat_at=Now() - timedelta(hours=1))

    rows = admin_client.get("/api/txbroker/grpc-clients/").json()
    assert [(r["group"], r["client_id"], r["live"], r["stream_process"]) for r in rows] == [
        ("billing", "c-2", False, ""),
        ("grpc-orders", "c-1", True, "host-a:42"),
    ]
    only = admin_client.get("/api/txbroker/grpc-clients/", {"group": "billing"}).json()
    assert [r["client_id"] for r in only] == ["c-2"]
    assert admin_client.get("/api/txbroker/grpc-clients/", {"group": "x\x00"}).status_code == 400


def test_metrics_count_grpc_clients_by_kind_and_liveness(client, broker_setting, monkeypatch):
    from txbroker import metrics
    from txbroker.tests.test_metrics import scrape, value

    broker_setting("TXBROKER_METRICS_CACHE_SECONDS", "0")
    monkeypatch.setattr(metrics, "_gauges", None)
    GrpcClient.objects.create(client_id="c-1", group="grpc-orders", kind="PRODUCER")
    GrpcClient.objects.create(client_id="c-1", group="grpc-billing", kind="PRODUCER")
    GrpcClient.objects.create(client_id="c-2", group="billing", kind="SIMPLE_CONSUMER")
    GrpcClient.objects.filter(client_id="c-2").update(last_heartbeat_at=Now() - timedelta(hours=1))

    samples = scrape(client)
    assert value(samples, "txbroker_grpc_clients", kind="PRODUCER", live="true") == 2
    assert value(samples, "txbroker_grpc_clients", kind="SIMPLE_CONSUMER", live="false") == 1
