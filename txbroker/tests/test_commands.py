"""The manage.py commands through ``call_command``: what they do, what they print, bad
input (``CommandError``, non-zero exit) and ``--dry-run`` changing nothing."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from txbroker import OutgoingMessage
from txbroker.models import Delivery, Message, MessageKey, TraceEvent
from txbroker.selectors import stats
from txbroker.tests import operator_data
from txbroker.tests.helpers import deliveries, record_locally, send
from txbroker.tests.operator_data import make_committed, make_dead, make_discarded, make_rolled_back
from txbroker.tests.processes import child_env, manage_argv, project_dir
from txbroker.tests.support.checkers import producer
from txbroker.tests.support.models import Plan

plain_http = operator_data.plain_http
world = operator_data.world


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def snapshot() -> tuple:
    """Everything a command could change (a refused move adds only its REFUSED event)."""
    return (
        sorted(Message.objects.values_list("pk", "state", "check_times")),
        sorted(Delivery.objects.values_list("pk", "status", "next_attempt_at")),
        TraceEvent.objects.exclude(event="REFUSED").count(),
        MessageKey.objects.count(),
    )


# --- check and sweep -----------------------------------------------------------------------
def test_check_runs_one_pass_and_says_how_each_was_settled(transactional_db, broker_env, monkeypatch):
    Plan.objects.create(key="k-unknown", check_answer="UNKNOWN")
    Plan.objects.create(key="k-rollback", check_answer="ROLLBACK")
    send("k-commit", answer="UNKNOWN", check_immunity_seconds=0)  # has its local record: COMMIT
    send("k-rollback", answer="UNKNOWN", check_immunity_seconds=0)
    send("k-unknown", answer="UNKNOWN", check_immunity_seconds=0)
    out = run("txbroker_check")
    assert "3 HALF messages due for a check" in out
    assert "checked 3 messages: COMMITTED 1, ROLLED_BACK 1, UNKNOWN 1" in out
    assert "[##############################] 100%  3/3 checked" in out  # the progress bar
    again = run("txbroker_check")
    assert again.strip() == "nothing due: no HALF message waits for a check"  # no "0 done checked"


def test_sweep_enqueues_tasks_for_due_deliveries(transactional_db, broker_env):
    send("k-sweep")
    out = run("txbroker_sweep")
    assert "enqueued 1 delivery task for 3 due deliveries; reclaimed 0 expired claims" in out
    with pytest.raises(CommandError, match="at least 1"):
        run("txbroker_sweep", "--max-tasks", "0")


# --- replay ----------------------------------------------------------------------------------
def test_replay_one_message_to_a_group_and_forced(world):
    out = run("txbroker_replay", world.dead, "--group", "test_pay_group")
    assert f"replayed 1 delivery of message {world.dead}" in out
    assert deliveries(world.dead)["test_pay_group"] == "PENDING"
    actor = TraceEvent.objects.get(message_id=world.dead, event="REPLAY").actor
    assert actor.endswith("(manage.py)")

    assert "nothing to replay (SUCCEEDED ones need --force)" in run("txbroker_replay", world.committed)
    assert "replayed 3" in run("txbroker_replay", world.committed, "--force")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "give a MSG_ID, or --dead"),
        (("ffffffffffffffffffffffffffffffff",), "no message with id"),
        (("HALF",), "only COMMITTED"),
        (("DEAD", "--group", "nobody"), "no delivery to consumer group 'nobody'"),
        (("DEAD", "--dead"), "either MSG_ID or --dead"),
        (("--dead", "--force"), "--force applies to one message"),
        (("--dead", "--since", "last tuesday"), "not an ISO 8601 date"),
        (("DEAD", "--dry-run"), "--since and --dry-run go with --dead"),
    ],
)
def test_replay_bad_input_is_a_command_error(world, args, error):
    args = tuple(world.half if a == "HALF" else world.dead if a == "DEAD" else a for a in args)
    before = snapshot()
    with pytest.raises(CommandError, match=error):
        run("txbroker_replay", *args)
    assert snapshot() == before


def test_bulk_dead_letter_replay_dry_run_then_by_group_and_since(world, broker_setting):
    refund_only = make_dead("order-dead-refund", broker_setting, tag="refund")
    before = snapshot()
    assert "dry run: would replay 5 dead letters; nothing changed" in run(
        "txbroker_replay", "--dead", "--dry-run"
    )
    assert snapshot() == before

    out = run("txbroker_replay", "--dead", "--group", "test_refund_group")
    assert "replayed 2 dead letters of test_refund_group" in out
    assert "2/2 replayed" in out
    assert deliveries(refund_only) == {"test_all_group": "DEAD", "test_refund_group": "PENDING"}

    # --since: only those that died after the given time.
    Delivery.objects.filter(message_id=world.dead, status="DEAD").update(
        updated_at=timezone.now() - timedelta(days=2)
    )
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert "replayed 1 dead letter" in run("txbroker_replay", "--dead", "--since", since)
    assert deliveries(refund_only)["test_all_group"] == "PENDING"
    assert set(deliveries(world.dead).values()) == {"DEAD", "PENDING"}
    assert "replayed 2 dead letters" in run("txbroker_replay", "--dead", "--since", "2000-01-01")


# --- resume ----------------------------------------------------------------------------------
def test_resume_one_and_all(world, broker_setting):
    other = make_discarded("order-discarded-2", broker_setting)
    third = make_discarded("order-discarded-3", broker_setting)
    out = run("txbroker_resume", world.discarded)
    assert "it is HALF again" in out
    assert Message.objects.get(pk=world.discarded).state == "HALF"

    before = snapshot()
    assert "would resume 2 DISCARDED messages; nothing changed" in run(
        "txbroker_resume", "--all", "--dry-run"
    )
    assert snapshot() == before
    out = run("txbroker_resume", "--all")
    assert "resumed checking of 2 messages" in out
    assert set(Message.objects.filter(pk__in=[other, third]).values_list("state", flat=True)) == {"HALF"}
    assert TraceEvent.objects.filter(event="RESUMED", actor__endswith="(manage.py)").count() == 3


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "either a MSG_ID or --all"),
        (("DISCARDED", "--all"), "either a MSG_ID or --all"),
        (("HALF",), "only DISCARDED messages resume"),
        (("ffffffffffffffffffffffffffffffff",), "no message with id"),
        (("DISCARDED", "--dry-run"), "--dry-run goes with --all"),
    ],
)
def test_resume_bad_input_is_a_command_error(world, args, error):
    args = tuple(world.half if a == "HALF" else world.discarded if a == "DISCARDED" else a for a in args)
    before = snapshot()
    with pytest.raises(CommandError, match=error):
        run("txbroker_resume", *args)
    assert snapshot() == before


# --- stats -----------------------------------------------------------------------------------
def test_stats_as_a_table_and_as_the_apis_json(world):
    data = json.loads(run("txbroker_stats", "--json"))
    assert data == json.loads(json.dumps(stats()))
    assert data["messages"] == {"HALF": 1, "COMMITTED": 2, "ROLLED_BACK": 1, "DISCARDED": 1}
    assert data["deliveries"]["test_pay_group"]["DEAD"] == 1

    table = run("txbroker_stats")
    assert "DISCARDED" in table and "test_refund_group" in table
    assert "oldest pending" in table


def test_stats_json_matches_the_api(world, admin_client):
    api = admin_client.get("/api/txbroker/stats/").json()
    cli = json.loads(run("txbroker_stats", "--json"))
    api_groups = {
        g: {k: v for k, v in c.items() if k != "oldest_pending_age_seconds"}
        for g, c in api["deliveries"].items()
    }
    cli_groups = {
        g: {k: v for k, v in c.items() if k != "oldest_pending_age_seconds"}
        for g, c in cli["deliveries"].items()
    }
    assert (api["messages"], api_groups) == (cli["messages"], cli_groups)


# --- purge -----------------------------------------------------------------------------------
def test_purge_deletes_only_finished_old_messages_in_batches(transactional_db, broker_env, broker_setting):
    old = timezone.now() - timedelta(days=10)
    done = [make_committed(f"old-ok-{i}") for i in range(3)]
    rolled = make_rolled_back("old-rb")
    dead = make_dead("old-dead", broker_setting)
    discarded = make_discarded("old-discarded", broker_setting)
    half = operator_data.make_half("old-half")
    retrying = make_committed("old-retry")
    recent = make_committed("recent-ok")
    no_consumer = producer.send_message_in_transaction(
        OutgoingMessage(topic="topic_without_consumers", tag="pay", keys=["old-nobody"], body={}),
        record_locally,
    ).msg_id
    Delivery.objects.filter(message_id=retrying, consumer_group="test_pay_group").update(status="RETRY")
    old_ones = [*done, rolled, dead, discarded, half, retrying, no_consumer]
    Message.objects.filter(pk__in=old_ones).update(created_at=old)
    Message.objects.filter(pk__in=old_ones).exclude(resolved_at=None).update(resolved_at=old)
    Delivery.objects.filter(message_id__in=old_ones).exclude(succeeded_at=None).update(succeeded_at=old)
    finished = [*done, rolled, no_consumer]

    before = snapshot()
    out = run("txbroker_purge", "--older-than", "7d", "--dry-run")
    assert "dry run: would delete 5 messages older than 7d, with 9 deliveries" in out
    assert "nothing changed" in out
    assert snapshot() == before

    out = run("txbroker_purge", "--older-than", "7d", "--batch-size", "2")
    assert "deleted 5 messages older than 7d, with 9 deliveries" in out
    assert "2/5" in out and "4/5" in out and "5/5" in out  # three batches, with progress
    assert not Message.objects.filter(pk__in=finished).exists()
    assert not Delivery.objects.filter(message_id__in=finished).exists()
    assert not TraceEvent.objects.filter(message_id__in=finished).exists()
    assert not MessageKey.objects.filter(message_id__in=finished).exists()
    kept = {dead, discarded, half, retrying, recent}
    assert set(Message.objects.values_list("pk", flat=True)) == kept
    assert "deleted 0 messages" in run("txbroker_purge", "--older-than", "7d")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--older-than", "a week"), "not a duration"),
        (("--older-than", "0d"), "more than 0"),
        (("--older-than", "7d", "--batch-size", "0"), "at least 1"),
    ],
)
def test_purge_bad_input_is_a_command_error(world, args, error):
    before = snapshot()
    with pytest.raises(CommandError, match=error):
        run("txbroker_purge", *args)
    assert snapshot() == before


def test_bad_input_exits_non_zero_from_the_shell(transactional_db):
    result = subprocess.run(
        manage_argv("txbroker_purge", "--older-than", "soon"),
        cwd=project_dir(),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "CommandError: --older-than: not a duration: 'soon'" in result.stderr
    missing = subprocess.run(
        manage_argv("txbroker_purge"),
        cwd=project_dir(),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0 and "--older-than" in missing.stderr
