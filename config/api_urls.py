"""Every app's REST endpoints under /api/."""

from django.apps import apps
from django.urls import include, path

urlpatterns = [
    path("", include("orders.urls")),
    path("", include("payments.urls")),
    path("", include("points.urls")),
    path("", include("notifications.urls")),
    path("txbroker/", include("txbroker.api.urls")),
]

if apps.is_installed("harness"):
    # The chaos command's naive baseline (DJANGO_EXTRA_APPS=harness only).
    urlpatterns.append(path("naive/", include("harness.urls")))
