from __future__ import annotations

from django.urls import path

from points.api import PointsMeApi, PointsRecordListApi

app_name = "points"

urlpatterns = [
    path("points/me/", PointsMeApi.as_view(), name="points-me"),
    path("points/me/records/", PointsRecordListApi.as_view(), name="points-records"),
]
