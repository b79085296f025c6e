"""Every app's REST endpoints under /api/."""

from django.urls import include, path

urlpatterns = [
    path("", include("orders.urls")),
    path("", include("payments.urls")),
    path("", include("points.urls")),
    path("", include("notifications.urls")),
    path("txbroker/", include("txbroker.api.urls")),
]
