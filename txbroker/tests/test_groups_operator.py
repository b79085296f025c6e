"""Operators see delayed and ordered messages: message_group and deliver_at in the API and
the admin, the message group filter, the blocked message groups (API and admin page), and
recall and skip (API and admin), each behind its permission and recorded with the operator."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient

from txbroker import OutgoingMessage, Producer
from txbroker.models import Delivery, TraceEvent
from txbroker.tests import operator_data
from txbroker.tests.operator_data import make_user, run_deliveries
from txbroker.tests.support.consumers import ORDERED_TOPIC, TOPIC
from txbroker.tests.support.models import Plan

plain_http = operator_data.plain_http

API = "/api/txbroker"
SKIP, BLOCK = "test_ordered_skip_group", "test_ordered_block_group"
outbox = Producer("test_operator_producer")


def sent(message: OutgoingMessage) -> str:
    with transaction.atomic():
        return outbox.send(message)


@dataclass
class Groups:
    dead: str  # first of message group "grp-a": DEAD in both groups (blocks BLOCK)
    behind: str  # second of "grp-a": waits in BLOCK
    delayed: str  # a delayed plain message, an hour away


@pytest.fixture
def groups(transactional_db, broker_env) -> Groups:
    Plan.objects.create(key="grp-a-1", fail_times=99)
    dead = sent(OutgoingMessage(topic=ORDERED_TOPIC, keys=["grp-a-1"], body={}, message_group="grp-a"))
    behind = sent(OutgoingMessage(topic=ORDERED_TOPIC, keys=["grp-a-2"], body={}, message_group="grp-a"))
    run_deliveries()
    assert Delivery.objects.get(message_id=dead, consumer_group=BLOCK).status == "DEAD"
    assert Delivery.objects.get(message_id=behind, consumer_group=BLOCK).status == "PENDING"
    delayed = sent(OutgoingMessage(topic=TOPIC, tag="other", keys=["later"], body={}, delay=3600))
    return Groups(dead=dead, behind=behind, delayed=delayed)


def api_client(*perms: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(
        make_user("op-" + "-".join(p.split(".")[-1] for p in perms), staff=True, perms=perms)
    )
    return client


VIEW = "txbroker.view_message"


# --- the API --------------------------------------------------------------------------------
def test_messages_show_message_group_and_deliver_at_and_filter_by_message_group(groups):
    client = api_client(VIEW)
    listed = client.get(f"{API}/messages/", {"message_group": "grp-a"}).json()["results"]
    assert {m["msg_id"] for m in listed} == {groups.dead, groups.behind}
    assert {m["message_group"] for m in listed} == {"grp-a"} and listed[0]["deliver_at"] is None
    detail = client.get(f"{API}/messages/{groups.delayed}/").json()
    assert detail["message_group"] == "" and detail["deliver_at"] is not None
    assert client.get(f"{API}/messages/", {"message_group": "x" * 300}).status_code == 400


def test_blocked_groups_lists_the_blocking_delivery_and_since_when(groups):
    client = api_client(VIEW)
    body = client.get(f"{API}/blocked-groups/").json()
    assert len(body) == 1
    (blocked,) = body
    dead = Delivery.objects.get(message_id=groups.dead, consumer_group=BLOCK)
    assert blocked["consumer_group"] == BLOCK and blocked["message_group"] == "grp-a"
    assert blocked["delivery_id"] == dead.pk and blocked["msg_id"] == groups.dead
    assert blocked["waiting"] == 1 and blocked["since"]
    assert client.get(f"{API}/blocked-groups/", {"consumer_group": SKIP}).json() == []
    assert APIClient().get(f"{API}/blocked-groups/").status_code in (401, 403)


def test_skip_needs_its_permission_records_the_operator_and_unblocks(groups):
    url = f"{API}/messages/{groups.dead}/skip/"
    assert api_client(VIEW).post(url, {"consumer_group": BLOCK}, format="json").status_code == 403
    client = api_client(VIEW, "txbroker.skip_delivery")
    assert client.post(url, {}, format="json").status_code == 400
    assert (
        client.post(f"{API}/messages/{'f' * 32}/skip/", {"consumer_group": BLOCK}, format="json").status_code
        == 404
    )
    assert client.post(url, {"consumer_group": "nobody"}, format="json").status_code == 409
    response = client.post(url, {"consumer_group": BLOCK}, format="json")
    assert response.status_code == 202, response.content
    assert response.json() == {"msg_id": groups.dead, "consumer_group": BLOCK, "status": "SKIPPED"}
    assert TraceEvent.objects.get(message_id=groups.dead, event="SKIPPED").actor.startswith("op-")
    assert client.post(url, {"consumer_group": BLOCK}, format="json").status_code == 409  # not DEAD now
    assert client.get(f"{API}/blocked-groups/").json() == []
    run_deliveries()
    assert Delivery.objects.get(message_id=groups.behind, consumer_group=BLOCK).status == "SUCCEEDED"


def test_recall_needs_its_permission_and_answers_409_for_what_it_could_not_recall(groups):
    url = f"{API}/messages/{groups.delayed}/recall/"
    assert api_client(VIEW).post(url).status_code == 403
    client = api_client(VIEW, "txbroker.recall_message")
    assert client.post(f"{API}/messages/{groups.dead}/recall/").status_code == 409  # not delayed
    assert client.post(f"{API}/messages/nonsense/recall/").status_code == 404
    response = client.post(url)
    assert response.status_code == 202, response.content
    assert response.json() == {"msg_id": groups.delayed, "recalled": ["test_all_group"], "not_recalled": {}}
    again = client.post(url)
    assert again.status_code == 409
    assert again.json()["not_recalled"] == {"test_all_group": "RECALLED"}
    assert "could not recall" in again.json()["detail"]
    assert (
        TraceEvent.objects.filter(message_id=groups.delayed, event="RECALLED").first().actor.startswith("op-")
    )


def test_the_schema_documents_the_new_endpoints(client, db):
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]
    assert set(paths[f"{API}/messages/{{msg_id}}/recall/"]["post"]["responses"]) >= {
        "202",
        "403",
        "404",
        "409",
    }
    assert set(paths[f"{API}/messages/{{msg_id}}/skip/"]["post"]["responses"]) >= {
        "202",
        "400",
        "403",
        "404",
        "409",
    }
    assert set(paths[f"{API}/blocked-groups/"]["get"]["responses"]) >= {"200", "400", "403"}
    assert (
        "txbroker.recall_message"
        in paths[f"{API}/messages/{{msg_id}}/recall/"]["post"]["responses"]["403"]["description"]
    )
    names = {p["name"] for p in paths[f"{API}/messages/"]["get"]["parameters"]}
    assert "message_group" in names


# --- the admin ------------------------------------------------------------------------------
def test_admin_list_and_page_show_message_group_and_deliver_at_and_filter(admin_client, groups):
    page = admin_client.get(reverse("admin:txbroker_message_changelist"), {"message_group": "grp-a"})
    text = page.content.decode()
    assert page.status_code == 200 and groups.dead in text and groups.delayed not in text
    assert "message group" in text and "Blocked message groups" in text
    detail = admin_client.get(
        reverse("admin:txbroker_message_change", args=[groups.delayed])
    ).content.decode()
    assert "deliver at" in detail.lower() and 'id="txb-recall"' in detail
    dead_page = admin_client.get(
        reverse("admin:txbroker_message_change", args=[groups.dead])
    ).content.decode()
    assert 'id="txb-skip"' in dead_page and 'id="txb-recall"' not in dead_page


def test_admin_blocked_groups_page_and_skip_confirm_first_and_record_the_operator(
    admin_client, admin_user, groups
):
    page = admin_client.get(reverse("admin:txbroker_blocked_groups")).content.decode()
    assert "grp-a" in page and groups.dead in page and BLOCK in page
    url = reverse("admin:txbroker_message_skip", args=[groups.dead])
    confirm = admin_client.get(url, {"consumer_group": BLOCK})
    assert confirm.status_code == 200 and "Yes, skip" in confirm.content.decode()
    assert Delivery.objects.get(message_id=groups.dead, consumer_group=BLOCK).status == "DEAD"
    admin_client.post(url, {"consumer_group": BLOCK, "confirm": "yes"})
    assert Delivery.objects.get(message_id=groups.dead, consumer_group=BLOCK).status == "SKIPPED"
    skipped = TraceEvent.objects.get(message_id=groups.dead, event="SKIPPED")
    assert skipped.actor == admin_user.username
    after = admin_client.get(reverse("admin:txbroker_blocked_groups")).content.decode()
    assert 'id="txb-none-blocked"' in after


def test_admin_recall_confirms_first_and_records_the_operator(admin_client, admin_user, groups):
    url = reverse("admin:txbroker_message_recall", args=[groups.delayed])
    assert "Yes, recall" in admin_client.get(url).content.decode()
    assert Delivery.objects.get(message_id=groups.delayed).status == "PENDING"
    admin_client.post(url, {"confirm": "yes"})
    assert Delivery.objects.get(message_id=groups.delayed).status == "RECALLED"
    assert TraceEvent.objects.get(message_id=groups.delayed, event="RECALLED").actor == admin_user.username


def test_admin_recall_and_skip_need_their_permissions(client, groups):
    viewer = make_user("viewer-only", staff=True, perms=(VIEW,))
    client.force_login(viewer)
    assert client.get(reverse("admin:txbroker_message_recall", args=[groups.delayed])).status_code == 403
    assert client.post(reverse("admin:txbroker_message_skip", args=[groups.dead]), {}).status_code == 403
    assert client.get(reverse("admin:txbroker_blocked_groups")).status_code == 200
    page = client.get(reverse("admin:txbroker_message_change", args=[groups.delayed])).content.decode()
    assert 'id="txb-recall"' not in page
