"""The gRPC server: a bounded thread pool, the signature check on every call, TLS when
given a certificate and its key."""

from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc

from txbroker.conf import txsettings
from txbroker.grpcapi.auth import AuthInterceptor
from txbroker.grpcapi.protocol import service_pb2_grpc
from txbroker.grpcapi.service import MessagingServicer

logger = logging.getLogger("txbroker.grpc")

# Seconds the server lets calls in progress finish when it stops.
STOP_GRACE = 5.0


class ServerError(Exception):
    """The server cannot start as asked (a bad address, a missing key, a port in use)."""


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ServerError(f"{address!r} is not HOST:PORT")
    return host, int(port)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Running:
    server: grpc.Server
    port: int
    tls: bool


def start(bind: str, *, tls_cert: Optional[Path] = None, tls_key: Optional[Path] = None) -> Running:
    """Build and start the server on ``bind``; the port it got (``:0`` picks one)."""
    host, _ = split_address(bind)
    if bool(tls_cert) != bool(tls_key):
        raise ServerError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
    if not txsettings.GRPC_CREDENTIALS and not is_loopback(host):
        raise ServerError(
            f"refusing to bind {bind} without credentials: set TXBROKER_GRPC_CREDENTIALS "
            "(access_key:secret,...) or bind a loopback address"
        )
    credentials = None
    if tls_cert:
        try:
            pair = (Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())
        except OSError as exc:
            raise ServerError(f"cannot read the TLS certificate or key: {exc}") from None
        credentials = grpc.ssl_server_credentials([pair])
    workers = txsettings.GRPC_WORKERS
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="txbroker-grpc"),
        interceptors=[AuthInterceptor()],
        maximum_concurrent_rpcs=workers,
    )
    service_pb2_grpc.add_MessagingServiceServicer_to_server(MessagingServicer(bind), server)
    try:
        port = server.add_secure_port(bind, credentials) if credentials else server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise ServerError(f"cannot bind {bind}: {exc}") from None
    if not port:
        raise ServerError(f"cannot bind {bind}")
    server.start()
    return Running(server=server, port=port, tls=credentials is not None)


def serve_until(stop: threading.Event, running: Running) -> None:
    """Serve (and check remote producer groups back) until ``stop`` is set, then stop
    within STOP_GRACE seconds."""
    from txbroker.grpcapi.checks import CheckLoop

    checks = CheckLoop(stop)
    checks.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        stop.set()
        running.server.stop(STOP_GRACE).wait(STOP_GRACE + 1)
        checks.join(STOP_GRACE)
