"""``messages_with_key``: how a producer finds what became of the messages it sent for one
business key (the payments app's reconciliation asks it before sending again)."""

from __future__ import annotations

import pytest

from txbroker import LocalTransactionState, StoredMessage, messages_with_key
from txbroker.tests.helpers import send
from txbroker.tests.support.checkers import PRODUCER_GROUP

pytestmark = pytest.mark.django_db(transaction=True)


def test_messages_with_key_newest_first_with_their_states_and_properties():
    rolled_back = send("order-7", answer=LocalTransactionState.ROLLBACK, properties={"attempt": "1"})
    half = send("order-7", answer=LocalTransactionState.UNKNOWN, properties={"attempt": "2"})
    send("order-8")

    found = messages_with_key("order-7")

    assert [(m.msg_id, m.state, m.properties) for m in found] == [
        (half.msg_id, "HALF", {"attempt": "2"}),
        (rolled_back.msg_id, "ROLLED_BACK", {"attempt": "1"}),
    ]
    assert all(isinstance(m, StoredMessage) and m.key == "order-7" for m in found)
    assert [m.msg_id for m in messages_with_key("order-7", producer_group=PRODUCER_GROUP)] == [
        half.msg_id,
        rolled_back.msg_id,
    ]
    assert messages_with_key("order-7", producer_group="another_group") == []
    assert messages_with_key("order-9") == []
