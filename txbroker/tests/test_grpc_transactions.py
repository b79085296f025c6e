"""Transactional messages from the official RocketMQ 5 Python client: its Transaction
commits and rolls back txbroker's half messages, and a half message whose producer went away
is checked back through another live producer of its group (its topic), whose
TransactionChecker answers over the protocol."""

from __future__ import annotations

import sys
import textwrap
import threading

import pytest
from django.db.models.functions import Now
from rocketmq import TransactionChecker, TransactionResolution

from txbroker import checkback
from txbroker.grpcapi.models import GrpcClient
from txbroker.models import Message, TraceEvent
from txbroker.producer import store_half
from txbroker.tests.processes import start_grpc, wait_for
from txbroker.tests.test_grpc_producer import message, producer
from txbroker.types import OutgoingMessage

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

Event = TraceEvent.Event


class Recording(TransactionChecker):
    """Answers ``resolution`` to every check and remembers which messages it was asked about."""

    def __init__(self, resolution=TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED) -> None:
        self.resolution = resolution
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def check(self, message):
        with self.lock:
            self.asked.append(message.message_id)
        return self.resolution


def state_of(msg_id: str) -> str:
    return Message.objects.values_list("state", flat=True).get(pk=msg_id)


def test_a_transaction_commits_its_half_message(grpc_server):
    with producer(grpc_server, "grpc-payments", checker=Recording()) as client:
        transaction = client.begin_transaction()
        receipt = client.send(message("grpc-payments", b'{"payment":1}', key="pay-1"), transaction)
        assert state_of(receipt.message_id) == Message.State.HALF
        transaction.commit()

    stored = Message.objects.get(pk=receipt.message_id)
    assert stored.state == Message.State.COMMITTED
    assert stored.producer_group == "grpc-payments"
    answers = list(stored.trace.filter(event=Event.LOCAL_TRANSACTION).values_list("detail", flat=True))
    assert answers and answers[-1].startswith("COMMIT (gRPC client")
    assert stored.trace.filter(event=Event.COMMITTED, detail__startswith="by producer").exists()


def test_a_rolled_back_transaction_cannot_be_committed_after(grpc_server):
    with producer(grpc_server, "grpc-payments", checker=Recording()) as client:
        transaction = client.begin_transaction()
        receipt = client.send(message("grpc-payments", b'{"payment":2}'), transaction)
        transaction.rollback()
        assert state_of(receipt.message_id) == Message.State.ROLLED_BACK
        # Settled otherwise: refused with RocketMQ's status, and nothing changes.
        with pytest.raises(Exception, match="ROLLED_BACK"):
            transaction.commit()

    assert state_of(receipt.message_id) == Message.State.ROLLED_BACK
    assert not Message.objects.get(pk=receipt.message_id).deliveries.exists()


ORPHAN = textwrap.dedent(
    """
    import sys, time
    from rocketmq import ClientConfiguration, Credentials, Message, Producer, TransactionChecker

    class Gone(TransactionChecker):
        def check(self, message):
            time.sleep(3600)

    endpoint, access_key, secret, topic = sys.argv[1:5]
    producer = Producer(ClientConfiguration(endpoint, Credentials(access_key, secret)), (topic,), Gone())
    producer.startup()
    message = Message()
    message.topic = topic
    message.body = b'{"order":42}'
    message.keys = "order-42"
    receipt = producer.send(message, producer.begin_transaction())
    print("HALF", receipt.message_id, flush=True)
    time.sleep(3600)
    """
)


def test_a_half_message_whose_producer_died_is_checked_back_through_another_producer(
    grpc_server, processes, tmp_path
):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    server = grpc_server
    orphan = processes(
        "orphan",
        [sys.executable, str(script), server.endpoint, server.access_key, server.secret, "grpc-orders"],
    )
    line = wait_for(
        lambda: next((x for x in orphan.log().splitlines() if x.startswith("HALF ")), None),
        what="half message sent",
    )
    msg_id = line.split()[1]
    orphan.kill()  # it never answers, and its checker is gone with it
    assert state_of(msg_id) == Message.State.HALF

    checker = Recording(TransactionResolution.COMMIT)
    with producer(server, "grpc-orders", checker=checker):
        wait_for(lambda: state_of(msg_id) != Message.State.HALF, timeout=40, what="the check-back settles it")

    stored = Message.objects.get(pk=msg_id)
    assert stored.state == Message.State.COMMITTED
    assert msg_id in checker.asked
    check = stored.trace.filter(event=Event.CHECK).last()
    assert check.detail.startswith(f"check {stored.check_times}/") and "COMMIT (gRPC client" in check.detail
    assert stored.trace.filter(event=Event.COMMITTED, detail__startswith="by check-back").exists()


def test_the_celery_check_pass_leaves_groups_a_grpc_server_streams_to_alone(broker_env):
    half = store_half(
        OutgoingMessage(topic="grpc-remote", body={}, check_immunity_seconds=0), "grpc-remote", "test"
    )
    GrpcClient.objects.create(
        client_id="c1",
        group="grpc-remote",
        kind="PRODUCER",
        stream_process="elsewhere:1",
        stream_seen_at=Now(),
    )

    checkback.check_pass(budget=5)
    assert not half.trace.filter(event=Event.CHECK_SKIPPED).exists()

    # With no live stream anywhere (the process holding it stopped saying so), it is leased
    # and skipped as any group without a checker: not a check.
    GrpcClient.objects.update(stream_seen_at=None)
    checkback.check_pass(budget=5)
    stored = Message.objects.get(pk=half.msg_id)
    assert stored.state == Message.State.HALF and stored.check_times == 0
    assert stored.trace.filter(event=Event.CHECK_SKIPPED).exists()


class Silent(TransactionChecker):
    """Never answers in time: waits until the test lets it go."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def check(self, message):
        self.release.wait(30)
        return TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED


@pytest.mark.parametrize(
    ("checker", "last_check"),
    [(Recording(), "check 2/2: UNKNOWN (gRPC client"), (Silent(), "check 2/2: UNKNOWN (gRPC client")],
    ids=["unknown", "no-answer"],
)
def test_unknown_or_missing_answers_count_until_the_message_is_discarded(
    broker_env, tmp_path, checker, last_check
):
    server = start_grpc(tmp_path, TXBROKER_CHECK_MAX="2", TXBROKER_CHECK_TIMEOUT="1")
    try:
        with producer(server, "grpc-unsure", checker=checker) as client:
            receipt = client.send(message("grpc-unsure", b'{"order":5}'), client.begin_transaction())
            wait_for(
                lambda: state_of(receipt.message_id) == Message.State.DISCARDED, timeout=40, what="discarded"
            )
            if isinstance(checker, Silent):
                checker.release.set()
    finally:
        server.proc.stop()
    stored = Message.objects.get(pk=receipt.message_id)
    assert stored.check_times == 2
    checks = list(stored.trace.filter(event=Event.CHECK).values_list("detail", flat=True))
    assert len(checks) == 2 and checks[-1].startswith(last_check)
    if isinstance(checker, Silent):
        assert "did not answer within 1 s" in checks[-1]
    assert stored.trace.filter(event=Event.DISCARDED).exists()
