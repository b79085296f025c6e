"""Consumer groups subscribed over gRPC (RocketMQ 5 clients): what each consumes, its retry
policy and its last client. Their deliveries and dead letters are in the message pages
and the dead-letter queue like any other group's. A row changes when a client subscribes
(txbroker.remote_groups); an operator with the delete permission removes a group that is
gone for good: no delivery is created for it once every process has read the
subscriptions again (TXBROKER_GRPC_SUBSCRIPTION_REFRESH); those it has stay as they are."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from txbroker.admin.base import VIEW_PERMISSION
from txbroker.models import RemoteSubscription


@admin.register(RemoteSubscription)
class RemoteSubscriptionAdmin(admin.ModelAdmin):
    list_display = [
        "consumer_group",
        "topic",
        "tag_expression",
        "fifo",
        "max_attempts",
        "client_id",
        "updated_at",
        "dead_letters",
    ]
    list_filter = ["fifo"]
    search_fields = ["consumer_group", "topic"]
    readonly_fields = [f.name for f in RemoteSubscription._meta.fields]

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_PERMISSION)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="dead letters")
    def dead_letters(self, obj: RemoteSubscription) -> str:
        url = reverse("admin:txbroker_deadletter_changelist") + f"?consumer_group={obj.consumer_group}"
        return format_html('<a href="{}">dead letters of {}</a>', url, obj.consumer_group)
