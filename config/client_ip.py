"""A client's address, by one rule for every throttle and the login lockout.

With ``DJANGO_NUM_PROXIES=0`` (the default) the client is the socket's peer (REMOTE_ADDR):
an ``X-Forwarded-For`` header is the client's own word and changes nothing. With N trusted
proxies, each appends the address it received the request from, so the N-th entry from the
right is the one the first trusted proxy saw; whatever the client wrote to the left of it is
ignored. This is DRF's rule for ``NUM_PROXIES`` (which settings set to the same number), and
it is what axes uses too (``AXES_CLIENT_IP_CALLABLE``).
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client's address of ``request`` (a Django or DRF request)."""
    remote_addr = request.META.get("REMOTE_ADDR")
    proxies = settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not proxies or not forwarded:
        return remote_addr
    addresses = [part.strip() for part in forwarded.split(",")]
    candidate = addresses[-min(proxies, len(addresses))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        # Not an address: a misconfigured proxy chain. Count it against the nearest proxy
        # (one shared budget) rather than a string the client may vary at will.
        return remote_addr
