"""The client's session: routes, heartbeats, termination, and the telemetry stream (the
settings handshake, and the stream this process keeps to send the client commands)."""

from __future__ import annotations

import ipaddress
import logging
import queue
import threading

from django.db import close_old_connections, connections

from txbroker.conf import txsettings
from txbroker.grpcapi import clients, consuming
from txbroker.grpcapi.clients import STREAMS, Stream
from txbroker.grpcapi.models import GrpcClient
from txbroker.grpcapi.protocol import (
    OK,
    Code,
    RpcError,
    caller,
    group_of,
    pb,
    require_client_id,
    spb,
    status,
    topic_of,
    unary,
)

logger = logging.getLogger("txbroker.grpc")

# Every topic takes every message type txbroker stores (RocketMQ 5 types a topic), unless
# TXBROKER_GRPC_TOPIC_TYPES restricts it.
ACCEPTED_TYPES = [
    pb.MessageType.NORMAL,
    pb.MessageType.FIFO,
    pb.MessageType.DELAY,
    pb.MessageType.TRANSACTION,
]
# The one queue of each topic (txbroker has no partitions: ordering is per message group).
QUEUE_ID = 0
BROKER_NAME = "txbroker"
CONSUMER_KINDS = {
    pb.ClientType.SIMPLE_CONSUMER: GrpcClient.Kind.SIMPLE_CONSUMER,
    pb.ClientType.PUSH_CONSUMER: GrpcClient.Kind.PUSH_CONSUMER,
}
# Seconds the stream's writer waits for a command before it looks whether the call ended.
WRITER_POLL = 1.0


def endpoints_of(address: str) -> pb.Endpoints:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        scheme = pb.AddressScheme.IPv6 if ipaddress.ip_address(host).version == 6 else pb.AddressScheme.IPv4
    except ValueError:
        scheme = pb.AddressScheme.DOMAIN_NAME
    return pb.Endpoints(scheme=scheme, addresses=[pb.Address(host=host, port=int(port))])


def message_queue(topic: str, endpoints: pb.Endpoints) -> pb.MessageQueue:
    return pb.MessageQueue(
        topic=pb.Resource(name=topic),
        id=QUEUE_ID,
        permission=pb.Permission.READ_WRITE,
        broker=pb.Broker(name=BROKER_NAME, id=0, endpoints=endpoints),
        accept_message_types=accepted_types(topic),
    )


def accepted_types(topic: str) -> list[int]:
    """The message types ``topic`` takes: all of ACCEPTED_TYPES, unless
    TXBROKER_GRPC_TOPIC_TYPES restricts it."""
    restricted = txsettings.GRPC_TOPIC_TYPES.get(topic)
    if restricted is None:
        return ACCEPTED_TYPES
    return [kind for kind in ACCEPTED_TYPES if pb.MessageType.Name(kind) in restricted]


