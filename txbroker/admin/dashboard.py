"""The dashboard: pictures of the broker's state, drawn as SVG on the server (works offline)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from txbroker import charts, dbtime, selectors
from txbroker.admin import live
from txbroker.admin.base import MessageViewerPages, ReadOnlyAdmin
from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.models import Dashboard


@admin.register(Dashboard)
class DashboardAdmin(MessageViewerPages, ReadOnlyAdmin, admin.ModelAdmin):
    """Pictures of the broker's state, drawn as SVG on the server (works offline)."""

    def get_urls(self):
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name="txbroker_dashboard_changelist")
        ]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Transactional messages: dashboard",
            **dashboard_context(),
        }
        return TemplateResponse(request, "admin/txbroker/dashboard.html", context)


def dashboard_context(now=None) -> dict[str, Any]:
    now = now or dbtime.read(broker_db())
    data = selectors.stats(now=now)
    flow = selectors.throughput(now=now)
    groups = data["deliveries"]
    message_list = reverse("admin:txbroker_message_changelist")
    dead_list = reverse("admin:txbroker_deadletter_changelist")
    state_bars = [
        charts.Bar(
            label=state,
            value=n,
            color=charts.PALETTE[state],
            href=f"{message_list}?{urlencode({'state__exact': state})}",
        )
        for state, n in data["messages"].items()
    ]
    lag_bars = [charts.Bar(g, c["lag"], charts.PALETTE["lag"]) for g, c in groups.items()]
    # The bar says what the table says: the same seconds, in the same words.
    age_bars = [
        charts.Bar(
            g,
            c["oldest_pending_age_seconds"],
            charts.PALETTE["age"],
            text=charts.duration_text(c["oldest_pending_age_seconds"]),
        )
        for g, c in groups.items()
    ]
    group_rows = [
        {"name": g, "counts": c, "age_text": charts.duration_text(c["oldest_pending_age_seconds"])}
        for g, c in groups.items()
    ]
    dead_bars = [
        charts.Bar(
            g, c["DEAD"], charts.PALETTE["dead"], href=f"{dead_list}?{urlencode({'consumer_group': g})}"
        )
        for g, c in groups.items()
    ]
    minute_labels = [timezone.localtime(m).strftime("%H:%M") for m in flow.minutes]
    return {
        "stats": data,
        "group_rows": group_rows,
        "workers": live.live_workers(),
        "batches": live.running_batches(),
        "refresh_seconds": txsettings.DASHBOARD_REFRESH,
        "server_now_ts": f"{now.timestamp():.3f}",
        "stats_json": json.dumps(data, indent=2),
        "generated_at": now,
        "chart_states": charts.bar_chart(state_bars, title="Messages per state"),
        "chart_flow": charts.line_chart(
            minute_labels,
            {"committed": flow.committed, "consumed": flow.consumed, "failed": flow.failed},
            title="Per minute, last hour: committed, consumed, failed attempts",
        ),
        "chart_lag": charts.bar_chart(
            lag_bars, title="Backlog (lag) per consumer group", empty="no consumer group"
        ),
        "chart_age": charts.bar_chart(
            age_bars, title="Oldest pending delivery per group", empty="no consumer group"
        ),
        "chart_dead": charts.bar_chart(
            dead_bars, title="Dead letters per consumer group", empty="no consumer group"
        ),
        "totals": {
            "committed": sum(flow.committed),
            "consumed": sum(flow.consumed),
            "failed": sum(flow.failed),
        },
        "message_list_url": message_list,
        "dead_letters_url": dead_list,
    }
