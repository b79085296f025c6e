"""What an operator does to messages from the admin, each behind a confirmation page and its
model permission: replay, resume checking, commit or roll back by hand (one message), and
the list's bulk replay and resume."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from txbroker import operations
from txbroker.admin.base import REPLAY_PERMISSION, RESOLVE_PERMISSION, RESUME_PERMISSION, actor
from txbroker.db import broker_db
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.ids import could_be_msg_id
from txbroker.models import Message


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


class MessageActions:
    """MessageAdmin's per-message action pages and bulk actions."""

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm(REPLAY_PERMISSION)

    def has_resume_permission(self, request) -> bool:
        return request.user.has_perm(RESUME_PERMISSION)

    def has_resolve_permission(self, request) -> bool:
        return request.user.has_perm(RESOLVE_PERMISSION)

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
                self.message_user(
                    request,
                    f"Replayed {n} {'delivery' if n == 1 else 'deliveries'} of {message.pk} {scope}.",
                    level,
                )
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
            self.message_user(
                request,
                f"Replayed {replayed} {'delivery' if replayed == 1 else 'deliveries'}.",
                messages.SUCCESS,
            )
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
