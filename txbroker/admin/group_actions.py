"""The admin's pages for delayed and ordered messages: recall a delayed message, skip the
DEAD delivery that blocks a message group, and the list of blocked message groups. Each
action is behind a confirmation page and its model permission, and recorded in the trace
with the username (through ``operations``, as every other action)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from txbroker import operations, selectors
from txbroker.admin.base import RECALL_PERMISSION, REPLAY_PERMISSION, SKIP_PERMISSION, VIEW_PERMISSION, actor
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.models import Delivery

Status = Delivery.Status


class SkipForm(forms.Form):
    consumer_group = forms.ChoiceField(label="Consumer group", help_text="Whose DEAD delivery to skip.")

    def __init__(self, *args, groups: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["consumer_group"].choices = [(g, g) for g in groups]


class GroupActions:
    """MessageAdmin's recall and skip pages, and the blocked message groups page."""

    def has_recall_permission(self, request) -> bool:
        return request.user.has_perm(RECALL_PERMISSION)

    def has_skip_permission(self, request) -> bool:
        return request.user.has_perm(SKIP_PERMISSION)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("blocked-groups/", wrap(self.blocked_groups_view), name="txbroker_blocked_groups"),
            path("<path:object_id>/recall/", wrap(self.recall_view), name="txbroker_message_recall"),
            path("<path:object_id>/skip/", wrap(self.skip_view), name="txbroker_message_skip"),
            *super().get_urls(),
        ]

    def recall_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_recall_permission(request):
            raise PermissionDenied
        message = self._message(object_id)
        if request.method == "POST":
            try:
                result = operations.recall(message.pk, actor=actor(request))
            except (InvalidTransition, MessageNotFound) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                recalled = ", ".join(result.recalled) or "no consumer group"
                self.message_user(request, f"Recalled {message.pk} for {recalled}.", messages.SUCCESS)
                if result.not_recalled:
                    late = ", ".join(f"{g} ({s})" for g, s in result.not_recalled.items())
                    self.message_user(request, f"Too late to recall for: {late}.", messages.WARNING)
            return self._done(message.pk)
        due = f"due at {message.deliver_at:%Y-%m-%d %H:%M:%S %Z}" if message.deliver_at else "not delayed"
        return self._confirm(
            request,
            title="Recall delayed message",
            question=(
                f"Recall this delayed message ({due})? Its "
                "deliveries that have not started are never delivered. This is recorded in the trace "
                "with your name."
            ),
            objects=[message],
            confirm_label="Yes, recall",
            message=message,
            deliveries=list(message.deliveries.order_by("consumer_group")),
            cancel_url=reverse("admin:txbroker_message_change", args=[message.pk]),
        )

    def skip_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_skip_permission(request):
            raise PermissionDenied
        message = self._message(object_id)
        dead = list(message.deliveries.filter(status=Status.DEAD).order_by("consumer_group"))
        groups = [d.consumer_group for d in dead]
        initial = {"consumer_group": request.GET.get("consumer_group")}
        form = SkipForm(request.POST or None, groups=groups, initial=initial)
        if request.method == "POST" and form.is_valid():
            group = form.cleaned_data["consumer_group"]
            try:
                operations.skip(message.pk, group=group, actor=actor(request))
            except (InvalidTransition, MessageNotFound) as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request, f"Skipped the DEAD delivery of {message.pk} to {group}.", messages.SUCCESS
                )
            return self._done(message.pk)
        return self._confirm(
            request,
            title="Skip dead delivery",
            question=(
                "Skip this message's DEAD delivery to a consumer group? It is never run again, and the "
                "rest of its message group goes on without it. This is recorded in the trace with "
                "your name."
            ),
            objects=[message],
            form=form,
            confirm_label="Yes, skip",
            message=message,
            deliveries=dead,
            cancel_url=reverse("admin:txbroker_message_change", args=[message.pk]),
        )

    def blocked_groups_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Blocked message groups",
            "blocked": selectors.blocked_message_groups(consumer_group=request.GET.get("consumer_group")),
            "can_skip": self.has_skip_permission(request),
            "can_replay": request.user.has_perm(REPLAY_PERMISSION),
        }
        return TemplateResponse(request, "admin/txbroker/blocked_groups.html", context)
