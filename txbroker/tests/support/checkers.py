from __future__ import annotations

import time

from txbroker import LocalTransactionState, MessageView, TransactionProducer

from .models import LocalRecord, Plan

PRODUCER_GROUP = "test_producer_group"


def check(message: MessageView) -> LocalTransactionState:
    plan = Plan.objects.filter(key=message.key).first()
    answer = plan.check_answer if plan else ""
    if answer == "RAISE":
        raise RuntimeError("checker exploded on purpose")
    if answer == "BLOCK":
        time.sleep(60)
    elif answer == "LOCK":
        Plan.objects.select_for_update().filter(pk=plan.pk).exists()
    elif answer == "SLEEP":
        from .consumers import note_attempt

        Plan.objects.select_for_update().filter(pk=plan.pk).exists()
        note_attempt(message.key, "checker")
        time.sleep(plan.sleep_seconds)
    elif answer:
        return LocalTransactionState(answer)
    if LocalRecord.objects.filter(key=message.key).exists():
        return LocalTransactionState.COMMIT
    return LocalTransactionState.ROLLBACK


producer = TransactionProducer(PRODUCER_GROUP, checker=check)
