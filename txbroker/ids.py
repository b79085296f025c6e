from __future__ import annotations

import os
import time


def new_msg_id() -> str:
    """A 32-hex-digit id that sorts by creation time: 48 bits of milliseconds, then 80
    random bits (the layout of a UUIDv7, without its version bits)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def could_be_msg_id(value: str) -> bool:
    """False for a string no message can have as its id: one with a NUL, which PostgreSQL
    text cannot hold (looking it up is a database error, not "no such message")."""
    return "\x00" not in value
