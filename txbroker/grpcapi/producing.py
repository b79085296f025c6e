"""SendMessage (NORMAL, FIFO, DELAY, TRANSACTION) and EndTransaction.

A message keeps the id its client gave it (RocketMQ clients make their own: "01" + 32 hex
digits), so the id a client logs is the one the admin shows; a send retried after a lost
answer finds its message stored and is answered OK again. A message's producer group is its
topic, as RocketMQ 5's proxy has it: a transactional message is checked back through a live
producer of its topic (txbroker.grpcapi.checks).

Every state change goes through txbroker's producer and transitions: a plain message is
stored COMMITTED in one transaction with its deliveries, a transactional one HALF, and
EndTransaction moves it as a Django producer's answer does.
"""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime

from django.db import IntegrityError, transaction

from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.grpcapi import bodies, checks, clients
from txbroker.grpcapi.clients import STREAMS
from txbroker.grpcapi.models import GrpcClient
from txbroker.grpcapi.protocol import OK, Caller, Code, RpcError, caller, pb, spb, status, topic_of, unary
from txbroker.models import Message, MessageKey, TraceEvent
from txbroker.producer import new_message, store_half
from txbroker.trace import trace_many
from txbroker.transitions import message_commit, message_rollback, message_send_committed
from txbroker.types import OutgoingMessage

MessageType = pb.MessageType
_MESSAGE_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
# A delivery timestamp's seconds beyond this are milliseconds (the Python client's Message
# takes either): 10**11 seconds is the year 5138.
_MILLIS_ABOVE = 10**11


def identity(who: Caller) -> str:
    return f"gRPC client {who.client_id or '?'} at {who.address or '?'}"


def _body(message: pb.Message) -> bytes:
    limit = txsettings.GRPC_MAX_BODY_SIZE
    raw = message.body
    if message.system_properties.body_encoding == pb.Encoding.GZIP:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise RpcError(Code.MESSAGE_CORRUPTED, f"the gzip body does not inflate: {exc}") from None
    if not raw:
        raise RpcError(Code.MESSAGE_BODY_EMPTY, "the message body is empty")
    if len(raw) > limit:
        raise RpcError(Code.MESSAGE_BODY_TOO_LARGE, f"the message body exceeds {limit} bytes")
    return raw


def _message_type(sp: pb.SystemProperties) -> int:
    kind = sp.message_type
    if kind == MessageType.MESSAGE_TYPE_UNSPECIFIED:  # an older client: the type its fields say
        if sp.HasField("message_group"):
            return MessageType.FIFO
        return MessageType.DELAY if sp.HasField("delivery_timestamp") else MessageType.NORMAL
    if kind == MessageType.LITE:
        raise RpcError(Code.UNSUPPORTED, "lite topics are not supported by txbroker")
    if kind == MessageType.PRIORITY:
        raise RpcError(Code.UNSUPPORTED, "message priorities are not supported by txbroker")
    if kind not in (MessageType.NORMAL, MessageType.FIFO, MessageType.DELAY, MessageType.TRANSACTION):
        raise RpcError(Code.BAD_REQUEST, f"unknown message type {kind}")
    grouped, delayed = sp.HasField("message_group"), sp.HasField("delivery_timestamp")
    if kind == MessageType.FIFO and not grouped:
        raise RpcError(Code.ILLEGAL_MESSAGE_GROUP, "a FIFO message needs a message group")
    if kind == MessageType.DELAY and not delayed:
        raise RpcError(Code.ILLEGAL_DELIVERY_TIME, "a DELAY message needs a delivery timestamp")
    if (grouped and kind != MessageType.FIFO) or (delayed and kind != MessageType.DELAY):
        raise RpcError(
            Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
            f"a {MessageType.Name(kind)} message has {'a message group' if grouped else 'a delivery timestamp'}",
        )
    return kind


def _deliver_at(sp: pb.SystemProperties) -> datetime:
    stamp = sp.delivery_timestamp
    seconds = stamp.seconds / 1000 if stamp.seconds > _MILLIS_ABOVE else stamp.seconds + stamp.nanos / 1e9
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise RpcError(
            Code.ILLEGAL_DELIVERY_TIME, f"delivery timestamp {stamp.seconds} is out of range"
        ) from None


def parse(message: pb.Message) -> tuple[OutgoingMessage, str, int]:
    """The message to store, its id and type; RpcError for anything txbroker cannot keep."""
    topic = topic_of(message.topic)
    sp = message.system_properties
    if not _MESSAGE_ID.match(sp.message_id):
        raise RpcError(Code.ILLEGAL_MESSAGE_ID, f"illegal message id {sp.message_id[:80]!r}")
    kind = _message_type(sp)
    allowed = txsettings.GRPC_TOPIC_TYPES.get(topic)
    if allowed is not None and MessageType.Name(kind) not in allowed:
        raise RpcError(
            Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE,
            f"topic {topic} takes {' and '.join(sorted(allowed))} messages, not {MessageType.Name(kind)}",
        )
    tag = sp.tag if sp.HasField("tag") else ""
    if sp.HasField("tag") and (not tag.strip() or "|" in tag or "\x00" in tag or len(tag) > 255):
        raise RpcError(Code.ILLEGAL_MESSAGE_TAG, f"illegal tag {tag[:80]!r}")
    if any(not key.strip() or "\x00" in key or len(key) > 255 for key in sp.keys):
        raise RpcError(Code.ILLEGAL_MESSAGE_KEY, "a message key is blank or longer than 255 characters")
    group = sp.message_group if kind == MessageType.FIFO else ""
    if kind == MessageType.FIFO and (not group.strip() or "\x00" in group or len(group) > 255):
        raise RpcError(Code.ILLEGAL_MESSAGE_GROUP, f"illegal message group {group[:80]!r}")
    properties = dict(message.user_properties)
    for key, value in properties.items():
        # PostgreSQL holds no NUL character in text or JSON.
        if not key or key.startswith(bodies.RESERVED_PREFIX) or "\x00" in key + value:
            raise RpcError(Code.ILLEGAL_MESSAGE_PROPERTY_KEY, f"illegal property key {key[:80]!r}")
    body, body_kind = bodies.from_bytes(_body(message))
    properties[bodies.BODY_PROPERTY] = body_kind
    immunity = None
    if kind == MessageType.TRANSACTION and sp.HasField("orphaned_transaction_recovery_duration"):
        duration = sp.orphaned_transaction_recovery_duration
        immunity = max(0.0, duration.seconds + duration.nanos / 1e9)
    outgoing = OutgoingMessage(
        topic=topic,
        body=body,
        tag=tag,
        keys=tuple(sp.keys),
        properties=properties,
        check_immunity_seconds=immunity,
        message_group=group,
        deliver_at=_deliver_at(sp) if kind == MessageType.DELAY else None,
    )
    return outgoing, sp.message_id, kind


