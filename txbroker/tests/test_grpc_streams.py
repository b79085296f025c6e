"""The telemetry streams a txbroker_grpc process holds: which one a check-back goes to."""

from __future__ import annotations

from txbroker.grpcapi.clients import Stream, Streams
from txbroker.grpcapi.protocol import Caller

PRODUCER = "PRODUCER"


def stream(streams: Streams, client_id: str, *groups: str) -> Stream:
    held = Stream(Caller(client_id=client_id, address="127.0.0.1:1", agent="PYTHON"))
    held.kind, held.groups = PRODUCER, frozenset(groups)
    streams.attach(held)
    return held


def test_checks_go_to_a_producer_known_to_answer_them_else_round_robin():
    streams = Streams()
    plain, checker = stream(streams, "plain", "orders"), stream(streams, "checker", "orders")
    assert {streams.pick("orders", PRODUCER).who.client_id for _ in range(4)} == {"plain", "checker"}

    streams.add_group("checker", "orders")  # it sent a transactional message to orders
    assert {streams.pick("orders", PRODUCER).who.client_id for _ in range(4)} == {"checker"}

    checker.closed.set()  # its stream ended: the other one is asked
    assert streams.pick("orders", PRODUCER) is plain
    assert streams.pick("billing", PRODUCER) is None


def test_a_reconnecting_client_replaces_its_old_stream():
    streams = Streams()
    old = stream(streams, "c1", "orders")
    new = stream(streams, "c1", "orders")
    assert old.closed.is_set() and not new.closed.is_set()
    assert not streams.detach(old)  # the old one's end leaves the new one in place
    assert streams.held("c1") and streams.pick("orders", PRODUCER) is new
    assert streams.detach(new) and not streams.held("c1")
