"""The message list and a message's page (its deliveries and its trace timeline)."""

from __future__ import annotations

import json
from collections import Counter

from django.contrib import admin
from django.db.models import Prefetch
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from txbroker import selectors
from txbroker.admin.base import CheapCountPaginator, ReadOnlyAdmin
from txbroker.admin.deliveries import DeliveryInline
from txbroker.admin.filters import (
    ConsumerGroupFilter,
    DeliveryStatusFilter,
    MessageGroupFilter,
    ProducerGroupFilter,
    TopicFilter,
)
from txbroker.admin.group_actions import GroupActions
from txbroker.admin.html import (
    STATE_COLOR,
    STATUS_COLOR,
    STATUS_SYMBOL,
    badge,
    keys_html,
    offset_text,
    short_id,
    when_html,
)
from txbroker.admin.message_actions import MessageActions
from txbroker.db import broker_db
from txbroker.ids import could_be_msg_id
from txbroker.models import Delivery, Message
from txbroker.trace import with_successes

State = Message.State
Status = Delivery.Status


@admin.register(Message)
class MessageAdmin(GroupActions, MessageActions, ReadOnlyAdmin, admin.ModelAdmin):
    # What an operator reads first, within 1,280 px with the navigation sidebar open: the
    # rest (producer group, check times, resolution time...) is on the message's page.
    list_display = [
        "msg_id_link",
        "state_badge",
        "age",
        "topic_tag",
        "keys_short",
        "delivery_summary",
    ]
    list_display_links = None
    list_filter = [
        "state",
        TopicFilter,
        ProducerGroupFilter,
        MessageGroupFilter,
        ConsumerGroupFilter,
        DeliveryStatusFilter,
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["msg_id"]  # shows the box; get_search_results does the work
    search_help_text = "A message id (or its first digits), or a business key such as an order id."
    # Newest first (Message.Meta.ordering); one sortable column keeps the headers narrow.
    sortable_by = ["age"]
    list_per_page = 50
    list_max_show_all = 200
    show_full_result_count = False
    paginator = CheapCountPaginator
    actions = ["replay_selected", "resume_selected"]
    inlines = [DeliveryInline]
    change_form_template = "admin/txbroker/message/change_form.html"
    change_list_template = "admin/txbroker/message/change_list.html"

    class Media:
        css = {"all": ["txbroker/admin.css"]}
        js = ["txbroker/admin.js"]

    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("msg_id", "state_badge"),
                    ("topic", "tag"),
                    ("keys_text", "producer_group"),
                    ("check_times", "next_check"),
                    ("created", "resolved"),
                    ("message_group", "deliver_time"),
                ]
            },
        ),
        ("Body", {"fields": ["body_pretty"]}),
        ("Properties", {"fields": ["properties_pretty"]}),
        ("Trace", {"fields": ["trace_timeline"]}),
    ]
    readonly_fields = [
        "msg_id",
        "state_badge",
        "topic",
        "tag",
        "keys_text",
        "producer_group",
        "check_times",
        "next_check",
        "created",
        "resolved",
        "message_group",
        "deliver_time",
        "body_pretty",
        "properties_pretty",
        "trace_timeline",
    ]

    # --- the list ---
    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .defer("body", "properties")
            .prefetch_related(
                Prefetch(
                    "deliveries",
                    queryset=Delivery.objects.using(broker_db())
                    .only("pk", "message_id", "consumer_group", "status")
                    .order_by("consumer_group"),
                )
            )
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(selectors.message_search_q(term)), False

    @admin.display(description="message id", ordering="msg_id")
    def msg_id_link(self, obj: Message) -> str:
        url = reverse("admin:txbroker_message_change", args=[obj.pk])
        return short_id(obj.pk, href=url, css="txb-msg-link")

    @admin.display(description="keys")
    def keys_text(self, obj: Message) -> str:
        return " ".join(obj.keys or []) or "-"

    @admin.display(description="key")
    def keys_short(self, obj: Message) -> str:
        return keys_html(obj.keys or [])

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Message) -> str:
        return badge(obj.state, STATE_COLOR.get(obj.state, "#555"))

    @admin.display(description="created", ordering="created_at")
    def age(self, obj: Message) -> str:
        return when_html(obj.created_at)

    @admin.display(description="topic:tag")
    def topic_tag(self, obj: Message) -> str:
        notes = []
        if obj.state == State.HALF or obj.check_times:
            notes.append(f"{obj.check_times} check(s)")
        if obj.message_group:
            notes.append(f"group {obj.message_group}")
        if obj.deliver_at:
            notes.append("delayed to " + timezone.localtime(obj.deliver_at).strftime("%H:%M:%S"))
        sub = format_html('<small class="txb-sub">{}</small>', " · ".join(notes)) if notes else ""
        tag = format_html('<span class="txb-tag">:{}</span>', obj.tag) if obj.tag else ""
        return format_html('<span class="txb-topic">{}{}</span>{}', obj.topic, tag, sub)

    @admin.display(description="deliveries")
    def delivery_summary(self, obj: Message) -> str:
        rows = list(obj.deliveries.all())  # prefetched for the whole page
        if not rows:
            return "-"
        counts = Counter(d.status for d in rows)
        order = [*Status]
        text = " · ".join(f"{counts[s]} {STATUS_SYMBOL[s]}" for s in order if counts[s])
        items = format_html_join(
            "",
            '<li title="{}: {}"><span class="txb-group-name">{}</span> '
            '<span class="txb-status" style="color:{}">{}</span></li>',
            (
                (
                    d.consumer_group,
                    d.status,
                    d.consumer_group,
                    STATUS_COLOR[d.status],
                    STATUS_SYMBOL[d.status],
                )
                for d in rows
            ),
        )
        color = STATUS_COLOR[Status.DEAD] if counts[Status.DEAD] else "inherit"
        return format_html(
            '<span class="txb-summary" style="color:{}">{}</span><ul class="txb-groups">{}</ul>',
            color,
            text,
            items,
        )

    # --- the page ---
    @admin.display(description="created at")
    def created(self, obj: Message) -> str:
        return when_html(obj.created_at)

    @admin.display(description="resolved at")
    def resolved(self, obj: Message) -> str:
        return when_html(obj.resolved_at)

    @admin.display(description="next check at")
    def next_check(self, obj: Message) -> str:
        return when_html(obj.next_check_at) if obj.state == State.HALF else "-"

    @admin.display(description="deliver at")
    def deliver_time(self, obj: Message) -> str:
        return when_html(obj.deliver_at)

    @admin.display(description="body")
    def body_pretty(self, obj: Message) -> str:
        return format_html(
            '<pre class="txb-json" style="margin:0;white-space:pre-wrap">{}</pre>',
            json.dumps(obj.body, indent=2, ensure_ascii=False, sort_keys=True),
        )

    @admin.display(description="properties")
    def properties_pretty(self, obj: Message) -> str:
        if not obj.properties:
            return "-"
        return format_html(
            '<pre class="txb-json" style="margin:0;white-space:pre-wrap">{}</pre>',
            json.dumps(obj.properties, indent=2, ensure_ascii=False, sort_keys=True),
        )

    @admin.display(description="timeline")
    def trace_timeline(self, obj: Message) -> str:
        events = with_successes(obj.pk)
        if not events:
            return "-"
        start = events[0].at
        rows = format_html_join(
            "",
            '<li class="txb-event txb-event-{}"><span class="txb-at" title="{}">+{}</span> '
            '<strong class="txb-event-name">{}</strong>{}{} <span class="txb-detail">{}</span></li>',
            (
                (
                    e.event.lower(),
                    e.at.isoformat(),
                    offset_text(e.at - start),
                    e.event,
                    format_html(' <span class="txb-group">[{}]</span>', e.consumer_group)
                    if e.consumer_group
                    else "",
                    format_html(' <span class="txb-actor">by {}</span>', e.actor) if e.actor else "",
                    e.detail if len(e.detail) < 600 else e.detail[:600] + "…",
                )
                for e in events
            ),
        )
        return format_html(
            '<ol class="txb-timeline" style="margin:0;padding-left:1.5em">{}</ol>'
            '<p class="help">Started {} ({} event(s)).</p>',
            rows,
            start.isoformat(timespec="seconds"),
            len(events),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not could_be_msg_id(object_id):
            raise Http404("no such message")
        message = (
            Message.objects.using(broker_db()).filter(pk=object_id).only("pk", "state", "deliver_at").first()
        )
        committed = bool(message and message.state == State.COMMITTED)
        extra = {
            "txb_can_replay": bool(
                message and message.state == State.COMMITTED and self.has_replay_permission(request)
            ),
            "txb_can_resume": bool(
                message and message.state == State.DISCARDED and self.has_resume_permission(request)
            ),
            "txb_can_resolve": bool(
                message and message.state == State.HALF and self.has_resolve_permission(request)
            ),
            "txb_can_recall": bool(
                committed and message.deliver_at is not None and self.has_recall_permission(request)
            ),
            "txb_can_skip": bool(
                committed
                and self.has_skip_permission(request)
                and message.deliveries.filter(status=Status.DEAD).exists()
            ),
            "txb_dead_letters_url": reverse("admin:txbroker_deadletter_changelist"),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def changelist_view(self, request, extra_context=None):
        extra = {
            "txb_dashboard_url": reverse("admin:txbroker_dashboard_changelist"),
            "txb_dead_letters_url": reverse("admin:txbroker_deadletter_changelist"),
            "txb_blocked_groups_url": reverse("admin:txbroker_blocked_groups"),
            "txb_now_ts": f"{timezone.now().timestamp():.3f}",
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})
