"""Deliveries in the admin: a message's, on its page, and the dead-letter queue of every
consumer group (what failed, why, and replay)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from txbroker import operations, selectors
from txbroker.admin.base import (
    REPLAY_PERMISSION,
    VIEW_PERMISSION,
    CheapCountPaginator,
    MessageViewerPages,
    ReadOnlyAdmin,
    actor,
)
from txbroker.admin.filters import DeadLetterGroupFilter
from txbroker.admin.html import STATUS_COLOR, badge, error_html, keys_html, short_id, when_html
from txbroker.db import broker_db
from txbroker.models import DeadLetter, Delivery, Message

Status = Delivery.Status


class DeliveryInline(ReadOnlyAdmin, admin.TabularInline):
    model = Delivery
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    fields = ["consumer_group", "status_badge", "attempts", "next_attempt", "succeeded", "error"]
    readonly_fields = fields
    ordering = ["consumer_group"]
    verbose_name_plural = "deliveries (one per subscribed consumer group)"

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_PERMISSION)

    @admin.display(description="status")
    def status_badge(self, obj: Delivery) -> str:
        return badge(obj.status, STATUS_COLOR.get(obj.status, "#555"))

    @admin.display(description="next attempt")
    def next_attempt(self, obj: Delivery) -> str:
        # A done delivery (SUCCEEDED, DEAD, SKIPPED, RECALLED) has no next attempt; a running
        # one is being attempted now.
        if obj.status in Delivery.FINAL:
            return "-"
        if obj.status == Status.RUNNING:
            return "running now"
        return when_html(obj.next_attempt_at)

    @admin.display(description="succeeded at")
    def succeeded(self, obj: Delivery) -> str:
        return when_html(obj.succeeded_at)

    @admin.display(description="last error")
    def error(self, obj: Delivery) -> str:
        return error_html(obj.last_error)


# --- dead letters ----------------------------------------------------------------------------
@admin.register(DeadLetter)
class DeadLetterAdmin(MessageViewerPages, ReadOnlyAdmin, admin.ModelAdmin):
    """The dead-letter queue of every consumer group: what failed, why, and replay."""

    list_display = ["message_link", "group", "topic", "keys", "attempts", "died_at", "error"]
    list_display_links = None
    list_filter = [DeadLetterGroupFilter]
    search_fields = ["message__msg_id"]
    search_help_text = "A message id (or its first digits), or a business key such as an order id."
    # Most recently dead first, always (Meta.ordering): no sortable column, whose header
    # markers would take room the columns need at 1,280 px.
    sortable_by = []
    list_per_page = 50
    show_full_result_count = False
    paginator = CheapCountPaginator
    actions = ["replay_selected"]
    change_list_template = "admin/txbroker/deadletter/change_list.html"

    class Media:
        css = {"all": ["txbroker/admin.css"]}
        js = ["txbroker/admin.js"]

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm(REPLAY_PERMISSION)

    def get_queryset(self, request):
        return (
            DeadLetter.objects.using(broker_db())
            .select_related("message")
            .defer("message__body", "message__properties")
            .order_by("-updated_at", "-id")
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        ids = Message.objects.using(broker_db()).filter(selectors.message_search_q(term)).values("pk")
        return queryset.filter(message_id__in=ids), False

    @admin.display(description="message")
    def message_link(self, obj: DeadLetter) -> str:
        url = reverse("admin:txbroker_message_change", args=[obj.message_id])
        return short_id(obj.message_id, href=url, css="txb-dead-msg-link")

    @admin.display(description="group")
    def group(self, obj: DeadLetter) -> str:
        return format_html(
            '<span class="txb-group-label" title="{}">{}</span>', obj.consumer_group, obj.consumer_group
        )

    @admin.display(description="topic:tag")
    def topic(self, obj: DeadLetter) -> str:
        tag = format_html('<span class="txb-tag">:{}</span>', obj.message.tag) if obj.message.tag else ""
        return format_html('<span class="txb-topic">{}{}</span>', obj.message.topic, tag)

    @admin.display(description="key")
    def keys(self, obj: DeadLetter) -> str:
        return keys_html(obj.message.keys or [])

    @admin.display(description="died")
    def died_at(self, obj: DeadLetter) -> str:
        return when_html(obj.updated_at)

    @admin.display(description="last error")
    def error(self, obj: DeadLetter) -> str:
        return error_html(obj.last_error)

    def changelist_view(self, request, extra_context=None):
        counts = selectors.dead_letter_counts()
        group = request.GET.get("consumer_group", "")
        extra = {
            "txb_dead_counts": counts,
            "txb_group": group,
            "txb_group_count": dict(counts).get(group, 0),
            "txb_can_replay": self.has_replay_permission(request),
            "txb_now_ts": f"{timezone.now().timestamp():.3f}",
            "txb_replay_all_url": reverse("admin:txbroker_deadletter_replay_all")
            + ("?" + urlencode({"consumer_group": group}) if group else ""),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def get_urls(self):
        return [
            path(
                "replay-all/",
                self.admin_site.admin_view(self.replay_all_view),
                name="txbroker_deadletter_replay_all",
            ),
            *super().get_urls(),
        ]

    def replay_all_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_replay_permission(request):
            raise PermissionDenied
        group = request.GET.get("consumer_group") or request.POST.get("consumer_group") or None
        back = reverse("admin:txbroker_deadletter_changelist") + (
            "?" + urlencode({"consumer_group": group}) if group else ""
        )
        if request.method == "POST":
            n = operations.replay_dead(group=group, actor=actor(request))
            scope = f" of {group}" if group else ""
            self.message_user(request, f"Replayed {n} dead letter(s){scope}.", messages.SUCCESS)
            return HttpResponseRedirect(back)
        total = operations.replay_dead(group=group, dry_run=True)
        return TemplateResponse(
            request,
            "admin/txbroker/confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Replay dead letters",
                "question": (
                    f"Replay all {total} dead letter(s){' of ' + group if group else ' of every consumer group'}? "
                    "Each becomes due now; this is recorded in each message's trace with your name."
                ),
                "objects": list(
                    self.get_queryset(request).filter(**({"consumer_group": group} if group else {}))[:20]
                ),
                "more": max(0, total - 20),
                "confirm_label": f"Yes, replay {total}",
                "hidden": {"consumer_group": group or ""},
                "cancel_url": back,
            },
        )

    @admin.action(description="Replay selected dead letters", permissions=["replay"])
    def replay_selected(self, request, queryset):
        if request.POST.get("confirm"):
            n = operations.replay_deliveries(
                queryset.values_list("pk", flat=True)[:10_000], actor=actor(request)
            )
            self.message_user(request, f"Replayed {n} dead letter(s).", messages.SUCCESS)
            return None
        selected = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
        return TemplateResponse(
            request,
            "admin/txbroker/confirm.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Replay dead letters",
                "question": "Make these dead letters due now? Recorded in each message's trace with your name.",
                "objects": list(queryset[:100]),
                "more": max(0, len(selected) - 100),
                "confirm_label": "Yes, replay them",
                "action": "replay_selected",
                "selected": selected,
                "select_across": request.POST.get("select_across", "0"),
                "cancel_url": request.get_full_path(),
            },
        )
