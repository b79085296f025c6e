"""The examples the schema gives for every parameter and request body, so that Swagger UI's
"Try it out" fills in a request that executes as is (config.openapi.AutoSchema adds them).

They live in one place because they chain across apps: the order that ``POST /api/orders/``
creates (``ORDER-1001``, 99.90) is the one ``POST /api/payments/`` pays, and the one the
detail, cancel and refund paths name; and txbroker's operator API stays free of this
project's names (topics, groups). ``config/tests/test_schema_examples.py`` runs every
operation with these examples and expects none to be refused as invalid (400)."""

from __future__ import annotations

from typing import Any

EXAMPLE_ORDER_ID = "ORDER-1001"
EXAMPLE_AMOUNT = "99.90"
# The demo superuser of `make run` (Makefile: DEMO_USER, DEMO_PASSWORD).
EXAMPLE_USERNAME = "admin"
EXAMPLE_PASSWORD = "admin-demo-password"  # noqa: S105 (the demo's, documented)
EXAMPLE_PHONE = "+8613800138000"
EXAMPLE_PHONE_CODE = "123456"
# A message id has the shape of txbroker.ids.new_msg_id (32 hex digits); this one names no
# message until one is made with it (the test does), so on a fresh site it answers 404.
EXAMPLE_MSG_ID = "019acb3f5e2a4d7c9b1e0f3a6c8d2e4b"
EXAMPLE_CONSUMER_GROUP = "points_consumer_group"

# By parameter name: the same name means the same thing in every operation.
PARAMETER_EXAMPLES: dict[str, Any] = {
    "order_id": EXAMPLE_ORDER_ID,
    "msg_id": EXAMPLE_MSG_ID,
    "page": 1,
    "page_size": 20,
    "state": "COMMITTED",
    "topic": "payment_success_topic",
    "key": EXAMPLE_ORDER_ID,
    "producer_group": "payment_producer_group",
    "consumer_group": EXAMPLE_CONSUMER_GROUP,
    "delivery_status": "SUCCEEDED",
    "since": "2026-01-01T00:00:00Z",
    "until": "2036-01-01T00:00:00Z",
    "message_group": EXAMPLE_ORDER_ID,
    # A gRPC client's group: a producer's topic, or a consumer group.
    "group": "order-events",
}
# No example: a cursor is opaque, only ever taken from the previous page's `next` link.
PARAMETERS_WITHOUT_EXAMPLE = {"cursor"}

# By the request body's component name.
BODY_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "TokenRequest": (
        "The demo superuser of `make run`",
        {"username": EXAMPLE_USERNAME, "password": EXAMPLE_PASSWORD},
    ),
    "OrderCreate": ("An order of 99.90", {"order_id": EXAMPLE_ORDER_ID, "amount": EXAMPLE_AMOUNT}),
    "PaymentRequest": (
        "Pay that order, approved by the simulated gateway",
        {"order_id": EXAMPLE_ORDER_ID, "amount": EXAMPLE_AMOUNT, "payment_method": "sim_approve"},
    ),
    "RefundRequest": ("A refund with a reason", {"reason": "The customer changed their mind"}),
    "Phone": ("A mobile number", {"phone": EXAMPLE_PHONE}),
    "PhoneCode": (
        "The code in the SMS (the console SMS backend prints it in the web process's log)",
        {"code": EXAMPLE_PHONE_CODE},
    ),
    "ReplayRequest": (
        "Replay one group's delivery",
        {"consumer_group": EXAMPLE_CONSUMER_GROUP, "force": False},
    ),
    "SkipRequest": ("Skip that group's DEAD delivery", {"consumer_group": EXAMPLE_CONSUMER_GROUP}),
    "DeadLetterReplayRequest": (
        "Count one group's dead letters, replaying nothing",
        {"consumer_group": EXAMPLE_CONSUMER_GROUP, "dry_run": True},
    ),
}
