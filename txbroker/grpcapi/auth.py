"""The clients' signatures: every request carries an ``authorization`` header made the way
the official clients make it (RocketMQ 5's "MQv2-HMAC-SHA1"):

    authorization: MQv2-HMAC-SHA1 Credential=<access key>, SignedHeaders=x-mq-date-time, Signature=<hex>

where the signature is HMAC-SHA1, keyed with the secret, of the ``x-mq-date-time`` header
(``YYYYmmddTHHMMSSZ``). A request whose header is missing or wrong, whose access key is not
in TXBROKER_GRPC_CREDENTIALS, or whose date is more than TXBROKER_GRPC_MAX_CLOCK_SKEW
seconds away from this host's clock is answered with the RocketMQ status UNAUTHORIZED (as
RocketMQ's proxy answers; the clients raise it as an error) and changes nothing.

The date check compares the client's clock with this server host's: there is no other
clock both can read. The Python client (5.1.2) signs its *local* time labelled ``Z``, so a
client host whose time zone is not UTC is off by its UTC offset: run such clients with
TZ=UTC, or widen (or turn off, 0) TXBROKER_GRPC_MAX_CLOCK_SKEW. The signature covers the
date only (not the request), as RocketMQ's own scheme does: use TLS where the network is
not trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from calendar import timegm
from typing import Optional

import grpc

from txbroker.conf import txsettings
from txbroker.grpcapi.protocol import Code, spb, status

logger = logging.getLogger("txbroker.grpc")

ALGORITHM = "MQv2-HMAC-SHA1"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def sign(secret: str, date_time: str) -> str:
    return hmac.new(secret.encode(), date_time.encode(), hashlib.sha1).hexdigest()


def _fields(header: str) -> dict[str, str]:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        return {}
    fields = {}
    for part in rest.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def refusal(
    metadata, credentials: dict[str, str], max_skew: float, now: Optional[float] = None
) -> Optional[str]:
    """Why a request with these headers is refused, or None when its signature is good."""
    headers = {key.lower(): value for key, value in (metadata or ())}
    header = headers.get("authorization")
    if not header:
        return "no authorization header: this endpoint requires credentials"
    fields = _fields(str(header))
    access_key, signature = fields.get("Credential", ""), fields.get("Signature", "")
    if not access_key or not signature:
        return f"the authorization header is not {ALGORITHM} Credential=..., Signature=..."
    secret = credentials.get(access_key)
    date_time = str(headers.get("x-mq-date-time", ""))
    # Compared whatever happens, so that an unknown key takes as long as a wrong signature.
    expected = sign(secret or "\0", date_time)
    if not hmac.compare_digest(expected, signature.lower()) or secret is None:
        return f"wrong signature or unknown access key {access_key[:64]!r}"
    if max_skew:
        try:
            signed_at = timegm(time.strptime(date_time, DATE_FORMAT))
        except ValueError:
            return f"x-mq-date-time {date_time[:32]!r} is not {DATE_FORMAT}"
        skew = (time.time() if now is None else now) - signed_at
        if abs(skew) > max_skew:
            return (
                f"x-mq-date-time is {abs(skew):.0f}s off this server's clock (TXBROKER_GRPC_MAX_CLOCK_SKEW "
                f"{max_skew:g}s): check the client's clock and time zone (the Python client signs local time)"
            )
    return None


def _methods() -> dict[str, tuple[type, bool, bool]]:
    """Method path -> (response class, client streaming, server streaming)."""
    service = spb.DESCRIPTOR.services_by_name["MessagingService"]
    return {
        f"/{service.full_name}/{method.name}": (
            getattr(spb, method.output_type.name),
            method.client_streaming,
            method.server_streaming,
        )
        for method in service.methods
    }


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks every call's signature before it reaches the servicer (when credentials are
    configured); a refused call is answered with its response type's UNAUTHORIZED status."""

    def __init__(self) -> None:
        self.methods = _methods()

    def intercept_service(self, continuation, handler_call_details):
        credentials = txsettings.GRPC_CREDENTIALS
        if not credentials:
            return continuation(handler_call_details)
        reason = refusal(
            handler_call_details.invocation_metadata, credentials, txsettings.GRPC_MAX_CLOCK_SKEW
        )
        if reason is None:
            return continuation(handler_call_details)
        logger.warning("gRPC %s refused: %s", handler_call_details.method, reason)
        known = self.methods.get(handler_call_details.method)
        if known is None:
            return None  # gRPC answers UNIMPLEMENTED
        return _refusal_handler(*known, reason)


def _refusal_handler(response: type, client_streaming: bool, server_streaming: bool, reason: str):
    answer = response(status=status(Code.UNAUTHORIZED, reason))
    serialize = response.SerializeToString
    if client_streaming and server_streaming:
        return grpc.stream_stream_rpc_method_handler(
            lambda requests, context: iter([answer]), None, serialize
        )
    if client_streaming:
        return grpc.stream_unary_rpc_method_handler(lambda requests, context: answer, None, serialize)
    if server_streaming:
        return grpc.unary_stream_rpc_method_handler(lambda request, context: iter([answer]), None, serialize)
    return grpc.unary_unary_rpc_method_handler(lambda request, context: answer, None, serialize)
