"""How the commands read: counted nouns in the singular and plural, a stats table that fits
100 columns (details behind --wide), message ids by a unique prefix as the admin's search
takes them, and progress one line per update when the output is not a terminal."""

from __future__ import annotations

from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command

from txbroker.delivery_transitions import _failure
from txbroker.management.base import counted
from txbroker.models import Delivery, Message
from txbroker.tests import operator_data
from txbroker.tests.helpers import deliveries
from txbroker.tests.operator_data import make_committed

world = operator_data.world


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def run(*args, stdout=None) -> str:
    out = stdout or StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_counted_nouns_read_in_the_singular_and_the_plural():
    assert counted(1, "delivery", "deliveries") == "1 delivery"
    assert counted(0, "delivery", "deliveries") == "0 deliveries"
    assert counted(2, "dead letter") == "2 dead letters"


def test_one_failed_attempt_is_one_attempt():
    no_retries = SimpleNamespace(max_reconsume_times=0)
    _, _, events = _failure("m", "g", 1, no_retries, "FAILED", "boom", "boom")
    assert events[-1].detail.startswith("1 attempt failed (max reconsume times 0)")
    _, _, events = _failure("m", "g", 3, SimpleNamespace(max_reconsume_times=2), "FAILED", "boom", "boom")
    assert events[-1].detail.startswith("3 attempts failed")


def test_one_replayed_delivery_and_one_dead_letter_in_the_singular(world):
    assert f"replayed 1 delivery of message {world.dead}" in run(
        "txbroker_replay", world.dead, "--group", "test_pay_group"
    )


def test_stats_fit_100_columns_and_wide_shows_every_status(world):
    long_group = "a_consumer_group_with_a_name_much_longer_than_any_terminal_column_would_want_to_show"
    Delivery.objects.create(message_id=world.committed, consumer_group=long_group, status="RETRY")
    table = run("txbroker_stats")
    assert max(len(line) for line in table.splitlines()) <= 100, table
    assert "lag" in table and "RETRY" in table and "DEAD" in table and "oldest pending" in table
    assert "SUCCEEDED" not in table  # behind --wide
    assert "a_consumer_group_with" in table and "~" in table  # shortened in the middle
    wide = run("txbroker_stats", "--wide")
    assert "SUCCEEDED" in wide and "PENDING" in wide and long_group in wide


def test_replay_and_resume_take_a_unique_prefix_of_the_id(world):
    out = run("txbroker_replay", world.dead[:20], "--group", "test_pay_group")
    assert f"replayed 1 delivery of message {world.dead}" in out
    assert deliveries(world.dead)["test_pay_group"] == "PENDING"
    assert "nothing to replay" in run("txbroker_replay", world.dead.upper(), "--group", "test_pay_group")
    out = run("txbroker_resume", world.discarded[:24].upper())
    assert f"resumed checking of message {world.discarded}" in out
    assert Message.objects.get(pk=world.discarded).state == "HALF"


def test_an_ambiguous_prefix_is_a_command_error_naming_how_many_match(world):
    for suffix in ("1", "2", "3"):
        Message.objects.create(
            msg_id="abcdef0" + suffix * 25, topic="t", producer_group="p", state="COMMITTED"
        )
    with pytest.raises(CommandError, match=r"'abcdef0' is the start of 3 message ids"):
        run("txbroker_replay", "abcdef0")
    with pytest.raises(CommandError, match="no message with id"):
        run("txbroker_replay", "abcdef09")  # no match: the operation's own answer


def test_progress_is_one_line_per_update_off_a_terminal_and_redrawn_on_one(world):
    for i in range(3):
        make_committed(f"progress-{i}")
    Message.objects.update(created_at="2000-01-01T00:00:00Z")
    Message.objects.exclude(resolved_at=None).update(resolved_at="2000-01-01T00:00:00Z")
    Delivery.objects.exclude(succeeded_at=None).update(succeeded_at="2000-01-01T00:00:00Z")
    out = run("txbroker_purge", "--older-than", "7d", "--batch-size", "1")
    assert "\r" not in out
    progress = [line for line in out.splitlines() if "messages deleted" in line]
    assert len(progress) >= 3 and all(line.startswith("[") for line in progress)

    for i in range(2):
        make_committed(f"progress-tty-{i}")
    Message.objects.filter(state="COMMITTED").update(created_at="2000-01-01T00:00:00Z")
    Message.objects.exclude(resolved_at=None).update(resolved_at="2000-01-01T00:00:00Z")
    Delivery.objects.exclude(succeeded_at=None).update(succeeded_at="2000-01-01T00:00:00Z")
    terminal = Terminal()
    run("txbroker_purge", "--older-than", "7d", "--batch-size", "1", stdout=terminal)
    assert "\r[" in terminal.getvalue()
