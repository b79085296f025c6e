"""The broker API's view of the RocketMQ clients that use txbroker over gRPC
(txbroker.grpcapi): who produces to or consumes which group, from where, and whether each is
live by the database's clock. Read-only, for whoever may read the stats."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.models import GrpcClient

from . import serializers as s
from .views import ACCESS_STATS, INVALID, STATS_READERS, TAGS, BrokerView

# The most clients one answer lists (a deployment has a few per service).
LIMIT = 1000


class GrpcClientListView(BrokerView):
    any_permission = STATS_READERS
    serializer_class = s.GrpcClientSerializer

    @extend_schema(
        tags=TAGS,
        summary="RocketMQ clients over gRPC: kind, group, address, liveness, the process holding each stream",
        description="A producer belongs to the producer group of each topic it publishes (its "
        f"transactional messages are checked back through it); at most {LIMIT} rows, by group.",
        parameters=[s.GrpcClientFilterSerializer],
        responses={200: s.GrpcClientSerializer(many=True), 400: INVALID, **ACCESS_STATS},
    )
    def get(self, request: Request) -> Response:
        filters = s.GrpcClientFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        rows = GrpcClient.objects.using(broker_db()).with_liveness(txsettings.GRPC_CLIENT_TIMEOUT)
        if filters.validated_data.get("group"):
            rows = rows.filter(group=filters.validated_data["group"])
        rows = rows.order_by("group", "client_id")[:LIMIT]
        return Response(s.GrpcClientSerializer(rows, many=True).data)
