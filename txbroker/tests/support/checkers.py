from __future__ import annotations

from txbroker import LocalTransactionState, MessageView, TransactionProducer

from .models import LocalRecord, Plan

PRODUCER_GROUP = "test_producer_group"


def check(message: MessageView) -> LocalTransactionState:
    plan = Plan.objects.filter(key=message.key).first()
    if plan and plan.check_answer == "RAISE":
        raise RuntimeError("checker exploded on purpose")
    if plan and plan.check_answer:
        return LocalTransactionState(plan.check_answer)
    if LocalRecord.objects.filter(key=message.key).exists():
        return LocalTransactionState.COMMIT
    return LocalTransactionState.ROLLBACK


producer = TransactionProducer(PRODUCER_GROUP, checker=check)
