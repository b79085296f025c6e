"""The consumer side of MessagingService: ReceiveMessage (long polling), AckMessage,
ChangeInvisibleDuration, ForwardMessageToDeadLetterQueue and QueryAssignment, and the
subscription a consumer's settings record (``subscription_settings``).

A consumer group that subscribes here is a consumer group of txbroker (see
txbroker.remote_groups); its deliveries move by txbroker.remote_deliveries. Receiving is a
claim whose invisible duration is the claim's timeout; the receipt handle names the
delivery and its claim token.

Long polling: a ReceiveMessage that finds nothing polls the database every
TXBROKER_GRPC_POLL_INTERVAL seconds until the client's long polling timeout, bounded by
TXBROKER_GRPC_MAX_LONG_POLLING and by the call's own deadline. Each poll first takes back
the group's expired invisibility (a failed attempt), then claims.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from datetime import UTC, datetime
from typing import Optional

from django.db import close_old_connections, transaction
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.exceptions import ConfigurationError
from txbroker.grpcapi import bodies
from txbroker.grpcapi.protocol import (
    OK,
    Caller,
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
from txbroker.models import RemoteSubscription
from txbroker.remote_deliveries import (
    Received,
    remote_ack,
    remote_change_invisible,
    remote_forward_dead,
    remote_receive,
    remote_reclaim_expired,
)
from txbroker.remote_deliveries import (
    who as actor_of,
)
from txbroker.remote_groups import subscription_for, subscription_record

# Seconds kept from the call's deadline to write the answer before it passes.
DEADLINE_MARGIN = 1.0

_log = logging.getLogger("txbroker.grpc")


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def _timestamp(moment: Optional[datetime]) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime((moment or datetime.now(UTC)).astimezone(UTC))
    return stamp


def _tag_expression(expression: pb.FilterExpression) -> str:
    if expression.type == pb.FilterType.SQL:
        raise RpcError(Code.UNSUPPORTED, "SQL92 filters are not supported by txbroker: use a TAG expression")
    return expression.expression or "*"


# --- subscriptions (the telemetry handshake) -----------------------------------------------
def _backoff_policy(subscription: RemoteSubscription) -> pb.RetryPolicy:
    delays = subscription.backoff or list(txsettings.GRPC_BACKOFF)
    # The clients read whole seconds (and wait at least one).
    steps = [Duration(seconds=max(1, round(float(d)))) for d in delays]
    return pb.RetryPolicy(
        max_attempts=subscription.max_attempts, customized_backoff=pb.CustomizedBackoff(next=steps)
    )


def subscription_settings(client: Caller, settings_pb: pb.Settings) -> tuple[pb.Subscription, pb.RetryPolicy]:
    """Record the subscription a consumer's settings carry (one row per topic); return
    the subscription and backoff policy its settings reply carries: the group's FIFO
    flag, the long polling timeout, and the retry policy txbroker applies to the group."""
    wanted = settings_pb.subscription
    group = group_of(wanted.group)
    recorded: list[RemoteSubscription] = []
    # All or nothing: one refused entry records none of them.
    with transaction.atomic(using=broker_db()):
        for entry in wanted.subscriptions:
            topic = topic_of(entry.topic)
            try:
                recorded.append(
                    subscription_record(
                        group=group,
                        topic=topic,
                        expression=_tag_expression(entry.expression),
                        client=actor_of(client.client_id, client.address),
                        fifo=wanted.fifo,
                    )
                )
            except ConfigurationError as exc:
                raise RpcError(Code.ILLEGAL_FILTER_EXPRESSION, str(exc)) from exc
    reply = pb.Subscription()
    reply.CopyFrom(wanted)
    reply.fifo = any(sub.fifo for sub in recorded) or group in txsettings.GRPC_FIFO_GROUPS
    longest = txsettings.GRPC_MAX_LONG_POLLING
    asked = _seconds(wanted.long_polling_timeout)
    reply.long_polling_timeout.CopyFrom(_duration(int(min(asked, longest) if asked else longest)))
    if recorded:
        return reply, _backoff_policy(recorded[0])
    default = RemoteSubscription(
        max_attempts=txsettings.GRPC_MAX_ATTEMPTS, backoff=list(txsettings.GRPC_BACKOFF)
    )
    return reply, _backoff_policy(default)


# --- received messages as the protocol carries them -----------------------------------------
def _message_type(received: Received) -> int:
    if received.message_group:
        return pb.MessageType.FIFO
    if received.deliver_at is not None:
        return pb.MessageType.DELAY
    return pb.MessageType.NORMAL


def to_protobuf(received: Received, invisible: float) -> pb.Message:
    """A claimed delivery as a ReceiveMessage answer's message (body as the producer sent
    it, or a Django producer's JSON body as UTF-8 JSON)."""
    properties = received.properties if isinstance(received.properties, dict) else {}
    body = bodies.to_bytes(received.body, properties)
    user = {str(k): str(v) for k, v in properties.items() if not str(k).startswith(bodies.RESERVED_PREFIX)}
    keys = received.keys if isinstance(received.keys, list) else []
    system = pb.SystemProperties(
        tag=received.tag,
        keys=[str(key) for key in keys],
        message_id=received.msg_id,
        body_digest=pb.Digest(
            type=pb.DigestType.CRC32, checksum=format(zlib.crc32(body) & 0xFFFFFFFF, "08X")
        ),
        body_encoding=pb.Encoding.IDENTITY,
        message_type=_message_type(received),
        born_timestamp=_timestamp(received.created_at),
        born_host=received.producer_group[:255],
        store_timestamp=_timestamp(received.resolved_at or received.created_at),
        receipt_handle=received.receipt_handle,
        queue_id=0,
        queue_offset=received.delivery_id,
        invisible_duration=_duration(invisible),
        delivery_attempt=received.attempt,
    )
    if received.deliver_at is not None:
        system.delivery_timestamp.CopyFrom(_timestamp(received.deliver_at))
    if received.message_group:
        system.message_group = received.message_group
    return pb.Message(
        topic=pb.Resource(name=received.topic), user_properties=user, system_properties=system, body=body
    )


