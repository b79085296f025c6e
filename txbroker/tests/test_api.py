"""The broker REST API: every endpoint for anonymous (401), a normal user (403), staff
without the model permission (403) and with it;
filters; cursor pagination; replay and resume with their effects; the stats shape; JSON
errors on bad input; the OpenAPI schema."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from txbroker.models import Delivery, Message, TraceEvent
from txbroker.tests import operator_data
from txbroker.tests.helpers import deliveries
from txbroker.tests.operator_data import ALL_GROUPS, make_user

plain_http = operator_data.plain_http
world = operator_data.world

API = "/api/txbroker"
ALL_PERMS = (
    "txbroker.view_message",
    "txbroker.replay_message",
    "txbroker.resume_message",
    "txbroker.resolve_message",
)


@pytest.fixture
def staff(world) -> APIClient:
    """A staff operator with every broker permission, by token."""
    user = make_user("operator", staff=True, perms=ALL_PERMS)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def endpoints(world) -> list[tuple[str, str, dict]]:
    return [
        ("get", f"{API}/messages/", {}),
        ("get", f"{API}/messages/{world.dead}/", {}),
        ("post", f"{API}/messages/{world.dead}/replay/", {}),
        ("post", f"{API}/messages/{world.discarded}/resume/", {}),
        ("post", f"{API}/messages/{world.half}/commit/", {}),
        ("post", f"{API}/messages/{world.half}/rollback/", {}),
        ("get", f"{API}/dead-letters/", {}),
        ("post", f"{API}/dead-letters/replay/", {}),
        ("get", f"{API}/stats/", {}),
    ]


# --- who may -----------------------------------------------------------------------------
def test_anonymous_gets_401_and_a_normal_user_403_on_every_endpoint(world):
    anonymous = APIClient()
    customer = APIClient()
    customer.force_authenticate(make_user("customer", staff=False))
    for method, url, body in endpoints(world):
        response = getattr(anonymous, method)(url, body, format="json")
        assert response.status_code == 401, (url, response.content)
        assert "detail" in response.json()
        response = getattr(customer, method)(url, body, format="json")
        assert response.status_code == 403, (url, response.content)
    assert set(deliveries(world.dead).values()) == {"DEAD"}
    assert Message.objects.get(pk=world.discarded).state == "DISCARDED"
    assert Message.objects.get(pk=world.half).state == "HALF"


def test_staff_without_a_permission_gets_403_json_on_every_endpoint(world):
    nobody = APIClient()
    nobody.force_authenticate(make_user("staff-only", staff=True))
    for method, url, body in endpoints(world):
        response = getattr(nobody, method)(url, body, format="json")
        assert response.status_code == 403, (url, response.content)
        assert set(response.json()) == {"detail"}
    assert set(deliveries(world.dead).values()) == {"DEAD"}


def test_staff_with_the_view_permission_reads_everything_but_acts_only_with_each_permission(world):
    reader = APIClient()
    reader.force_authenticate(make_user("reader", staff=True, perms=("txbroker.view_message",)))
    for method, url, body in endpoints(world):
        response = getattr(reader, method)(url, body, format="json")
        expected = 200 if method == "get" else 403
        assert response.status_code == expected, (url, response.content)

    replayer = APIClient()
    replayer.force_authenticate(make_user("replayer", staff=True, perms=("txbroker.replay_message",)))
    assert replayer.post(f"{API}/messages/{world.discarded}/resume/").status_code == 403
    assert replayer.post(f"{API}/messages/{world.half}/commit/").status_code == 403
    assert replayer.post(f"{API}/messages/{world.dead}/replay/", {}, format="json").status_code == 202


def test_session_auth_works_for_staff(client, world):
    client.force_login(make_user("browser", staff=True, perms=("txbroker.view_message",)))
    assert client.get(f"{API}/stats/").status_code == 200


def test_dead_letter_viewers_see_dead_letters_without_bodies_and_nothing_else(world):
    """As in the admin: view_deadletter opens the dead-letter page, not the messages."""
    viewer = APIClient()
    viewer.force_authenticate(make_user("dlq-viewer", staff=True, perms=("txbroker.view_deadletter",)))

    letters = viewer.get(f"{API}/dead-letters/")

    assert letters.status_code == 200
    assert letters.json()["results"]
    assert all(letter["message"]["body"] is None for letter in letters.json()["results"])
    assert all(letter["last_error"] for letter in letters.json()["results"])
    assert viewer.get(f"{API}/messages/").status_code == 403
    assert viewer.get(f"{API}/messages/{world.dead}/").status_code == 403
    assert viewer.get(f"{API}/stats/").status_code == 403


def test_dashboard_viewers_see_the_stats_only(world):
    viewer = APIClient()
    viewer.force_authenticate(make_user("dash-viewer", staff=True, perms=("txbroker.view_dashboard",)))

    assert viewer.get(f"{API}/stats/").status_code == 200
    assert viewer.get(f"{API}/messages/").status_code == 403
    assert viewer.get(f"{API}/dead-letters/").status_code == 403


def test_the_schema_documents_each_403_with_its_permission():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    forbidden = {
        ("/api/txbroker/messages/", "get"): "txbroker.view_message",
        ("/api/txbroker/messages/{msg_id}/", "get"): "txbroker.view_message",
        ("/api/txbroker/dead-letters/", "get"): "txbroker.view_deadletter",
        ("/api/txbroker/stats/", "get"): "txbroker.view_dashboard",
        ("/api/txbroker/messages/{msg_id}/replay/", "post"): "txbroker.replay_message",
        ("/api/txbroker/messages/{msg_id}/resume/", "post"): "txbroker.resume_message",
        ("/api/txbroker/messages/{msg_id}/commit/", "post"): "txbroker.resolve_message",
        ("/api/txbroker/dead-letters/replay/", "post"): "txbroker.replay_message",
    }
    for (path, method), permission in forbidden.items():
        answer = paths[path][method]["responses"]["403"]
        assert permission in answer["description"], (path, method)
        assert "application/json" in answer["content"]


# --- reading -----------------------------------------------------------------------------
def test_list_shape_and_deliveries(staff, world):
    response = staff.get(f"{API}/messages/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results", "next"}
    assert body["next"] is None
    by_id = {m["msg_id"]: m for m in body["results"]}
    assert set(by_id) == {world.committed, world.dead, world.half, world.rolled_back, world.discarded}
    dead = by_id[world.dead]
    assert set(dead) == {
        "msg_id",
        "topic",
        "tag",
        "keys",
        "state",
        "check_times",
        "producer_group",
        "created_at",
        "resolved_at",
        "message_group",
        "deliver_at",
        "deliveries",
    }
    assert dead["keys"] == ["order-dead"] and dead["state"] == "COMMITTED" and dead["tag"] == "pay"
    assert [d["consumer_group"] for d in dead["deliveries"]] == list(ALL_GROUPS)
    first = dead["deliveries"][0]
    assert set(first) == {"consumer_group", "status", "attempts", "next_attempt_at", "last_error"}
    assert first["status"] == "DEAD" and "planned failure" in first["last_error"]
    assert by_id[world.discarded]["check_times"] == 1 and by_id[world.discarded]["deliveries"] == []
    # Newest first.
    assert [m["msg_id"] for m in body["results"]] == sorted(by_id, reverse=True)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "HALF"}, {"half"}),
        ({"state": "DISCARDED"}, {"discarded"}),
        ({"state": "COMMITTED"}, {"committed", "dead"}),
        ({"topic": "test_topic"}, {"committed", "dead", "half", "rolled_back", "discarded"}),
        ({"topic": "nope"}, set()),
        ({"key": "order-dead"}, {"dead"}),
        ({"key": "order-unknown"}, set()),
        ({"producer_group": "test_producer_group", "state": "ROLLED_BACK"}, {"rolled_back"}),
        ({"consumer_group": "test_pay_group"}, {"committed", "dead"}),
        ({"delivery_status": "DEAD"}, {"dead"}),
        ({"consumer_group": "test_all_group", "delivery_status": "SUCCEEDED"}, {"committed"}),
    ],
)
def test_list_filters(staff, world, query, expected):
    response = staff.get(f"{API}/messages/", query)
    assert response.status_code == 200, response.content
    assert {m["msg_id"] for m in response.json()["results"]} == {getattr(world, n) for n in expected}


def test_since_and_until(staff, world):
    Message.objects.filter(pk=world.half).update(created_at=timezone.now() - timedelta(days=3))
    since = (timezone.now() - timedelta(days=1)).isoformat()
    ids = {m["msg_id"] for m in staff.get(f"{API}/messages/", {"since": since}).json()["results"]}
    assert world.half not in ids and world.dead in ids
    ids = {m["msg_id"] for m in staff.get(f"{API}/messages/", {"until": since}).json()["results"]}
    assert ids == {world.half}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-45"}, "until"),
        ({"state": "LOST"}, "state"),
        ({"delivery_status": "MAYBE"}, "delivery_status"),
        ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, "until"),
    ],
)
def test_bad_filters_are_400_naming_the_field(staff, world, query, field):
    response = staff.get(f"{API}/messages/", query)
    assert response.status_code == 400
    assert field in response.json()


def test_cursor_pagination_walks_every_message_once(staff, world):
    seen = []
    url = f"{API}/messages/?page_size=2"
    while url:
        body = staff.get(url).json()
        assert len(body["results"]) <= 2
        seen += [m["msg_id"] for m in body["results"]]
        url = body["next"]
    assert len(seen) == 5 == len(set(seen))
    assert staff.get(f"{API}/messages/", {"cursor": "garbage"}).status_code == 404


@pytest.mark.parametrize(
    ("url", "position"),
    [
        *((f"{API}/messages/", p) for p in ("abc", "1", "\x00")),
        *((f"{API}/dead-letters/", p) for p in ("abc", "2024-05-01T00:00:00Z", "\x00")),
    ],
)
def test_a_forged_cursor_position_is_404_not_500(staff, world, url, position):
    # A cursor is base64 of a query string; "p" is a value of the first ordering field
    # (created_at for messages, id for dead letters), which DRF filters on unchecked.
    cursor = base64.b64encode(urlencode({"p": position}).encode()).decode()
    response = staff.get(url, {"cursor": cursor})
    assert response.status_code == 404, response.content[:300]
    assert response.json() == {"detail": "Invalid cursor"}


@pytest.mark.parametrize("page_size", ["0", "-1", "1.5", "\u00b2", "abc"])
def test_a_page_size_that_is_not_a_positive_ascii_integer_is_400(staff, world, page_size):
    response = staff.get(f"{API}/messages/", {"page_size": page_size})
    assert response.status_code == 400
    assert list(response.json()) == ["page_size"]


def test_detail_has_body_properties_deliveries_and_trace(staff, world):
    body = staff.get(f"{API}/messages/{world.dead}/").json()
    assert body["body"] == {"key": "order-dead"}
    assert body["properties"] == {}
    assert len(body["deliveries"]) == 3
    trace = body["trace"]
    assert {"at", "event", "detail", "actor"} <= set(trace[0])
    assert [e["event"] for e in trace][:3] == ["HALF_STORED", "LOCAL_TRANSACTION", "COMMITTED"]
    assert trace.count(trace[0]) == 1 and "DEAD" in [e["event"] for e in trace]


@pytest.mark.parametrize("msg_id", ["ffffffffffffffffffffffffffffffff", "%00", "a%00b", "x" * 40])
def test_missing_message_is_404_json(staff, world, msg_id):
    # "%00": a NUL, which PostgreSQL text cannot hold, was a database error (500).
    for method, url in [
        ("get", f"{API}/messages/{msg_id}/"),
        ("post", f"{API}/messages/{msg_id}/replay/"),
        ("post", f"{API}/messages/{msg_id}/resume/"),
        ("post", f"{API}/messages/{msg_id}/commit/"),
        ("post", f"{API}/messages/{msg_id}/rollback/"),
    ]:
        response = getattr(staff, method)(url, {}, format="json")
        assert response.status_code == 404, url
        assert "no message with id" in response.json()["detail"]


# --- acting ------------------------------------------------------------------------------
def test_replay_all_groups_then_one_group_then_forced(staff, world):
    response = staff.post(f"{API}/messages/{world.dead}/replay/", {}, format="json")
    assert response.status_code == 202
    assert response.json() == {"msg_id": world.dead, "replayed": 3}
    assert set(deliveries(world.dead).values()) == {"PENDING"}
    assert set(
        TraceEvent.objects.filter(message_id=world.dead, event="REPLAY").values_list("actor", flat=True)
    ) == {"operator"}

    response = staff.post(
        f"{API}/messages/{world.committed}/replay/", {"consumer_group": "test_pay_group"}, format="json"
    )
    assert response.status_code == 202 and response.json()["replayed"] == 0  # SUCCEEDED needs force
    response = staff.post(
        f"{API}/messages/{world.committed}/replay/",
        {"consumer_group": "test_pay_group", "force": True},
        format="json",
    )
    assert response.json()["replayed"] == 1
    assert deliveries(world.committed) == {
        "test_all_group": "SUCCEEDED",
        "test_pay_group": "PENDING",
        "test_refund_group": "SUCCEEDED",
    }


def test_replay_refusals_are_409_and_bad_bodies_400(staff, world):
    response = staff.post(f"{API}/messages/{world.half}/replay/", {}, format="json")
    assert response.status_code == 409 and "only COMMITTED" in response.json()["detail"]
    response = staff.post(f"{API}/messages/{world.dead}/replay/", {"consumer_group": "nobody"}, format="json")
    assert response.status_code == 409 and "no delivery to consumer group" in response.json()["detail"]
    response = staff.post(f"{API}/messages/{world.dead}/replay/", {"force": "perhaps"}, format="json")
    assert response.status_code == 400 and "force" in response.json()
    response = staff.post(f"{API}/messages/{world.dead}/replay/", "not json", content_type="application/json")
    assert response.status_code == 400
    assert set(deliveries(world.dead).values()) == {"DEAD"}


def test_resume_is_202_for_discarded_and_409_otherwise(staff, world):
    response = staff.post(f"{API}/messages/{world.discarded}/resume/")
    assert response.status_code == 202
    assert response.json() == {"msg_id": world.discarded, "state": "HALF"}
    message = Message.objects.get(pk=world.discarded)
    assert (message.state, message.check_times) == ("HALF", 0)
    assert TraceEvent.objects.filter(message_id=world.discarded, event="RESUMED", actor="operator").exists()

    for msg_id in (world.discarded, world.committed, world.half, world.rolled_back):
        response = staff.post(f"{API}/messages/{msg_id}/resume/")
        assert response.status_code == 409, msg_id
        assert "only DISCARDED messages resume" in response.json()["detail"]


def test_commit_and_rollback_by_hand(staff, world):
    response = staff.post(f"{API}/messages/{world.half}/commit/")
    assert response.status_code == 202 and response.json()["state"] == "COMMITTED"
    assert set(deliveries(world.half)) == set(ALL_GROUPS)
    assert staff.post(f"{API}/messages/{world.half}/rollback/").status_code == 409
    assert Message.objects.get(pk=world.half).state == "COMMITTED"


def test_dead_letters_list_filter_and_bulk_replay(staff, world, broker_setting):
    refund_only = operator_data.make_dead("order-dead-refund", broker_setting, tag="refund")
    body = staff.get(f"{API}/dead-letters/").json()
    assert set(body) == {"results", "next"}
    assert len(body["results"]) == 5
    letter = body["results"][0]
    assert set(letter) == {"id", "consumer_group", "attempts", "last_error", "died_at", "message"}
    assert letter["message"]["msg_id"] == refund_only and letter["message"]["body"] == {
        "key": "order-dead-refund"
    }
    assert "planned failure" in letter["last_error"]

    refund = staff.get(f"{API}/dead-letters/", {"consumer_group": "test_refund_group"}).json()["results"]
    assert {d["message"]["msg_id"] for d in refund} == {world.dead, refund_only}
    assert staff.get(f"{API}/dead-letters/", {"consumer_group": "nobody"}).json()["results"] == []

    dry = staff.post(
        f"{API}/dead-letters/replay/", {"consumer_group": "test_refund_group", "dry_run": True}, format="json"
    )
    assert dry.status_code == 202 and dry.json() == {"replayed": 2, "dry_run": True}
    assert Delivery.objects.filter(status="DEAD").count() == 5

    done = staff.post(f"{API}/dead-letters/replay/", {"consumer_group": "test_refund_group"}, format="json")
    assert done.json() == {"replayed": 2, "dry_run": False}
    assert Delivery.objects.filter(status="DEAD").count() == 3
    assert staff.post(f"{API}/dead-letters/replay/", {"since": "soon"}, format="json").status_code == 400


@pytest.fixture
def idle_group() -> Iterator[str]:
    """A consumer group registered for this test only, with no delivery."""
    from txbroker.registry import registry

    def handler(message) -> None:
        raise AssertionError("never delivered")

    registry.register_consumer(topic="test_idle_topic", group="test_idle_group", handler=handler)
    yield "test_idle_group"
    registry.unregister_consumer(topic="test_idle_topic", group="test_idle_group")


def test_stats_shape(staff, world, idle_group):
    body = staff.get(f"{API}/stats/").json()
    assert body["messages"] == {"HALF": 1, "COMMITTED": 2, "ROLLED_BACK": 1, "DISCARDED": 1}
    # Every registered consumer group is there, with zeros when it has no delivery yet.
    assert {*ALL_GROUPS, idle_group} <= set(body["deliveries"])
    assert body["deliveries"][idle_group]["SUCCEEDED"] == 0
    for group in ALL_GROUPS:
        counts = body["deliveries"][group]
        assert set(counts) == {
            "PENDING",
            "RUNNING",
            "RETRY",
            "SUCCEEDED",
            "DEAD",
            "lag",
            "oldest_pending_age_seconds",
        }
        assert (counts["SUCCEEDED"], counts["DEAD"], counts["lag"]) == (1, 1, 0)
        assert counts["oldest_pending_age_seconds"] == 0

    staff.post(f"{API}/messages/{world.dead}/replay/", {}, format="json")
    Delivery.objects.filter(message_id=world.dead).update(created_at=timezone.now() - timedelta(minutes=5))
    counts = staff.get(f"{API}/stats/").json()["deliveries"]["test_pay_group"]
    assert (counts["PENDING"], counts["DEAD"], counts["lag"]) == (1, 0, 1)
    assert 299 < counts["oldest_pending_age_seconds"] < 330


# --- the schema --------------------------------------------------------------------------
def test_every_endpoint_is_in_the_openapi_schema(client, db):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    expected = {
        f"{API}/messages/": {"get"},
        f"{API}/messages/{{msg_id}}/": {"get"},
        f"{API}/messages/{{msg_id}}/replay/": {"post"},
        f"{API}/messages/{{msg_id}}/resume/": {"post"},
        f"{API}/messages/{{msg_id}}/commit/": {"post"},
        f"{API}/messages/{{msg_id}}/rollback/": {"post"},
        f"{API}/dead-letters/": {"get"},
        f"{API}/dead-letters/replay/": {"post"},
        f"{API}/stats/": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    listing = paths[f"{API}/messages/"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {
        "state",
        "topic",
        "key",
        "producer_group",
        "consumer_group",
        "delivery_status",
        "since",
        "until",
        "cursor",
    } <= names
    assert set(paths[f"{API}/messages/{{msg_id}}/replay/"]["post"]["responses"]) >= {"202", "404", "409"}
    assert set(paths[f"{API}/messages/{{msg_id}}/resume/"]["post"]["responses"]) >= {"202", "409"}
    components = schema["components"]["schemas"]
    assert set(components["Stats"]["properties"]) == {"messages", "deliveries"}
    assert set(components["PaginatedMessageList"]["properties"]) == {"results", "next"}
