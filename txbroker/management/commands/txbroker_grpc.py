from __future__ import annotations

import signal
import threading
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from txbroker.conf import txsettings


class Command(BaseCommand):
    help = (
        "Serve RocketMQ 5's gRPC protocol (apache.rocketmq.v2.MessagingService) for the official "
        "RocketMQ clients, until SIGTERM or SIGINT."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--bind", default="127.0.0.1:8081", help="HOST:PORT to listen on (default 127.0.0.1:8081)"
        )
        parser.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve TLS")
        parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")

    def handle(self, *args, bind, tls_cert, tls_key, **options):
        try:
            from txbroker.grpcapi import server
        except ImportError as exc:
            raise CommandError(
                f"the gRPC endpoint needs grpcio and rocketmq-python-client installed ({exc})"
            ) from None
        try:
            running = server.start(bind, tls_cert=tls_cert, tls_key=tls_key)
        except server.ServerError as exc:
            raise CommandError(str(exc)) from None
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        keys = len(txsettings.GRPC_CREDENTIALS)
        host, _ = server.split_address(bind)
        self.stdout.write(
            f"txbroker_grpc serving on {host}:{running.port} ({'TLS' if running.tls else 'plain TCP'}), "
            f"{txsettings.GRPC_WORKERS} workers, {keys or 'no'} access key{'s' if keys != 1 else ''}"
        )
        self.stdout.flush()
        server.serve_until(stop, running)
        self.stdout.write("txbroker_grpc stopped")
