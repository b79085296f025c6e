"""The protocol's messages (the official Python client's generated modules) and the few
helpers every RPC uses: statuses, resources, who is calling."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

from django.db import close_old_connections
from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as spb  # noqa: F401 - re-exported
from rocketmq.grpc_protocol import service_pb2_grpc  # noqa: F401 - re-exported

logger = logging.getLogger("txbroker.grpc")

Code = pb.Code

# Topic and group names: what txbroker stores (at most 255 characters), printable, no
# spaces (RocketMQ itself is stricter: letters, digits, % | _ -).
_NAME = re.compile(r"^[!-~]{1,255}$")


def status(code: int = Code.OK, message: str = "") -> pb.Status:
    return pb.Status(code=code, message=message or Code.Name(code))


OK = status()


class RpcError(Exception):
    """Ends an RPC with a RocketMQ status (the response carries it; nothing was changed)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> pb.Status:
        return status(self.code, self.message)


def name_of(resource: pb.Resource, what: str, code: int) -> str:
    """The resource's name, or RpcError(code): namespaces are not supported."""
    if resource.resource_namespace:
        raise RpcError(
            Code.UNSUPPORTED,
            f"namespaces are not supported by txbroker (got {resource.resource_namespace!r})",
        )
    if not _NAME.match(resource.name):
        raise RpcError(code, f"illegal {what} name {resource.name[:300]!r}")
    return resource.name


def topic_of(resource: pb.Resource) -> str:
    return name_of(resource, "topic", Code.ILLEGAL_TOPIC)


def group_of(resource: pb.Resource) -> str:
    return name_of(resource, "consumer group", Code.ILLEGAL_CONSUMER_GROUP)


@dataclass(frozen=True)
class Caller:
    """Who made a request: the client's id (x-mq-client-id), its address, its language."""

    client_id: str
    address: str
    agent: str


def caller(context) -> Caller:
    metadata = dict(context.invocation_metadata() or ())
    agent = " ".join(
        part for part in (metadata.get("x-mq-language", ""), metadata.get("x-mq-client-version", "")) if part
    )
    return Caller(
        client_id=str(metadata.get("x-mq-client-id", ""))[:255],
        address=_peer_address(context.peer() or ""),
        agent=agent[:255],
    )


def _peer_address(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` -> ``127.0.0.1:5555``; ``ipv6:[::1]:5555`` -> ``[::1]:5555``."""
    scheme, _, rest = peer.partition(":")
    return (rest if scheme in {"ipv4", "ipv6", "unix"} else peer)[:255]


def require_client_id(who: Caller) -> str:
    if not who.client_id:
        raise RpcError(Code.CLIENT_ID_REQUIRED, "the x-mq-client-id header is required")
    return who.client_id


def unary(response: type):
    """Decorates a unary RPC: an RpcError becomes the response's status, any other error
    INTERNAL_SERVER_ERROR (logged); the thread's database connections are closed after it
    as the project's CONN_MAX_AGE says (a gRPC server has no request_finished signal)."""

    def decorate(method):
        @functools.wraps(method)
        def run(self, request, context):
            try:
                return method(self, request, context)
            except RpcError as exc:
                return response(status=exc.status)
            except Exception as exc:
                logger.exception("gRPC %s failed", method.__name__)
                return response(
                    status=status(Code.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}"[:500])
                )
            finally:
                close_old_connections()

        return run

    return decorate