# --- the RPCs ----------------------------------------------------------------------------------
class ConsumerRPCs:
    def ReceiveMessage(self, request, context):
        """Status first, then the messages, then the delivery timestamp (what the official
        clients read); MESSAGE_NOT_FOUND when the long polling ended with none."""
        try:
            received, invisible = self._receive(request, context)
        except RpcError as exc:
            yield spb.ReceiveMessageResponse(status=exc.status)
            return
        except Exception as exc:  # noqa: BLE001 - answered INTERNAL_SERVER_ERROR, logged
            _log.exception("gRPC ReceiveMessage failed")
            yield spb.ReceiveMessageResponse(
                status=status(Code.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}"[:500])
            )
            return
        finally:
            close_old_connections()
        if not received:
            yield spb.ReceiveMessageResponse(status=status(Code.MESSAGE_NOT_FOUND, "no new message"))
            return
        yield spb.ReceiveMessageResponse(status=OK)
        for one in received:
            yield spb.ReceiveMessageResponse(message=to_protobuf(one, invisible))
        yield spb.ReceiveMessageResponse(delivery_timestamp=_timestamp(None))

    def _receive(self, request, context) -> tuple[list[Received], float]:
        who = caller(context)
        require_client_id(who)
        group = group_of(request.group)
        topic = topic_of(request.message_queue.topic)
        expression = _tag_expression(request.filter_expression)
        if request.HasField("invisible_duration"):
            invisible = _seconds(request.invisible_duration)
        elif request.auto_renew:
            invisible = txsettings.GRPC_PUSH_INVISIBLE
        else:
            raise RpcError(Code.ILLEGAL_INVISIBLE_TIME, "the invisible duration is required")
        if not 0 < invisible <= txsettings.GRPC_MAX_INVISIBLE:
            raise RpcError(
                Code.ILLEGAL_INVISIBLE_TIME,
                f"invisible duration {invisible:g} s is not within (0, {txsettings.GRPC_MAX_INVISIBLE:g}] s",
            )
        batch = min(request.batch_size or 1, txsettings.GRPC_MAX_BATCH)
        if subscription_for(group, topic) is None:
            # A client that never sent its settings here (another server had its stream).
            try:
                subscription_record(group=group, topic=topic, expression=expression, client=who.client_id)
            except ConfigurationError as exc:
                raise RpcError(Code.ILLEGAL_FILTER_EXPRESSION, str(exc)) from exc
        wait = min(_seconds(request.long_polling_timeout), txsettings.GRPC_MAX_LONG_POLLING)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(remaining - DEADLINE_MARGIN, 0.0))
        deadline = time.monotonic() + wait
        pause = threading.Event()  # never set: a bounded wait between polls
        while True:
            remote_reclaim_expired(group=group)
            received = remote_receive(
                group=group,
                topic=topic,
                limit=batch,
                invisible=invisible,
                client=who.client_id,
                address=who.address,
            )
            if received or time.monotonic() >= deadline or not context.is_active():
                return received, invisible
            pause.wait(min(txsettings.GRPC_POLL_INTERVAL, max(deadline - time.monotonic(), 0.0)))

    @unary(spb.AckMessageResponse)
    def AckMessage(self, request, context):
        who = caller(context)
        require_client_id(who)
        group = group_of(request.group)
        topic_of(request.topic)
        entries = []
        for entry in request.entries:
            acked = remote_ack(
                group=group, handle=entry.receipt_handle, client=who.client_id, address=who.address
            )
            code = Code.OK if acked else Code.INVALID_RECEIPT_HANDLE
            text = "" if acked else "the receipt handle is stale (its claim expired or was taken) or unknown"
            entries.append(
                spb.AckMessageResultEntry(
                    message_id=entry.message_id,
                    receipt_handle=entry.receipt_handle,
                    status=status(code, text),
                )
            )
        failed = [e for e in entries if e.status.code != Code.OK]
        if not failed:
            overall = OK
        elif len(failed) == len(entries):
            overall = failed[0].status
        else:
            overall = status(Code.MULTIPLE_RESULTS, f"{len(failed)} of {len(entries)} entries failed")
        return spb.AckMessageResponse(status=overall, entries=entries)

    @unary(spb.ChangeInvisibleDurationResponse)
    def ChangeInvisibleDuration(self, request, context):
        who = caller(context)
        require_client_id(who)
        group = group_of(request.group)
        topic_of(request.topic)
        invisible = _seconds(request.invisible_duration)
        if not 0 < invisible <= txsettings.GRPC_MAX_INVISIBLE:
            raise RpcError(
                Code.ILLEGAL_INVISIBLE_TIME, f"invisible duration {invisible:g} s is out of bounds"
            )
        handle = remote_change_invisible(
            group=group,
            handle=request.receipt_handle,
            invisible=invisible,
            client=who.client_id,
            address=who.address,
        )
        if handle is None:
            raise RpcError(Code.INVALID_RECEIPT_HANDLE, "the receipt handle is stale or unknown")
        return spb.ChangeInvisibleDurationResponse(status=OK, receipt_handle=handle)

    @unary(spb.ForwardMessageToDeadLetterQueueResponse)
    def ForwardMessageToDeadLetterQueue(self, request, context):
        who = caller(context)
        require_client_id(who)
        group = group_of(request.group)
        topic_of(request.topic)
        reason = (
            f"forwarded to the dead letter queue by the client after attempt {request.delivery_attempt} "
            f"of {request.max_delivery_attempts}"
        )
        if not remote_forward_dead(
            group=group,
            handle=request.receipt_handle,
            client=who.client_id,
            address=who.address,
            reason=reason,
        ):
            raise RpcError(Code.INVALID_RECEIPT_HANDLE, "the receipt handle is stale or unknown")
        return spb.ForwardMessageToDeadLetterQueueResponse(status=OK)

    @unary(spb.QueryAssignmentResponse)
    def QueryAssignment(self, request, context):
        """A push consumer's queues: each queue of the topic (txbroker has one), on this
        server; every consumer of the group receives from it (claims do not overlap)."""
        from txbroker.grpcapi.session import message_queue

        topic = topic_of(request.topic)
        group_of(request.group)
        queue = message_queue(topic, self.advertised(request.endpoints))
        return spb.QueryAssignmentResponse(status=OK, assignments=[pb.Assignment(message_queue=queue)])
