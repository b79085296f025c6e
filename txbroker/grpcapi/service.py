"""The MessagingService servicer: txbroker's answers to every RPC the official clients use."""

from __future__ import annotations

from txbroker.grpcapi.consuming import ConsumerRPCs
from txbroker.grpcapi.producing import ProducerRPCs
from txbroker.grpcapi.protocol import service_pb2_grpc
from txbroker.grpcapi.session import SessionRPCs


class MessagingServicer(SessionRPCs, ProducerRPCs, ConsumerRPCs, service_pb2_grpc.MessagingServiceServicer):
    """Session (routes, heartbeats, telemetry), producer and consumer RPCs. What no mixin
    answers (PullMessage, offsets, RecallMessage, lite subscriptions) is the generated base
    class's UNIMPLEMENTED."""

    def __init__(self, bind_address: str) -> None:
        self.bind_address = bind_address
