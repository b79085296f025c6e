"""The API's throttle: DRF's scoped throttle, counting per user or per client address
(``config.client_ip``: forwarded headers only through trusted proxies).

A throttle guards against abuse; for most endpoints it must not turn a cache outage into
failed payments: when the cache (Redis) cannot be reached the request is let through and the
failure is logged. Logins are the exception: a throttle that lets everything through would
let password guessing run unbounded, so the token endpoint refuses with 503 instead.
"""

from __future__ import annotations

import logging

from rest_framework import status, throttling
from rest_framework.exceptions import APIException

from config.client_ip import client_ip

logger = logging.getLogger("config.throttling")

# Scopes that refuse, rather than allow, a request their counter cannot be read for.
FAIL_CLOSED_SCOPES = frozenset({"auth_token"})
LIMITER_UNAVAILABLE = "Logins are paused: the rate limiter cannot be reached. Try again in a minute."
LIMITER_RETRY_AFTER = 60


class LimiterUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = LIMITER_UNAVAILABLE
    default_code = "limiter_unavailable"
    wait = LIMITER_RETRY_AFTER  # DRF's exception handler sends it as Retry-After


class ScopedRateThrottle(throttling.ScopedRateThrottle):
    def get_ident(self, request) -> str:
        return client_ip(request) or ""

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # any cache failure
            if getattr(view, self.scope_attr, None) in FAIL_CLOSED_SCOPES:
                logger.error("throttle cache unavailable; login refused", exc_info=True)
                raise LimiterUnavailable() from exc
            logger.warning("throttle cache unavailable; request allowed", exc_info=True)
            return True
