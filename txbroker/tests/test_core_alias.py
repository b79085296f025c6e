"""txbroker's tables on their own database alias (TXBROKER_DATABASE), as a real broker
would keep them: messages and deliveries there, the domain's writes on ``default``."""

from __future__ import annotations

import pytest
from django.db import connections

from txbroker import delivery
from txbroker.checkback import check_pass
from txbroker.models import Delivery, Message
from txbroker.tests.helpers import send
from txbroker.tests.support.models import Effect, LocalRecord

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "txbroker"])


def test_messages_live_on_the_broker_alias_and_effects_on_default(broker_env, broker_setting):
    broker_setting("TXBROKER_DATABASE", "txbroker")
    assert connections["txbroker"].settings_dict["NAME"] != connections["default"].settings_dict["NAME"]

    committed = send("alias-1", tag="pay")
    unknown = send("alias-2", tag="other", answer="UNKNOWN")
    assert committed.message_state == "COMMITTED"

    assert Message.objects.using("txbroker").count() == 2
    assert Message.objects.using("default").count() == 0
    assert Delivery.objects.using("txbroker").count() == 3
    assert LocalRecord.objects.using("default").count() == 2

    report = delivery.deliver_due(budget_seconds=5)
    assert report.succeeded == 3
    assert set(Effect.objects.using("default").filter(key="alias-1").values_list("count", flat=True)) == {1}

    Message.objects.using("txbroker").filter(pk=unknown.msg_id).update(next_check_at="2000-01-01T00:00Z")
    assert check_pass().outcomes == {"COMMITTED": 1}  # the checker read ``default``
    assert Message.objects.using("txbroker").get(pk=unknown.msg_id).state == "COMMITTED"