class ProducerRPCs:
    @unary(spb.SendMessageResponse)
    def SendMessage(self, request, context):
        who = caller(context)
        if not request.messages:
            raise RpcError(Code.BAD_REQUEST, "no message to send")
        entries = [self._send_one(who, message) for message in request.messages]
        if len(entries) == 1:
            top = entries[0].status
        elif all(entry.status.code == Code.OK for entry in entries):
            top = OK
        else:
            top = status(Code.MULTIPLE_RESULTS)
        return spb.SendMessageResponse(status=top, entries=entries)

    def _send_one(self, who: Caller, message: pb.Message) -> spb.SendResultEntry:
        try:
            outgoing, msg_id, kind = parse(message)
        except RpcError as exc:
            return spb.SendResultEntry(status=exc.status)
        transactional = kind == MessageType.TRANSACTION
        group = outgoing.topic
        try:
            if transactional:
                store_half(outgoing, group, identity(who), msg_id=msg_id)
                self._producer_seen(who, group)
            else:
                with transaction.atomic(using=broker_db()):
                    stored = new_message(outgoing, group, Message.State.COMMITTED, msg_id=msg_id)
                    keys = [MessageKey(message_id=msg_id, key=key) for key in dict.fromkeys(outgoing.keys)]
                    message_send_committed(stored, keys, producer_group=group, identity=identity(who))
        except IntegrityError:
            # The id is taken: a retry of a send that was stored (its answer was lost) is
            # answered again; any other message with that id is refused.
            if not Message.objects.using(broker_db()).filter(pk=msg_id, topic=outgoing.topic).exists():
                return spb.SendResultEntry(
                    status=status(Code.ILLEGAL_MESSAGE_ID, f"message id {msg_id} is taken")
                )
        return spb.SendResultEntry(
            status=OK, message_id=msg_id, transaction_id=msg_id if transactional else ""
        )

    @staticmethod
    def _producer_seen(who: Caller, group: str) -> None:
        """A transactional sender is a producer of its topic's group: check-backs may go to
        it over its stream here, if it has one."""
        if who.client_id:
            streaming = STREAMS.add_group(who.client_id, group) or STREAMS.held(who.client_id)
            clients.seen(who, [group], GrpcClient.Kind.PRODUCER, streaming=True if streaming else None)

    @unary(spb.EndTransactionResponse)
    def EndTransaction(self, request, context):
        who = caller(context)
        topic = topic_of(request.topic)
        msg_id = request.message_id
        if not request.transaction_id or request.transaction_id != msg_id or not _MESSAGE_ID.match(msg_id):
            raise RpcError(Code.INVALID_TRANSACTION_ID, f"no transaction {request.transaction_id[:80]!r}")
        message = Message.objects.using(broker_db()).filter(pk=msg_id, topic=topic).first()
        if message is None:
            raise RpcError(Code.INVALID_TRANSACTION_ID, f"no transactional message {msg_id} on topic {topic}")
        resolution = request.resolution
        if request.source == pb.TransactionSource.SOURCE_SERVER_CHECK and checks.answer(
            message, resolution, who
        ):
            return spb.EndTransactionResponse(status=OK)
        answer = pb.TransactionResolution.Name(resolution).replace(
            "TRANSACTION_RESOLUTION_UNSPECIFIED", "UNKNOWN"
        )
        source = "check-back" if request.source == pb.TransactionSource.SOURCE_SERVER_CHECK else "producer"
        event = TraceEvent(
            message_id=msg_id, event=TraceEvent.Event.LOCAL_TRANSACTION, detail=f"{answer} ({identity(who)})"
        )
        if resolution == pb.TransactionResolution.COMMIT:
            done, wanted = message_commit(message, by=source, prelude=[event]), Message.State.COMMITTED
        elif resolution == pb.TransactionResolution.ROLLBACK:
            done, wanted = message_rollback(message, by=source, prelude=[event]), Message.State.ROLLED_BACK
        else:
            trace_many([event])  # UNKNOWN: recorded; check-back settles it
            return spb.EndTransactionResponse(status=OK)
        if not done:
            state = Message.objects.using(broker_db()).values_list("state", flat=True).get(pk=msg_id)
            if state != wanted:  # settled otherwise already: refused, nothing changed
                raise RpcError(Code.PRECONDITION_FAILED, f"message {msg_id} is {state}: {answer} refused")
        return spb.EndTransactionResponse(status=OK)