class SessionRPCs:
    bind_address = "127.0.0.1:8081"

    def advertised(self, reached: pb.Endpoints) -> pb.Endpoints:
        """Where clients are sent: TXBROKER_GRPC_ADVERTISED_ADDRESS, else the address the
        client reached this server at, else the bind address."""
        if txsettings.GRPC_ADVERTISED_ADDRESS:
            return endpoints_of(txsettings.GRPC_ADVERTISED_ADDRESS)
        if reached.addresses:
            return reached
        return endpoints_of(self.bind_address)

    @unary(spb.QueryRouteResponse)
    def QueryRoute(self, request, context):
        # Topics exist on first use: any name txbroker can store is a topic.
        topic = topic_of(request.topic)
        return spb.QueryRouteResponse(
            status=OK, message_queues=[message_queue(topic, self.advertised(request.endpoints))]
        )

    @unary(spb.HeartbeatResponse)
    def Heartbeat(self, request, context):
        who = caller(context)
        require_client_id(who)
        kind = CONSUMER_KINDS.get(request.client_type)
        if kind is not None and request.HasField("group"):
            clients.seen(who, [group_of(request.group)], kind)
        else:
            clients.heartbeat(who)
        return spb.HeartbeatResponse(status=OK)

    @unary(spb.NotifyClientTerminationResponse)
    def NotifyClientTermination(self, request, context):
        who = caller(context)
        clients.forget(require_client_id(who))
        return spb.NotifyClientTerminationResponse(status=OK)

    def Telemetry(self, request_iterator, context):
        """Reads the client's commands on a thread of its own (settings, answers) and writes
        this server's commands (the settings reply, check-backs) as they are queued."""
        who = caller(context)
        if not who.client_id:
            yield spb.TelemetryCommand(status=status(Code.CLIENT_ID_REQUIRED, "x-mq-client-id is required"))
            return
        stream = Stream(who)
        reader = threading.Thread(
            target=self._read_telemetry,
            args=(request_iterator, stream),
            name=f"telemetry-{who.client_id}",
            daemon=True,
        )
        reader.start()
        try:
            while context.is_active() and not stream.closed.is_set():
                try:
                    command = stream.outbox.get(timeout=WRITER_POLL)
                except queue.Empty:
                    continue
                yield command
        finally:
            stream.closed.set()
            if STREAMS.detach(stream):
                try:
                    clients.stream_ended(who.client_id)
                finally:
                    close_old_connections()

    def _read_telemetry(self, request_iterator, stream: Stream) -> None:
        try:
            for command in request_iterator:
                if command.HasField("settings"):
                    stream.send(self._settings_reply(stream, command.settings))
                # Thread stack traces and message verification results are not asked for.
        except Exception as exc:  # the call ended (cancelled, the client went away)
            logger.debug("telemetry stream of %s ended: %s", stream.who.client_id, exc, exc_info=True)
        finally:
            stream.closed.set()
            connections.close_all()

    def _settings_reply(self, stream: Stream, settings: pb.Settings) -> spb.TelemetryCommand:
        try:
            reply = self._apply_settings(stream, settings)
        except RpcError as exc:
            return spb.TelemetryCommand(status=exc.status)
        except Exception as exc:
            logger.exception("settings of %s failed", stream.who.client_id)
            return spb.TelemetryCommand(status=status(Code.INTERNAL_SERVER_ERROR, str(exc)[:500]))
        finally:
            close_old_connections()
        return spb.TelemetryCommand(status=OK, settings=reply)

    def _apply_settings(self, stream: Stream, settings: pb.Settings) -> pb.Settings:
        """Register the client for its groups on this stream; the settings it is to use."""
        reply = pb.Settings()
        reply.CopyFrom(settings)
        which = settings.WhichOneof("pub_sub")
        if which == "publishing":
            # As RocketMQ 5's proxy: a producer belongs to the producer group of each topic
            # it publishes (a transactional message's group is its topic).
            groups = frozenset(topic_of(topic) for topic in settings.publishing.topics)
            stream.kind = GrpcClient.Kind.PRODUCER
            reply.publishing.max_body_size = txsettings.GRPC_MAX_BODY_SIZE
            reply.publishing.validate_message_type = True
        elif which == "subscription":
            kind = CONSUMER_KINDS.get(settings.client_type)
            if kind is None:
                raise RpcError(
                    Code.UNRECOGNIZED_CLIENT_TYPE,
                    f"client type {pb.ClientType.Name(settings.client_type)} is not supported",
                )
            groups = frozenset([group_of(settings.subscription.group)])
            stream.kind = kind
            subscription, backoff = consuming.subscription_settings(stream.who, settings)
            reply.subscription.CopyFrom(subscription)
            reply.backoff_policy.CopyFrom(backoff)
        else:
            raise RpcError(Code.BAD_REQUEST, "settings carry neither publishing nor subscription")
        stream.groups = stream.groups | groups
        STREAMS.attach(stream)
        clients.seen(stream.who, stream.groups, stream.kind, streaming=True)
        return reply
