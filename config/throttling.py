"""The API's throttle: DRF's scoped throttle, failing open.

A throttle guards against abuse; it must not turn a cache outage into failed payments. When
the cache (Redis) cannot be reached the request is let through and the failure is logged.
"""

from __future__ import annotations

import logging

from rest_framework import throttling

logger = logging.getLogger("config.throttling")


class ScopedRateThrottle(throttling.ScopedRateThrottle):
    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:  # any cache failure: let the request through
            logger.warning("throttle cache unavailable; request allowed", exc_info=True)
            return True
