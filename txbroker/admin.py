"""The operator's admin: find a message (by id, key, topic, time, state, group), read what
happened to it, and make it go through. Every action goes through ``operations`` behind a
confirmation page and a model permission, and is recorded in the trace with the username.

Built for a message table of millions of rows: no full COUNT (:class:`CheapCountPaginator`),
no ``SELECT DISTINCT`` for filter choices (loose index scans), one prefetch for the
per-group delivery summary of a page, and searches that hit the primary key and key indexes.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from txbroker import charts, dbtime, operations, selectors
from txbroker.db import broker_db
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.ids import could_be_msg_id
from txbroker.models import Dashboard, DeadLetter, Delivery, Message, TraceEvent

State = Message.State
Status = Delivery.Status

REPLAY_PERMISSION = "txbroker.replay_message"
RESUME_PERMISSION = "txbroker.resume_message"
RESOLVE_PERMISSION = "txbroker.resolve_message"
VIEW_PERMISSION = "txbroker.view_message"

STATUS_SYMBOL = {
    Status.SUCCEEDED: "✓",
    Status.PENDING: "pending",
    Status.RUNNING: "running",
    Status.RETRY: "retry",
    Status.DEAD: "dead",
}
STATE_COLOR = {
    State.HALF: "#b8860b",
    State.COMMITTED: "#2e7d32",
    State.ROLLED_BACK: "#616161",
    State.DISCARDED: "#c62828",
}
STATUS_COLOR = {
    Status.SUCCEEDED: "#2e7d32",
    Status.PENDING: "#1565c0",
    Status.RUNNING: "#1565c0",
    Status.RETRY: "#ef6c00",
    Status.DEAD: "#c62828",
}


def actor(request: HttpRequest) -> str:
    return request.user.get_username()


def badge(text: str, color: str) -> str:
    return format_html(
        '<span class="txb-badge" style="background:{};color:#fff;padding:1px 6px;border-radius:8px;'
        'font-size:11px;white-space:nowrap">{}</span>',
        color,
        text,
    )


def error_html(text: str) -> str:
    """A traceback folded to its last line (the exception), unfolding to the whole of it."""
    if not text:
        return "-"
    last = text.strip().splitlines()[-1][:200]
    return format_html(
        '<details class="txb-error"><summary>{}</summary>'
        '<pre style="white-space:pre-wrap;max-width:900px">{}</pre></details>',
        last,
        text,
    )


# --- counting without counting --------------------------------------------------------------
class CheapCountPaginator(Paginator):
    """A paginator whose ``count`` never scans a large table.

    It counts at most ``CAP + 1`` rows (``SELECT COUNT(*) FROM (... LIMIT CAP + 1)``): below
    the cap that is the exact count, and cheap. Past it, the count is PostgreSQL's estimate:
    ``pg_class.reltuples`` for the whole table, or the planner's row estimate for a filtered
    list. Page links stay usable; the last page of an estimate may be short or empty.
    """

    CAP = 10_000

    def __init__(self, object_list, per_page, orphans=0, allow_empty_first_page=True, **kwargs):
        super().__init__(object_list, per_page, orphans=0, allow_empty_first_page=allow_empty_first_page)

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        exact = qs.order_by()[: self.CAP + 1].count()
        self.estimated = exact > self.CAP
        if not self.estimated:
            return exact
        if not qs.query.where:
            estimate = selectors.table_row_estimate(qs.model)
        else:
            estimate = selectors.query_row_estimate(qs.order_by())
        return max(exact, estimate or 0)


# --- filters ---------------------------------------------------------------------------------
class ValueListFilter(admin.SimpleListFilter):
    """Choices from an index (loose scan), never from ``SELECT DISTINCT`` over the table."""

    field = ""

    def values(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [(v, v) for v in self.values()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class TopicFilter(ValueListFilter):
    title = "topic"
    parameter_name = "topic"
    field = "topic"

    def values(self):
        return selectors.topics()


class ProducerGroupFilter(ValueListFilter):
    title = "producer group"
    parameter_name = "producer_group"
    field = "producer_group"

    def values(self):
        return selectors.producer_groups()


class ConsumerGroupFilter(admin.SimpleListFilter):
    """Messages with a delivery to this group (in the chosen delivery status, if one is)."""

    title = "consumer group"
    parameter_name = "consumer_group"

    def lookups(self, request, model_admin):
        return [(g, g) for g in selectors.consumer_groups()]

    def queryset(self, request, queryset):
        if self.value():
            status = request.GET.get(DeliveryStatusFilter.parameter_name) or None
            return queryset.filter(selectors.delivery_exists(consumer_group=self.value(), status=status))
        return queryset


class DeliveryStatusFilter(admin.SimpleListFilter):
    """Messages with a delivery in this status (to the chosen group, if one is)."""

    title = "delivery status"
    parameter_name = "delivery_status"

    def lookups(self, request, model_admin):
        return Status.choices

    def queryset(self, request, queryset):
        if self.value():
            group = request.GET.get(ConsumerGroupFilter.parameter_name) or None
            return queryset.filter(selectors.delivery_exists(consumer_group=group, status=self.value()))
        return queryset


class DeadLetterGroupFilter(admin.SimpleListFilter):
    title = "consumer group"
    parameter_name = "consumer_group"

    def lookups(self, request, model_admin):
        return [(g, f"{g} ({n})") for g, n in dead_letter_counts()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(consumer_group=self.value())
        return queryset


def dead_letter_counts() -> list[tuple[str, int]]:
    """(group, dead letters) for every group that has some: one grouped query on the partial
    index of open deliveries."""
    return list(
        Delivery.objects.using(broker_db())
        .dead()
        .order_by("consumer_group")
        .values_list("consumer_group")
        .annotate(n=Count("pk"))
        .values_list("consumer_group", "n")
    )


# --- forms -----------------------------------------------------------------------------------
class ReplayForm(forms.Form):
    consumer_group = forms.ChoiceField(
        label="Consumer group", required=False, help_text="Every group, or only one."
    )
    force = forms.BooleanField(
        label="Also replay deliveries that already SUCCEEDED (their handler runs again)", required=False
    )

    def __init__(self, *args, groups: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["consumer_group"].choices = [("", "all consumer groups"), *groups]


class ForceForm(forms.Form):
    force = forms.BooleanField(
        label="Also replay deliveries that already SUCCEEDED (their handler runs again)", required=False
    )


# --- inlines ---------------------------------------------------------------------------------
class ReadOnlyAdmin:
    """Broker rows change only through ``operations.py``: never added, edited or deleted here.

    A NUL in a filter or an object id cannot be in any row (PostgreSQL text holds none):
    a filter with one is a 400 and such an id a missing object, never a database error."""

    def changelist_view(self, request, extra_context=None):
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()):
            return HttpResponseBadRequest("A filter or search term contains a NUL character.")
        return super().changelist_view(request, extra_context)

    def get_object(self, request, object_id, from_field=None):
        if not could_be_msg_id(str(object_id)):
            return None
        return super().get_object(request, object_id, from_field)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MessageViewerPages:
    """Pages about messages (dead letters, dashboard): for whoever may view messages."""

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_PERMISSION) or super().has_view_permission(request, obj)

    def has_module_permission(self, request):
        return self.has_view_permission(request)


class DeliveryInline(ReadOnlyAdmin, admin.TabularInline):
    model = Delivery
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    fields = ["consumer_group", "status_badge", "attempts", "next_attempt_at", "succeeded_at", "error"]
    readonly_fields = fields
    ordering = ["consumer_group"]
    verbose_name_plural = "deliveries (one per subscribed consumer group)"

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_PERMISSION)

    @admin.display(description="status")
    def status_badge(self, obj: Delivery) -> str:
        return badge(obj.status, STATUS_COLOR.get(obj.status, "#555"))

    @admin.display(description="last error")
    def error(self, obj: Delivery) -> str:
        return error_html(obj.last_error)


# --- messages --------------------------------------------------------------------------------
@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = [
        "msg_id_link",
        "topic",
        "tag",
        "keys_text",
        "producer_group",
        "state_badge",
        "check_times",
        "created_at",
        "resolved_at",
        "delivery_summary",
    ]
    list_display_links = None
    list_filter = [
        "state",
        TopicFilter,
        ProducerGroupFilter,
        ConsumerGroupFilter,
        DeliveryStatusFilter,
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["msg_id"]  # shows the box; get_search_results does the work
    search_help_text = "A message id (or its first digits), or a business key such as an order id."
    sortable_by = ["msg_id_link", "created_at"]
    list_per_page = 50
    list_max_show_all = 200
    show_full_result_count = False
    paginator = CheapCountPaginator
    actions = ["replay_selected", "resume_selected"]
    inlines = [DeliveryInline]
    change_form_template = "admin/txbroker/message/change_form.html"
    change_list_template = "admin/txbroker/message/change_list.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("msg_id", "state_badge"),
                    ("topic", "tag"),
                    ("keys_text", "producer_group"),
                    ("check_times", "next_check_at"),
                    ("created_at", "resolved_at"),
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
        "next_check_at",
        "created_at",
        "resolved_at",
        "body_pretty",
        "properties_pretty",
        "trace_timeline",
    ]

    # --- permissions: read-only (ReadOnlyAdmin), actions by their own permission ---

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm(REPLAY_PERMISSION)

    def has_resume_permission(self, request) -> bool:
        return request.user.has_perm(RESUME_PERMISSION)

    def has_resolve_permission(self, request) -> bool:
        return request.user.has_perm(RESOLVE_PERMISSION)

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
        return format_html('<a href="{}" class="txb-msg-link"><code>{}</code></a>', url, obj.pk)

    @admin.display(description="keys")
    def keys_text(self, obj: Message) -> str:
        return " ".join(obj.keys or []) or "-"

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: Message) -> str:
        return badge(obj.state, STATE_COLOR.get(obj.state, "#555"))

    @admin.display(description="deliveries")
    def delivery_summary(self, obj: Message) -> str:
        rows = list(obj.deliveries.all())  # prefetched for the whole page
        if not rows:
            return "-"
        counts = Counter(d.status for d in rows)
        order = [Status.SUCCEEDED, Status.PENDING, Status.RUNNING, Status.RETRY, Status.DEAD]
        text = " · ".join(f"{counts[s]} {STATUS_SYMBOL[s]}" for s in order if counts[s])
        detail = "; ".join(f"{d.consumer_group}: {d.status}" for d in rows)
        color = STATUS_COLOR[Status.DEAD] if counts[Status.DEAD] else "inherit"
        return format_html('<span title="{}" style="color:{}">{}</span>', detail, color, text)

    # --- the page ---
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
        events = list(TraceEvent.objects.using(broker_db()).filter(message_id=obj.pk).order_by("id"))
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
                    _offset(e.at - start),
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
        message = Message.objects.using(broker_db()).filter(pk=object_id).only("pk", "state").first()
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
            "txb_dead_letters_url": reverse("admin:txbroker_deadletter_changelist"),
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def changelist_view(self, request, extra_context=None):
        extra = {
            "txb_dashboard_url": reverse("admin:txbroker_dashboard_changelist"),
            "txb_dead_letters_url": reverse("admin:txbroker_deadletter_changelist"),
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    # --- per-message actions, each behind a confirmation page ---
    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/replay/", wrap(self.replay_view), name="txbroker_message_replay"),
            path("<path:object_id>/resume/", wrap(self.resume_view), name="txbroker_message_resume"),
            path(
                "<path:object_id>/commit/",
                wrap(self.resolve_view),
                {"commit": True},
                name="txbroker_message_commit",
            ),
            path(
                "<path:object_id>/rollback/",
                wrap(self.resolve_view),
                {"commit": False},
                name="txbroker_message_rollback",
            ),
            *super().get_urls(),
        ]

    def _message(self, object_id: str) -> Message:
        if not could_be_msg_id(object_id):
            raise Http404("no such message")
        return get_object_or_404(Message.objects.using(broker_db()), pk=object_id)

    def _done(self, object_id: str) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:txbroker_message_change", args=[object_id]))

    def _confirm(
        self, request, *, title: str, question: str, objects, form=None, confirm_label: str, **extra
    ):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "question": question,
            "objects": objects,
            "form": form,
            "confirm_label": confirm_label,
            **extra,
        }
        return TemplateResponse(request, "admin/txbroker/confirm.html", context)

    def replay_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_replay_permission(request):
            raise PermissionDenied
        message = self._message(object_id)
        deliveries = list(message.deliveries.order_by("consumer_group"))
        groups = [
            (d.consumer_group, f"{d.consumer_group} ({d.status}, {d.attempts} attempts)") for d in deliveries
        ]
        form = ReplayForm(request.POST or None, groups=groups)
        if request.method == "POST" and form.is_valid():
            group = form.cleaned_data["consumer_group"] or None
            try:
                n = operations.replay(
                    message.pk, group=group, force=form.cleaned_data["force"], actor=actor(request)
                )
            except (InvalidTransition, MessageNotFound) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                level = messages.SUCCESS if n else messages.WARNING
                scope = f"to {group}" if group else "to all consumer groups"
                self.message_user(request, f"Replayed {n} deliver(ies) of {message.pk} {scope}.", level)
            return self._done(message.pk)
        return self._confirm(
            request,
            title="Replay message",
            question=(
                "Make this message's DEAD and waiting deliveries due now? A worker picks them up "
                "at once; the attempt count is kept. This is recorded in the trace with your name."
            ),
            objects=[message],
            form=form,
            confirm_label="Yes, replay",
            message=message,
            deliveries=deliveries,
            cancel_url=reverse("admin:txbroker_message_change", args=[message.pk]),
        )

    def resume_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_resume_permission(request):
            raise PermissionDenied
        message = self._message(object_id)
        if request.method == "POST":
            try:
                operations.resume(message.pk, actor=actor(request))
            except (InvalidTransition, MessageNotFound) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Checking of {message.pk} resumed: it is HALF again, due for a check now.",
                    messages.SUCCESS,
                )
            return self._done(message.pk)
        return self._confirm(
            request,
            title="Resume checking",
            question=(
                "Resume check-back of this DISCARDED message? It becomes HALF with a check count of 0 "
                "and its producer group's checker is asked again."
            ),
            objects=[message],
            confirm_label="Yes, resume checking",
            message=message,
            cancel_url=reverse("admin:txbroker_message_change", args=[message.pk]),
        )

    def resolve_view(self, request: HttpRequest, object_id: str, commit: bool) -> HttpResponse:
        if not self.has_resolve_permission(request):
            raise PermissionDenied
        message = self._message(object_id)
        verb = "commit" if commit else "roll back"
        if request.method == "POST":
            try:
                operations.resolve(message.pk, commit=commit, actor=actor(request))
            except (InvalidTransition, MessageNotFound) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                done = "committed: it will be delivered" if commit else "rolled back: no consumer will see it"
                self.message_user(request, f"Message {message.pk} {done}.", messages.SUCCESS)
            return self._done(message.pk)
        consequence = (
            "It becomes visible and is delivered to every subscribed consumer group."
            if commit
            else "It is dropped: no consumer group will ever see it."
        )
        return self._confirm(
            request,
            title=f"{verb.capitalize()} by hand",
            question=(
                f"{verb.capitalize()} this HALF message by hand, without asking its producer's checker? "
                f"{consequence} Be sure the local transaction {'did' if commit else 'did not'} happen."
            ),
            objects=[message],
            confirm_label=f"Yes, {verb}",
            message=message,
            cancel_url=reverse("admin:txbroker_message_change", args=[message.pk]),
        )

    # --- bulk actions on the list ---
    def _action_confirm(
        self, request, queryset, *, action: str, title: str, question: str, form=None, label: str
    ):
        return self._confirm(
            request,
            title=title,
            question=question,
            objects=list(queryset[:100]),
            more=max(0, len(request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)) - 100),
            form=form,
            confirm_label=label,
            action=action,
            selected=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            select_across=request.POST.get("select_across", "0"),
            cancel_url=request.get_full_path(),
        )

    @admin.action(
        description="Replay selected messages (DEAD and waiting deliveries)", permissions=["replay"]
    )
    def replay_selected(self, request, queryset):
        form = ForceForm(request.POST if request.POST.get("confirm") else None)
        if request.POST.get("confirm") and form.is_valid():
            replayed, refused = 0, []
            for msg_id in queryset.values_list("pk", flat=True)[:10_000]:
                try:
                    replayed += operations.replay(
                        msg_id, force=form.cleaned_data["force"], actor=actor(request)
                    )
                except (InvalidTransition, MessageNotFound):
                    refused.append(msg_id)
            self.message_user(request, f"Replayed {replayed} deliver(ies).", messages.SUCCESS)
            if refused:
                self.message_user(
                    request,
                    f"{len(refused)} message(s) were not COMMITTED and were left alone.",
                    messages.WARNING,
                )
            return None
        return self._action_confirm(
            request,
            queryset,
            action="replay_selected",
            title="Replay selected messages",
            question="Make the DEAD and waiting deliveries of these messages due now, for every group?",
            form=form,
            label="Yes, replay them",
        )

    @admin.action(description="Resume checking of selected DISCARDED messages", permissions=["resume"])
    def resume_selected(self, request, queryset):
        if request.POST.get("confirm"):
            resumed, refused = 0, 0
            for msg_id in queryset.values_list("pk", flat=True)[:10_000]:
                try:
                    operations.resume(msg_id, actor=actor(request))
                    resumed += 1
                except (InvalidTransition, MessageNotFound):
                    refused += 1
            self.message_user(request, f"Resumed checking of {resumed} message(s).", messages.SUCCESS)
            if refused:
                self.message_user(
                    request, f"{refused} were not DISCARDED and were left alone.", messages.WARNING
                )
            return None
        return self._action_confirm(
            request,
            queryset,
            action="resume_selected",
            title="Resume checking",
            question="Resume check-back of these DISCARDED messages (check count back to 0)?",
            label="Yes, resume checking",
        )


def _offset(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return charts.duration_text(seconds)


# --- dead letters ----------------------------------------------------------------------------
@admin.register(DeadLetter)
class DeadLetterAdmin(MessageViewerPages, ReadOnlyAdmin, admin.ModelAdmin):
    """The dead-letter queue of every consumer group: what failed, why, and replay."""

    list_display = ["message_link", "consumer_group", "topic", "keys", "attempts", "died_at", "error"]
    list_display_links = None
    list_filter = [DeadLetterGroupFilter]
    search_fields = ["message__msg_id"]
    search_help_text = "A message id (or its first digits), or a business key such as an order id."
    sortable_by = ["died_at"]
    list_per_page = 50
    show_full_result_count = False
    paginator = CheapCountPaginator
    actions = ["replay_selected"]
    change_list_template = "admin/txbroker/deadletter/change_list.html"

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
        return format_html('<a href="{}"><code>{}</code></a>', url, obj.message_id)

    @admin.display(description="topic")
    def topic(self, obj: DeadLetter) -> str:
        return f"{obj.message.topic}:{obj.message.tag}" if obj.message.tag else obj.message.topic

    @admin.display(description="keys")
    def keys(self, obj: DeadLetter) -> str:
        return " ".join(obj.message.keys or []) or "-"

    @admin.display(description="died", ordering="updated_at")
    def died_at(self, obj: DeadLetter):
        return obj.updated_at

    @admin.display(description="last error")
    def error(self, obj: DeadLetter) -> str:
        return error_html(obj.last_error)

    def changelist_view(self, request, extra_context=None):
        counts = dead_letter_counts()
        group = request.GET.get("consumer_group", "")
        extra = {
            "txb_dead_counts": counts,
            "txb_group": group,
            "txb_group_count": dict(counts).get(group, 0),
            "txb_can_replay": self.has_replay_permission(request),
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


# --- dashboard -------------------------------------------------------------------------------
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
    age_bars = [
        charts.Bar(
            g,
            c["oldest_pending_age_seconds"],
            charts.PALETTE["age"],
            text=charts.duration_text(c["oldest_pending_age_seconds"]) if c["lag"] else "-",
        )
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
