"""Celery discovers ``<app>.tasks``: the naive baseline's tasks live in ``naive.py``."""

from harness.naive import naive_award_points, naive_mark_paid, naive_send_sms  # noqa: F401
