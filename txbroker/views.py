"""txbroker's HTTP endpoints outside the API: ``/metrics`` (txbroker.metrics) and
``/healthz`` (txbroker.health).

Who may ask: ``/metrics`` answers loopback clients (a Prometheus on the same host) that did
not come through a proxy, or, when ``METRICS_BEARER_TOKEN`` is set, only requests bearing
it (from anywhere). ``/healthz`` tells the public only ``{"status": ...}`` (200 or 503);
which check failed is for staff, and never a host, port or connection string.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from txbroker import health, metrics

METRICS_FORBIDDEN = "/metrics answers local clients only (or set METRICS_BEARER_TOKEN)"
METRICS_UNAUTHORIZED = "/metrics needs the header Authorization: Bearer <METRICS_BEARER_TOKEN>"
# A request relayed by a reverse proxy on this host arrives from loopback too: these name it.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def metrics_refusal(request: HttpRequest) -> Optional[JsonResponse]:
    """None when ``request`` may read /metrics, else the answer: 401 without the bearer token
    when METRICS_BEARER_TOKEN is set, 403 for a client that is not local otherwise."""
    token = getattr(settings, "METRICS_BEARER_TOKEN", "")
    if token:
        scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and constant_time_compare(given.strip(), token):
            return None
        refused = JsonResponse({"detail": METRICS_UNAUTHORIZED}, status=401)
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    if _loopback(request.META.get("REMOTE_ADDR", "")) and not any(h in request.META for h in PROXY_HEADERS):
        return None
    return JsonResponse({"detail": METRICS_FORBIDDEN}, status=403)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for local scrapers or the bearer of METRICS_BEARER_TOKEN."""
    refused = metrics_refusal(request)
    if refused is not None:
        return refused
    from prometheus_client.exposition import CONTENT_TYPE_LATEST  # the `metrics` extra

    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)


# --- health ---------------------------------------------------------------------------------
def staff_caller(request: HttpRequest) -> bool:
    """Whether the caller is active staff, by session or by the API's authentication (a
    token); False whenever that cannot be told (the database that holds them is down)."""
    try:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            from rest_framework.request import Request
            from rest_framework.settings import api_settings

            authenticators = [auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
            user = Request(request, authenticators=authenticators).user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)
    except Exception:  # noqa: BLE001 - unknown callers are the public
        return False


@never_cache
@require_GET
def healthz_view(request: HttpRequest) -> JsonResponse:
    """200 when the database and the Celery broker answer, 503 otherwise: ``{"status"}``
    for anyone; staff also get each check's result (``"ok"`` or ``"error: <exception
    class>"``) and the failing ones. Error texts, which name hosts, ports, databases and
    roles, go to the log only."""
    checks, failing = health.run_checks()
    body: dict[str, Any] = {"status": "ok" if not failing else "unavailable"}
    if staff_caller(request):
        body["checks"] = checks
        if failing:
            body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
