"""The broker API's views for delayed and ordered messages: the message groups a consumer
group is blocked on, recall of a delayed message, skip of a blocking DEAD delivery. Thin,
as the rest of the API (txbroker.api.views): permissions there, actions in
``operations``, reads in ``selectors``."""

from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from txbroker import operations, selectors
from txbroker.models import Delivery

from . import serializers as s
from .views import ACCESS_DEAD_LETTERS, DEAD_LETTER_READERS, INVALID, TAGS, BrokerView, access, actor


class BlockedGroupListView(BrokerView):
    any_permission = DEAD_LETTER_READERS
    serializer_class = s.BlockedGroupSerializer

    @extend_schema(
        tags=TAGS,
        summary="Message groups blocked behind a DEAD delivery, per consumer group (policy block)",
        description='Consumer groups with `on_dead_in_group="block"` wait, in each message group, '
        "behind its first DEAD delivery until an operator replays or skips it. Longest blocked first.",
        parameters=[s.BlockedGroupFilterSerializer],
        responses={200: s.BlockedGroupSerializer(many=True), 400: INVALID, **ACCESS_DEAD_LETTERS},
    )
    def get(self, request: Request) -> Response:
        filters = s.BlockedGroupFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        blocked = selectors.blocked_message_groups(
            consumer_group=filters.validated_data.get("consumer_group")
        )
        return Response(s.BlockedGroupSerializer([asdict(b) for b in blocked], many=True).data)


class RecallView(BrokerView):
    required_permission = "txbroker.recall_message"
    serializer_class = s.RecallResponseSerializer

    @extend_schema(
        tags=TAGS,
        summary="Recall a delayed message: its deliveries not yet started are never delivered",
        request=None,
        responses={
            202: s.RecallResponseSerializer,
            404: s.BrokerErrorSerializer,
            409: OpenApiResponse(
                s.RecallConflictSerializer,
                description="not a delayed COMMITTED message (only `detail`), or some deliveries "
                "already ran or run: the others were recalled, these are in `not_recalled`",
            ),
            **access("`txbroker.recall_message`"),
        },
    )
    def post(self, request: Request, msg_id: str) -> Response:
        result = operations.recall(msg_id, actor=actor(request))
        body = {"msg_id": msg_id, "recalled": result.recalled, "not_recalled": result.not_recalled}
        if result.not_recalled:
            groups = ", ".join(result.not_recalled)
            detail = f"could not recall the deliveries to {groups}: they already ran or run"
            return Response({"detail": detail, **body}, status=status.HTTP_409_CONFLICT)
        return Response(body, status=status.HTTP_202_ACCEPTED)


class SkipView(BrokerView):
    required_permission = "txbroker.skip_delivery"
    serializer_class = s.SkipRequestSerializer

    @extend_schema(
        tags=TAGS,
        summary="Skip a message's DEAD delivery to one consumer group: its message group goes on",
        request=s.SkipRequestSerializer,
        responses={
            202: s.SkipResponseSerializer,
            400: INVALID,
            404: s.BrokerErrorSerializer,
            409: OpenApiResponse(s.BrokerErrorSerializer, description="no such delivery, or it is not DEAD"),
            **access("`txbroker.skip_delivery`"),
        },
    )
    def post(self, request: Request, msg_id: str) -> Response:
        body = s.SkipRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        group = body.validated_data["consumer_group"]
        operations.skip(msg_id, group=group, actor=actor(request))
        answer = {"msg_id": msg_id, "consumer_group": group, "status": Delivery.Status.SKIPPED}
        return Response(answer, status=status.HTTP_202_ACCEPTED)
