"""Points REST API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import UNAUTHORIZED, error
from points.models import PointsRecord
from points.selectors import points_balance, points_record_list


class PointsBalanceSerializer(serializers.Serializer):
    user_id = serializers.IntegerField()
    points = serializers.IntegerField()


class PointsRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = PointsRecord
        fields = ["order_id", "points", "reason", "created_at"]
        read_only_fields = fields


class PointsMeApi(APIView):
    @extend_schema(
        tags=["points"],
        summary="The caller's points",
        responses={200: PointsBalanceSerializer, 401: UNAUTHORIZED},
    )
    def get(self, request: Request) -> Response:
        return Response({"user_id": request.user.pk, "points": points_balance(user=request.user)})


class PointsRecordListApi(GenericAPIView):
    serializer_class = PointsRecordSerializer

    def get_queryset(self):
        return points_record_list(user=self.request.user)

    @extend_schema(
        tags=["points"],
        summary="The caller's points records, newest first",
        responses={200: PointsRecordSerializer(many=True), 401: UNAUTHORIZED, 404: error("No such page.")},
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(PointsRecordSerializer(page, many=True).data)
