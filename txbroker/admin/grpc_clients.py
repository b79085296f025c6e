"""The RocketMQ clients that use txbroker over gRPC (txbroker.grpcapi): which client is a
producer or consumer of which group, from where, whether it is live (heard from within
TXBROKER_GRPC_CLIENT_TIMEOUT, by the database's clock) and which txbroker_grpc process holds
its telemetry stream (the one that checks its producer group's half messages back)."""

from __future__ import annotations

from django.contrib import admin

from txbroker.admin.base import MessageViewerPages, ReadOnlyAdmin
from txbroker.admin.html import when_html
from txbroker.conf import txsettings
from txbroker.models import GrpcClient


@admin.register(GrpcClient)
class GrpcClientAdmin(MessageViewerPages, ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["client_id", "kind", "group", "address", "agent", "live", "stream", "heard"]
    list_filter = ["kind"]
    search_fields = ["client_id", "group"]
    search_help_text = "A client id or a (producer or consumer) group."
    ordering = ["group", "client_id"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_liveness(txsettings.GRPC_CLIENT_TIMEOUT)

    @admin.display(description="live", boolean=True, ordering="last_heartbeat_at")
    def live(self, obj: GrpcClient) -> bool:
        return obj.is_live

    @admin.display(description="telemetry stream held by")
    def stream(self, obj: GrpcClient) -> str:
        return obj.stream_process if obj.is_streaming else "-"

    @admin.display(description="last heard", ordering="last_heartbeat_at")
    def heard(self, obj: GrpcClient) -> str:
        return when_html(obj.last_heartbeat_at)
