"""Imported at start-up by the processes the harness runs under faketime (only they have
this folder on PYTHONPATH): libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC makes
Python 3.11's ``time.sleep()`` fail with EINVAL (wolfcw/libfaketime#426: it shifts the
absolute CLOCK_MONOTONIC deadline of clock_nanosleep by the fake offset). A failed sleep
waits with ``select()`` instead, whose timeout is relative and left alone."""

from __future__ import annotations

import select
import time

_clock_nanosleep = time.sleep


def _sleep(seconds: float) -> None:
    try:
        _clock_nanosleep(seconds)
    except OSError:
        select.select([], [], [], seconds)


time.sleep = _sleep
