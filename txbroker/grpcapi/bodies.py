"""Message bodies between RocketMQ's bytes and txbroker's JSON bodies, losslessly.

A gRPC producer sends bytes; ``Message.body`` is JSON. A body that is UTF-8 JSON text
exactly as ``json.dumps`` writes it (compact or with its default separators) is stored as
that JSON value, so Django consumers read a gRPC producer's JSON payload as they read any
other; every other body is stored as ``{"$bytes": "<base64>"}``. The property
``txbroker.body`` says which (``json``, ``json-spaced`` or ``bytes``), so that
:func:`to_bytes` gives a gRPC consumer back exactly the bytes that were sent. A Django
producer's message has no such property: a gRPC consumer receives its body as compact
JSON (UTF-8).
"""

from __future__ import annotations

import base64
import json
from typing import Any

BODY_PROPERTY = "txbroker.body"
BYTES_KEY = "$bytes"
# Property keys a client may not set: txbroker's own.
RESERVED_PREFIX = "txbroker."

_DUMPS = {
    "json": {"separators": (",", ":"), "ensure_ascii": False},
    "json-spaced": {"ensure_ascii": False},
}


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")  # NaN, Infinity: no JSON column takes them


def from_bytes(raw: bytes) -> tuple[Any, str]:
    """The JSON body to store for ``raw`` and the kind to record in BODY_PROPERTY."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError):
        value = None
    else:
        for kind, options in _DUMPS.items():
            text = json.dumps(value, **options)
            # PostgreSQL's jsonb holds no NUL character (\u0000) in a string.
            if text.encode("utf-8") == raw and "\\u0000" not in text:
                return value, kind
    return {BYTES_KEY: base64.b64encode(raw).decode("ascii")}, "bytes"


def to_bytes(body: Any, properties: dict) -> bytes:
    """The bytes a gRPC consumer receives for a stored body."""
    kind = properties.get(BODY_PROPERTY, "json")
    if kind == "bytes" and isinstance(body, dict) and isinstance(body.get(BYTES_KEY), str):
        return base64.b64decode(body[BYTES_KEY])
    return json.dumps(body, **_DUMPS.get(kind, _DUMPS["json"])).encode("utf-8")
