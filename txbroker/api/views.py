"""The broker's operator REST API: thin views over ``selectors`` (reads) and
``operations`` (actions). Staff only, and each operation needs its model permission as the
admin does: reads a view permission (messages: ``txbroker.view_message``; dead letters: that
or ``txbroker.view_deadletter``; stats: that or ``txbroker.view_dashboard``), actions their
own (``replay_message``, ``resume_message``, ``resolve_message``; ``recall_message`` and
``skip_delivery`` in ``group_views``). Message bodies are shown
only to those who may view messages."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, NotFound, ParseError, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from txbroker import operations, selectors
from txbroker.db import broker_db
from txbroker.exceptions import InvalidTransition, MessageNotFound
from txbroker.ids import could_be_msg_id
from txbroker.models import Delivery, Message
from txbroker.trace import with_successes

from . import serializers as s

TAGS = ["txbroker"]

# Who may read what, as in the admin (``txbroker/admin/``): a model's view permission, or
# its change permission (which implies viewing); the dead-letter and dashboard pages also
# open to whoever may view messages.
MESSAGE_READERS = ("txbroker.view_message", "txbroker.change_message")
DEAD_LETTER_READERS = (*MESSAGE_READERS, "txbroker.view_deadletter", "txbroker.change_deadletter")
STATS_READERS = (*MESSAGE_READERS, "txbroker.view_dashboard", "txbroker.change_dashboard")


def may_view_messages(user) -> bool:
    """Whether ``user`` may read message bodies, properties and traces."""
    return any(user.has_perm(perm) for perm in MESSAGE_READERS)


def access(permission: str) -> dict[int, OpenApiResponse]:
    """Every operation: no credentials (401), not staff or without ``permission`` (403)."""
    return {
        401: OpenApiResponse(s.BrokerErrorSerializer, description="no or invalid credentials"),
        403: OpenApiResponse(s.BrokerErrorSerializer, description=f"not staff, or without {permission}"),
    }


ACCESS_MESSAGES = access("`txbroker.view_message`")
ACCESS_DEAD_LETTERS = access("`txbroker.view_message` or `txbroker.view_deadletter`")
ACCESS_STATS = access("`txbroker.view_message` or `txbroker.view_dashboard`")
INVALID = OpenApiResponse(OpenApiTypes.OBJECT, description="invalid input: each field with its messages")
BAD_CURSOR = OpenApiResponse(s.BrokerErrorSerializer, description="invalid cursor")


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "the message is not in a state that allows this"
    default_code = "conflict"


class JSONParser(parsers.JSONParser):
    """DRF's, but a body nested deeper than Python's json module can follow is a 400 like
    any other malformed JSON, not a RecursionError (a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


class HasModelPermission(BasePermission):
    """The view's ``required_permission``, and one of its ``any_permission`` when it names
    some (staff is checked separately)."""

    def has_permission(self, request, view) -> bool:
        perm = getattr(view, "required_permission", None)
        if perm is not None and not request.user.has_perm(perm):
            return False
        any_of = getattr(view, "any_permission", ())
        return not any_of or any(request.user.has_perm(p) for p in any_of)


class CursorPage(CursorPagination):
    """``{"results": [...], "next": url or null}``, by a cursor (no COUNT, no OFFSET)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = ("-created_at", "-msg_id")

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        # ASCII only: "²" is a digit to str.isdigit() but not to int().
        if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            raise ValidationError({self.page_size_query_param: ["a positive integer"]})
        return super().get_page_size(request)

    def paginate_queryset(self, queryset, request, view=None):
        self.model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        # DRF trusts the position a cursor carries and filters on it: a forged one that is not
        # a value of the first ordering field ("p=abc" for created_at) would fail in the query.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            field = self.model._meta.get_field(self.ordering[0].lstrip("-"))
            try:
                field.to_python(cursor.position)
            except DjangoValidationError:
                raise NotFound(self.invalid_cursor_message) from None
        return cursor

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "nullable": True, "format": "uri"},
            },
        }


class DeadLetterCursorPage(CursorPage):
    ordering = ("-id",)


def actor(request: Request) -> str:
    return request.user.get_username()


def deliveries_prefetch() -> Prefetch:
    return Prefetch("deliveries", queryset=Delivery.objects.using(broker_db()).order_by("consumer_group"))


class BrokerView(GenericAPIView):
    permission_classes = [IsAdminUser, HasModelPermission]
    # JSON bodies only: what the schema describes (a form's "0" is not a boolean).
    parser_classes = [JSONParser]
    required_permission: str | None = None
    any_permission: tuple[str, ...] = ()

    def handle_exception(self, exc):
        if isinstance(exc, MessageNotFound):
            exc = NotFound(str(exc))
        elif isinstance(exc, InvalidTransition):
            exc = Conflict(str(exc))
        return super().handle_exception(exc)


class MessageListView(BrokerView):
    any_permission = MESSAGE_READERS
    serializer_class = s.MessageSerializer
    pagination_class = CursorPage

    @extend_schema(
        tags=TAGS,
        summary="Find messages",
        parameters=[s.MessageFilterSerializer],
        responses={200: s.MessageSerializer(many=True), 400: INVALID, 404: BAD_CURSOR, **ACCESS_MESSAGES},
    )
    def get(self, request: Request) -> Response:
        # A plain dict: an empty parameter (?until=) is invalid, not "absent" as in a form.
        filters = s.MessageFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        qs = selectors.message_list(**filters.validated_data).prefetch_related(deliveries_prefetch())
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class MessageDetailView(BrokerView):
    any_permission = MESSAGE_READERS
    serializer_class = s.MessageDetailSerializer

    @extend_schema(
        tags=TAGS,
        summary="One message with its body, properties, deliveries and trace",
        responses={200: s.MessageDetailSerializer, 404: s.BrokerErrorSerializer, **ACCESS_MESSAGES},
    )
    def get(self, request: Request, msg_id: str) -> Response:
        if not could_be_msg_id(msg_id):
            raise MessageNotFound(f"no message with id {msg_id!r}")
        message = (
            Message.objects.using(broker_db())
            .prefetch_related(deliveries_prefetch())
            .filter(pk=msg_id)
            .first()
        )
        if message is None:
            raise MessageNotFound(f"no message with id {msg_id!r}")
        message.trace_lines = with_successes(msg_id)
        return Response(self.get_serializer(message).data)


class ReplayView(BrokerView):
    required_permission = "txbroker.replay_message"
    serializer_class = s.ReplayRequestSerializer

    @extend_schema(
        tags=TAGS,
        summary="Deliver a committed message again (DEAD and RETRY deliveries; SUCCEEDED with force)",
        request=s.ReplayRequestSerializer,
        responses={
            202: s.ReplayResponseSerializer,
            400: INVALID,
            404: s.BrokerErrorSerializer,
            409: OpenApiResponse(s.BrokerErrorSerializer, description="not COMMITTED, or no such group"),
            **access("`txbroker.replay_message`"),
        },
    )
    def post(self, request: Request, msg_id: str) -> Response:
        body = s.ReplayRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        replayed = operations.replay(
            msg_id,
            group=body.validated_data.get("consumer_group") or None,
            force=body.validated_data["force"],
            actor=actor(request),
        )
        return Response({"msg_id": msg_id, "replayed": replayed}, status=status.HTTP_202_ACCEPTED)


class ResumeView(BrokerView):
    required_permission = "txbroker.resume_message"
    serializer_class = s.StateResponseSerializer

    @extend_schema(
        tags=TAGS,
        summary="Resume checking a DISCARDED message (its check count starts again)",
        request=None,
        responses={
            202: s.StateResponseSerializer,
            404: s.BrokerErrorSerializer,
            409: OpenApiResponse(s.BrokerErrorSerializer, description="the message is not DISCARDED"),
            **access("`txbroker.resume_message`"),
        },
    )
    def post(self, request: Request, msg_id: str) -> Response:
        operations.resume(msg_id, actor=actor(request))
        return Response({"msg_id": msg_id, "state": Message.State.HALF}, status=status.HTTP_202_ACCEPTED)


class ResolveView(BrokerView):
    required_permission = "txbroker.resolve_message"
    serializer_class = s.StateResponseSerializer
    commit = True

    def post(self, request: Request, msg_id: str) -> Response:
        operations.resolve(msg_id, commit=self.commit, actor=actor(request))
        state = Message.State.COMMITTED if self.commit else Message.State.ROLLED_BACK
        return Response({"msg_id": msg_id, "state": state}, status=status.HTTP_202_ACCEPTED)


_resolve_responses = {
    202: s.StateResponseSerializer,
    404: s.BrokerErrorSerializer,
    409: OpenApiResponse(s.BrokerErrorSerializer, description="the message is not HALF"),
    **access("`txbroker.resolve_message`"),
}


class CommitView(ResolveView):
    commit = True

    @extend_schema(
        tags=TAGS, summary="Commit a HALF message by hand", request=None, responses=_resolve_responses
    )
    def post(self, request: Request, msg_id: str) -> Response:
        return super().post(request, msg_id)


class RollbackView(ResolveView):
    commit = False

    @extend_schema(
        tags=TAGS, summary="Roll back a HALF message by hand", request=None, responses=_resolve_responses
    )
    def post(self, request: Request, msg_id: str) -> Response:
        return super().post(request, msg_id)


class DeadLetterListView(BrokerView):
    any_permission = DEAD_LETTER_READERS
    serializer_class = s.DeadLetterSerializer
    pagination_class = DeadLetterCursorPage

    def get_serializer_context(self) -> dict:
        return {**super().get_serializer_context(), "show_body": may_view_messages(self.request.user)}

    @extend_schema(
        tags=TAGS,
        summary="Dead letters (DEAD deliveries) with their messages, newest first",
        description="Each message's body is null unless the caller may view messages "
        "(`txbroker.view_message`).",
        parameters=[s.DeadLetterFilterSerializer],
        responses={
            200: s.DeadLetterSerializer(many=True),
            400: INVALID,
            404: BAD_CURSOR,
            **ACCESS_DEAD_LETTERS,
        },
    )
    def get(self, request: Request) -> Response:
        filters = s.DeadLetterFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        qs = selectors.dead_letters(consumer_group=filters.validated_data.get("consumer_group"))
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class DeadLetterReplayView(BrokerView):
    required_permission = "txbroker.replay_message"
    serializer_class = s.DeadLetterReplayRequestSerializer

    @extend_schema(
        tags=TAGS,
        summary="Replay dead letters in bulk (of one group, dead since a time)",
        request=s.DeadLetterReplayRequestSerializer,
        responses={202: s.BulkReplayResponseSerializer, 400: INVALID, **access("`txbroker.replay_message`")},
    )
    def post(self, request: Request) -> Response:
        body = s.DeadLetterReplayRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        dry_run = body.validated_data["dry_run"]
        replayed = operations.replay_dead(
            group=body.validated_data.get("consumer_group") or None,
            since=body.validated_data.get("since"),
            dry_run=dry_run,
            actor=actor(request),
        )
        return Response({"replayed": replayed, "dry_run": dry_run}, status=status.HTTP_202_ACCEPTED)


class StatsView(BrokerView):
    any_permission = STATS_READERS
    serializer_class = s.StatsSerializer

    @extend_schema(
        tags=TAGS,
        summary="Messages per state; per consumer group deliveries per status, lag and oldest pending age",
        responses={200: s.StatsSerializer, **ACCESS_STATS},
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.stats())
