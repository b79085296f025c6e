from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from txbroker.views import healthz_view, metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/txbroker/", include("txbroker.api.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz_view, name="healthz"),
]
