"""A stored message as the protocol's Message (what a check-back carries, and what a
consumer receives): its body as the bytes that were sent (txbroker.grpcapi.bodies), with
the CRC32 digest the clients verify."""

from __future__ import annotations

import zlib

from txbroker.grpcapi import bodies
from txbroker.grpcapi.protocol import pb
from txbroker.models import Message


def message_type(message: Message) -> int:
    if message.state == Message.State.HALF:
        return pb.MessageType.TRANSACTION
    if message.message_group:
        return pb.MessageType.FIFO
    return pb.MessageType.DELAY if message.deliver_at is not None else pb.MessageType.NORMAL


def message_pb(message: Message, **system) -> pb.Message:
    """``system``: more system properties (receipt_handle, delivery_attempt, ...)."""
    body = bodies.to_bytes(message.body, message.properties)
    properties = {
        k: str(v) for k, v in message.properties.items() if not k.startswith(bodies.RESERVED_PREFIX)
    }
    sp = pb.SystemProperties(
        message_id=message.msg_id,
        keys=list(message.keys),
        body_digest=pb.Digest(type=pb.DigestType.CRC32, checksum=f"{zlib.crc32(body):08X}"),
        body_encoding=pb.Encoding.IDENTITY,
        message_type=message_type(message),
        born_host="",
        **system,
    )
    if message.tag:
        sp.tag = message.tag
    if message.message_group:
        sp.message_group = message.message_group
    if message.created_at is not None:
        sp.born_timestamp.FromDatetime(message.created_at)
    if message.deliver_at is not None:
        sp.delivery_timestamp.FromDatetime(message.deliver_at)
    return pb.Message(
        topic=pb.Resource(name=message.topic), user_properties=properties, system_properties=sp, body=body
    )
