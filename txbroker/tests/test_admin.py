"""The operator's admin: list, search, filters, the message page, the actions behind their
confirmation pages and permissions, dead letters, the dashboard; and a list that stays at a
constant number of queries per page with 200,000 messages."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests import operator_data
from txbroker.tests.helpers import deliveries, events
from txbroker.tests.operator_data import ALL_GROUPS, bulk_insert_messages, make_user

# Fixtures shared by the operator tests.
plain_http = operator_data.plain_http
world = operator_data.world

LIST = "admin:txbroker_message_changelist"
FULL_COUNT = re.compile(r'SELECT COUNT\(\*\) AS "__count" FROM "txbroker_message"(?!.*LIMIT)', re.S)


def change_url(msg_id: str) -> str:
    return reverse("admin:txbroker_message_change", args=[msg_id])


def listed_ids(response) -> list[str]:
    return re.findall(r'class="txb-msg-link" data-full="([0-9a-f]{32})"', response.content.decode())


# --- the list at scale ---------------------------------------------------------------------
def measure(client, url: str) -> tuple[int, list[str], object]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:2000]
    return len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries], response


@pytest.mark.django_db
@pytest.mark.slow
def test_message_list_queries_per_page_are_constant_with_200000_messages(client, capsys):
    viewer = make_user("viewer", staff=True, perms=("txbroker.view_message",))
    client.force_login(viewer)
    base = reverse(LIST)
    since = (timezone.now() - timedelta(days=7)).replace(hour=0, minute=0, second=0, microsecond=0)
    pages = {
        "page 1": "",
        "page 2": "?p=2",
        "page 500": "?p=500",
        "state": "?state__exact=COMMITTED",
        "topic": "?topic=bulk_topic",
        "producer group": "?producer_group=bulk_producer_group&p=3",
        "consumer group + delivery status": "?consumer_group=test_pay_group&delivery_status=SUCCEEDED",
        "date": "?" + urlencode({"created_at__gte": str(since)}),
        "search by key": "?q=bulk-54321",
        "search by id prefix": "?q=00000000d431",  # message 54321
    }

    bulk_insert_messages(100_000)
    at_100k = {name: measure(client, base + query)[0] for name, query in pages.items()}
    bulk_insert_messages(100_000, start=100_000)
    assert Message.objects.count() == 200_000
    at_200k = {}
    for name, query in pages.items():
        n, sqls, response = measure(client, base + query)
        at_200k[name] = n
        assert not [s for s in sqls if FULL_COUNT.search(s)], f"{name}: a full-table COUNT ran"
        if name.startswith("page") or name in {"state", "topic", "date"}:
            assert len(listed_ids(response)) == 50, name
    with capsys.disabled():
        print("\nadmin message list, queries per page with 200,000 messages (3 deliveries each):")
        for name, n in at_200k.items():
            print(f"  {name:<34} {n}")

    # Constant: the same page costs the same at 100,000 and at 200,000 rows, pages of one
    # list cost the same, and no page grows with its 50 rows (no N+1: far below 50).
    assert at_100k == at_200k
    assert at_200k["page 1"] == at_200k["page 2"] == at_200k["page 500"]
    assert max(at_200k.values()) <= 12

    # The key search found exactly its message, through the index.
    n, sqls, response = measure(client, base + "?q=bulk-123456")
    assert len(listed_ids(response)) == 1
    n, sqls, response = measure(client, base + "?q=00000001e2")  # 123392..123647
    assert len(listed_ids(response)) == 50


# --- finding ---------------------------------------------------------------------------------
def test_search_by_key_and_by_message_id_prefix(admin_client, world):
    response = admin_client.get(reverse(LIST), {"q": "order-dead"})
    assert listed_ids(response) == [world.dead]

    response = admin_client.get(reverse(LIST), {"q": world.half[:14]})
    assert world.half in listed_ids(response)

    response = admin_client.get(reverse(LIST), {"q": world.half})
    assert listed_ids(response) == [world.half]

    response = admin_client.get(reverse(LIST), {"q": "no-such-order"})
    assert listed_ids(response) == []


def test_list_shows_columns_and_a_per_group_delivery_summary(admin_client, world):
    response = admin_client.get(reverse(LIST))
    html = response.content.decode()
    assert set(listed_ids(response)) == {
        world.committed,
        world.dead,
        world.half,
        world.rolled_back,
        world.discarded,
    }
    assert "3 ✓" in html  # the committed message: three groups succeeded
    assert "3 dead" in html
    for column in ("message id", "state", "created", "topic:tag", "key", "deliveries"):
        assert f">{column}</a>" in html.lower() or f">{column}</span>" in html.lower(), column
    assert "order-discarded" in html
    # Each group's status on its own line, the group's name whole on hover.
    assert re.search(r'<li title="test_pay_group: DEAD">', html)
    # A time with its seconds and its age; the full id on hover and on the clipboard.
    assert re.search(r'<span class="txb-time">\d\d:\d\d:\d\d</span>', html)
    assert re.search(r'<small class="txb-ago" data-ts="[\d.]+">\d+ s ago</small>', html)
    assert f'data-copy="{world.dead}"' in html and f"<code>{world.dead[:6]}…{world.dead[-4:]}</code>" in html


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state__exact": "HALF"}, {"half"}),
        ({"state__exact": "DISCARDED"}, {"discarded"}),
        ({"state__exact": "COMMITTED"}, {"committed", "dead"}),
        ({"topic": "test_topic"}, {"committed", "dead", "half", "rolled_back", "discarded"}),
        ({"topic": "other_topic"}, set()),
        (
            {"producer_group": "test_producer_group"},
            {"committed", "dead", "half", "rolled_back", "discarded"},
        ),
        ({"consumer_group": "test_pay_group"}, {"committed", "dead"}),
        ({"delivery_status": "DEAD"}, {"dead"}),
        ({"consumer_group": "test_refund_group", "delivery_status": "SUCCEEDED"}, {"committed"}),
        ({"consumer_group": "test_refund_group", "delivery_status": "RETRY"}, set()),
    ],
)
def test_filters(admin_client, world, query, expected):
    response = admin_client.get(reverse(LIST), query)
    assert response.status_code == 200
    assert set(listed_ids(response)) == {getattr(world, name) for name in expected}


def test_date_filter_and_filter_choices(admin_client, world):
    Message.objects.filter(pk=world.half).update(created_at=timezone.now() - timedelta(days=40))
    today = timezone.now().date()
    response = admin_client.get(
        reverse(LIST),
        {
            "created_at__gte": (today - timedelta(days=7)).isoformat(),
            "created_at__lt": (today + timedelta(days=1)).isoformat(),
        },
    )
    assert world.half not in listed_ids(response)
    assert world.committed in listed_ids(response)
    html = response.content.decode()
    for choice in ("test_topic", "test_producer_group", *ALL_GROUPS):
        assert choice in html


# --- the message page ------------------------------------------------------------------------
def test_message_page_shows_pretty_body_properties_deliveries_and_trace(admin_client, world):
    response = admin_client.get(change_url(world.dead))
    assert response.status_code == 200
    html = response.content.decode()
    assert "&quot;key&quot;: &quot;order-dead&quot;" in html  # pretty JSON body, escaped
    assert 'class="txb-json"' in html
    for group in ALL_GROUPS:
        assert group in html
    assert "planned failure" in html  # the deliveries' last error
    assert 'class="txb-timeline"' in html
    for event in ("HALF_STORED", "LOCAL_TRANSACTION", "COMMITTED", "DELIVERY_ATTEMPT", "DEAD"):
        assert f'<strong class="txb-event-name">{event}</strong>' in html
    assert 'id="txb-replay"' in html
    assert 'id="txb-resume"' not in html and 'id="txb-commit"' not in html


def test_message_page_shows_each_success_from_its_delivery_row(admin_client, world):
    """A success writes no trace row: its line comes from the delivery row, in place."""
    assert not TraceEvent.objects.filter(message_id=world.committed, event="DELIVERY_ATTEMPT").exists()
    html = admin_client.get(change_url(world.committed)).content.decode()
    assert html.count('<strong class="txb-event-name">DELIVERY_ATTEMPT</strong>') == len(ALL_GROUPS)
    assert html.count("attempt 1: SUCCEEDED in ") == len(ALL_GROUPS)
    assert html.index("COMMITTED</strong>") < html.index("attempt 1: SUCCEEDED in ")


# --- actions ---------------------------------------------------------------------------------
def test_replay_to_all_groups_asks_first_then_records_the_operator(admin_client, admin_user, world):
    url = reverse("admin:txbroker_message_replay", args=[world.dead])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert b"Yes, replay" in response.content
    assert set(deliveries(world.dead).values()) == {"DEAD"}  # nothing happened yet

    response = admin_client.post(url, {"consumer_group": "", "confirm": "yes"})
    assert response.status_code == 302 and response.url == change_url(world.dead)
    assert set(deliveries(world.dead).values()) == {"PENDING"}
    replays = TraceEvent.objects.filter(message_id=world.dead, event="REPLAY")
    assert {(e.consumer_group, e.actor) for e in replays} == {(g, admin_user.username) for g in ALL_GROUPS}


def test_the_replay_confirmation_shows_the_error_not_the_first_line_of_its_traceback(admin_client, world):
    html = admin_client.get(reverse("admin:txbroker_message_replay", args=[world.dead])).content.decode()
    summaries = re.findall(r'<details class="txb-error"><summary title="([^"]*)">', html)
    assert len(summaries) == 3
    assert all(s.startswith("RuntimeError: planned failure") for s in summaries), summaries
    assert "Traceback (most recent call last)" in html  # one click away, in the <details>


def test_done_deliveries_show_no_next_attempt_and_times_with_seconds(admin_client, world):
    html = admin_client.get(change_url(world.committed)).content.decode()
    next_attempts = re.findall(r'<td class="field-next_attempt">\s*<p>(.*?)</p>', html, re.S)
    assert next_attempts == ["-", "-", "-"]
    assert re.search(r'<span class="txb-time">\d\d:\d\d:\d\d</span>', html)


def test_replay_to_one_chosen_group(admin_client, world):
    url = reverse("admin:txbroker_message_replay", args=[world.dead])
    admin_client.post(url, {"consumer_group": "test_pay_group", "confirm": "yes"})
    assert deliveries(world.dead) == {
        "test_all_group": "DEAD",
        "test_pay_group": "PENDING",
        "test_refund_group": "DEAD",
    }


def test_replay_of_succeeded_deliveries_needs_force(admin_client, world):
    url = reverse("admin:txbroker_message_replay", args=[world.committed])
    admin_client.post(url, {"consumer_group": "test_all_group", "confirm": "yes"})
    assert deliveries(world.committed)["test_all_group"] == "SUCCEEDED"
    admin_client.post(url, {"consumer_group": "test_all_group", "force": "on", "confirm": "yes"})
    assert deliveries(world.committed)["test_all_group"] == "PENDING"


def test_resume_a_discarded_message(admin_client, admin_user, world):
    page = admin_client.get(change_url(world.discarded)).content.decode()
    assert 'id="txb-resume"' in page and 'id="txb-replay"' not in page
    url = reverse("admin:txbroker_message_resume", args=[world.discarded])
    assert b"Yes, resume checking" in admin_client.get(url).content
    admin_client.post(url, {"confirm": "yes"})
    message = Message.objects.get(pk=world.discarded)
    assert (message.state, message.check_times) == ("HALF", 0)
    assert TraceEvent.objects.filter(
        message_id=world.discarded, event="RESUMED", actor=admin_user.username
    ).exists()


def test_commit_and_rollback_a_half_message_by_hand(admin_client, admin_user, world):
    page = admin_client.get(change_url(world.half)).content.decode()
    assert 'id="txb-commit"' in page and 'id="txb-rollback"' in page
    url = reverse("admin:txbroker_message_commit", args=[world.half])
    assert b"Yes, commit" in admin_client.get(url).content
    admin_client.post(url, {"confirm": "yes"})
    assert Message.objects.get(pk=world.half).state == "COMMITTED"
    assert set(deliveries(world.half)) == set(ALL_GROUPS)
    committed = TraceEvent.objects.get(message_id=world.half, event="COMMITTED")
    assert committed.actor == admin_user.username and "by operator" in committed.detail

    # A second settlement is refused, shown, and recorded; the state stays.
    response = admin_client.post(
        reverse("admin:txbroker_message_rollback", args=[world.half]), {"confirm": "yes"}, follow=True
    )
    assert b"only HALF messages can be settled by hand" in response.content
    assert Message.objects.get(pk=world.half).state == "COMMITTED"
    assert "REFUSED" in events(world.half)


def test_rollback_by_hand(admin_client, world):
    admin_client.post(reverse("admin:txbroker_message_rollback", args=[world.half]), {"confirm": "yes"})
    assert Message.objects.get(pk=world.half).state == "ROLLED_BACK"
    assert deliveries(world.half) == {}


def test_each_action_needs_its_permission(client, world):
    viewer = make_user("viewer", staff=True, perms=("txbroker.view_message",))
    client.force_login(viewer)
    page = client.get(change_url(world.dead)).content.decode()
    assert 'id="txb-replay"' not in page
    forbidden = [
        reverse("admin:txbroker_message_replay", args=[world.dead]),
        reverse("admin:txbroker_message_resume", args=[world.discarded]),
        reverse("admin:txbroker_message_commit", args=[world.half]),
        reverse("admin:txbroker_message_rollback", args=[world.half]),
        reverse("admin:txbroker_deadletter_replay_all"),
    ]
    for url in forbidden:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"confirm": "yes"}).status_code == 403, url
    assert set(deliveries(world.dead).values()) == {"DEAD"}
    assert Message.objects.get(pk=world.half).state == "HALF"
    # The bulk actions are not offered either.
    html = client.get(reverse(LIST)).content.decode()
    assert "replay_selected" not in html and "resume_selected" not in html

    # Each permission opens its own action only.
    replayer = make_user("replayer", staff=True, perms=("txbroker.view_message", "txbroker.replay_message"))
    client.force_login(replayer)
    assert client.get(reverse("admin:txbroker_message_replay", args=[world.dead])).status_code == 200
    assert client.get(reverse("admin:txbroker_message_resume", args=[world.discarded])).status_code == 403
    assert client.get(reverse("admin:txbroker_message_commit", args=[world.half])).status_code == 403


def test_non_staff_cannot_reach_the_admin(client, world):
    client.force_login(make_user("customer", staff=False))
    response = client.get(reverse("admin:txbroker_message_replay", args=[world.dead]))
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_bulk_replay_and_resume_actions_confirm_first(admin_client, admin_user, world, broker_setting):
    from txbroker.tests.operator_data import make_dead, make_discarded

    second_dead = make_dead("order-dead-2", broker_setting, tag="refund")
    second_discarded = make_discarded("order-discarded-2", broker_setting)
    url = reverse(LIST)

    selection = {"action": "replay_selected", "_selected_action": [world.dead, second_dead], "index": "0"}
    response = admin_client.post(url, selection)
    assert response.status_code == 200 and b"Yes, replay them" in response.content
    assert set(deliveries(second_dead).values()) == {"DEAD"}
    admin_client.post(url, {**selection, "confirm": "yes"})
    assert set(deliveries(world.dead).values()) == {"PENDING"}
    assert set(deliveries(second_dead).values()) == {"PENDING"}

    selection = {
        "action": "resume_selected",
        "_selected_action": [world.discarded, second_discarded],
        "index": "0",
    }
    assert b"Yes, resume checking" in admin_client.post(url, selection).content
    admin_client.post(url, {**selection, "confirm": "yes"})
    assert set(
        Message.objects.filter(pk__in=[world.discarded, second_discarded]).values_list("state", flat=True)
    ) == {"HALF"}
    assert TraceEvent.objects.filter(event="RESUMED", actor=admin_user.username).count() == 2


# --- dead letters ----------------------------------------------------------------------------
def test_dead_letter_queue_per_group_with_last_error_and_bulk_replay(
    admin_client, admin_user, world, broker_setting
):
    from txbroker.tests.operator_data import make_dead

    refund_only = make_dead("order-dead-refund", broker_setting, tag="refund")  # all + refund groups
    url = reverse("admin:txbroker_deadletter_changelist")
    html = admin_client.get(url).content.decode()
    assert "test_pay_group</a>: <strong>1</strong>" in html
    assert "test_refund_group</a>: <strong>2</strong>" in html
    assert "planned failure" in html

    html = admin_client.get(url, {"consumer_group": "test_refund_group"}).content.decode()
    assert world.dead in html and refund_only in html
    assert "Replay all 2 of test_refund_group" in html

    replay_all = reverse("admin:txbroker_deadletter_replay_all")
    confirm = admin_client.get(replay_all, {"consumer_group": "test_refund_group"})
    assert b"Yes, replay 2" in confirm.content
    assert Delivery.objects.filter(status="DEAD").count() == 5
    admin_client.post(replay_all, {"consumer_group": "test_refund_group", "confirm": "yes"})
    assert deliveries(world.dead) == {
        "test_all_group": "DEAD",
        "test_pay_group": "DEAD",
        "test_refund_group": "PENDING",
    }
    assert deliveries(refund_only) == {"test_all_group": "DEAD", "test_refund_group": "PENDING"}
    assert TraceEvent.objects.filter(event="REPLAY", actor=admin_user.username).count() == 2

    # The list's own action, for a selection of dead letters.
    dead_ids = list(Delivery.objects.filter(status="DEAD").values_list("pk", flat=True))
    selection = {"action": "replay_selected", "_selected_action": dead_ids, "index": "0"}
    assert b"Yes, replay them" in admin_client.post(url, selection).content
    admin_client.post(url, {**selection, "confirm": "yes"})
    assert not Delivery.objects.filter(status="DEAD").exists()


# --- dashboard, index, periodic tasks --------------------------------------------------------
def test_dashboard_draws_its_pictures_offline_and_is_linked_from_the_index(admin_client, world):
    index = admin_client.get(reverse("admin:index")).content.decode()
    dashboard_url = reverse("admin:txbroker_dashboard_changelist")
    assert f'href="{dashboard_url}"' in index
    assert reverse("admin:txbroker_deadletter_changelist") in index

    response = admin_client.get(dashboard_url)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg" class="txb-chart"') == 5
    for title in (
        "Messages per state",
        "Per minute, last hour: committed, consumed, failed attempts",
        "Backlog (lag) per consumer group",
        "Oldest pending delivery per group",
        "Dead letters per consumer group",
    ):
        assert title in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert "https://" not in html
    assert "committed (2)" in html  # two commits in the last hour (the committed and the dead one)
    assert re.search(r"failed \((\d+)\)", html).group(1) != "0"
    assert 'data-refresh-seconds="5.0"' in html and "txbroker/admin.js" in html
    assert 'id="txb-no-worker"' in html  # no worker runs in this test


def test_dashboard_says_at_once_when_the_broker_cannot_be_asked_for_workers(admin_client, db, monkeypatch):
    from celery import current_app

    app = current_app._get_current_object()
    away = app.connection_for_write
    monkeypatch.setattr(app, "connection_for_write", lambda: away(url="redis://127.0.0.1:1/0"))
    started = time.monotonic()
    html = admin_client.get(reverse("admin:txbroker_dashboard_changelist")).content.decode()
    assert time.monotonic() - started < 5
    assert "The Celery broker could not be asked which workers run." in html
    assert "127.0.0.1:1" not in html


def test_dashboard_shows_claimed_batches_and_ages_as_its_table_does(admin_client, world):
    Delivery.objects.filter(message_id=world.half).delete()
    claimed = Delivery.objects.filter(message_id=world.committed, consumer_group="test_pay_group")
    claimed.update(status="RUNNING", claim_token="c" * 32, claimed_until=timezone.now())
    html = admin_client.get(reverse("admin:txbroker_dashboard_changelist")).content.decode()
    batch = re.search(r'<table id="txb-batches-table">.*?</table>', html, re.S).group(0)
    assert "ccccccc" in batch and "test_pay_group" in batch
    table_ages = re.findall(r'<td class="txb-age" title="[\d.]+ s">([^<]+)</td>', html)
    assert table_ages and "-" not in table_ages
    chart = re.search(r'<div class="txb-card" id="txb-age">.*?</svg>', html, re.S).group(0)
    for age in table_ages:
        assert f">{age}</text>" in chart


def test_dashboard_needs_view_permission(client, world):
    client.force_login(make_user("someone", staff=True))
    assert client.get(reverse("admin:txbroker_dashboard_changelist")).status_code == 403


def test_periodic_tasks_are_visible_and_editable_in_the_admin(admin_client, db):
    from django_celery_beat.models import PeriodicTask

    from txbroker.schedule import ensure_periodic_tasks

    ensure_periodic_tasks()
    html = admin_client.get(reverse("admin:django_celery_beat_periodictask_changelist")).content.decode()
    assert "txbroker: check-back pass" in html and "txbroker: delivery sweep" in html
    task = PeriodicTask.objects.get(name="txbroker: delivery sweep")
    response = admin_client.get(reverse("admin:django_celery_beat_periodictask_change", args=[task.pk]))
    assert response.status_code == 200 and b'name="enabled"' in response.content
