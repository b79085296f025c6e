from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from txbroker.metrics import healthz_view, metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("config.api_urls")),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", healthz_view, name="healthz"),
]

handler404 = "config.api.not_found"
