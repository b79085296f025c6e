"""Celery's broker: its URL and the settings that depend on which broker it is.

``filesystem://`` (the embedded default), ``redis://`` or ``amqp://`` (RabbitMQ). Tasks are
only wake-ups on every broker: the database holds every delivery and every HALF message,
and the sweep re-enqueues whatever is due, so a lost, duplicated or redelivered task never
loses or doubles a delivery. The choices below are about latency and noise, not safety.
"""

from __future__ import annotations

from config.settings.environment import VAR_DIR, env

CELERY_QUEUE_DIR = VAR_DIR / "celery"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
if CELERY_BROKER_URL.rstrip("/") == "filesystem:":
    # kombu warns "No hostname was supplied" on every connection to a URL without a host
    # (web, worker, beat, commands); the filesystem transport ignores the host anyway.
    CELERY_BROKER_URL = "filesystem://localhost//"
_amqp = CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://"))

# The queue tasks go to and workers consume, and the exchanges of remote control (inspect,
# ping) and events. One variable names all three, so that two deployments (or a test
# run) sharing a RabbitMQ virtual host neither consume nor ping each other's.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="celery")
CELERY_CONTROL_EXCHANGE = CELERY_TASK_DEFAULT_QUEUE
CELERY_EVENT_EXCHANGE = f"{CELERY_TASK_DEFAULT_QUEUE}ev"

if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue = CELERY_QUEUE_DIR / "queue"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
        "store_processed": False,
        # The folder is polled (kombu's default: every second, which was most of a delivery's
        # latency in the embedded bench); listing a small folder ten times a second is cheap.
        "polling_interval": env.float("CELERY_FILESYSTEM_POLLING_INTERVAL", default=0.1),
    }
elif _amqp:
    # Publisher confirms: a publish returns once RabbitMQ has the message, so a wake-up is
    # not lost in a socket buffer when RabbitMQ goes away (one round trip per publish; with
    # coalesced wake-ups that is one per batch under load, not one per payment).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
    # A classic durable queue, Celery's default, on purpose: quorum queues replicate across
    # a cluster's nodes, which buys nothing for messages that carry no data (a wake-up lost
    # with a node is replaced by the next commit or the sweep), while they refuse global
    # QoS (Celery then turns it off, worker_detect_quorum_queues) and make Celery move
    # countdown/ETA tasks to native delayed delivery.
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "classic"
    # Heartbeats every 30 s (Celery's default is 120): a worker frozen or cut off is dropped
    # by RabbitMQ within about a minute, and its unacknowledged wake-up goes back to the
    # queue. Workers send them; a web process only publishes, and kombu reconnects its
    # publishing connection when RabbitMQ has closed it in the meantime.
    CELERY_BROKER_HEARTBEAT = env.int("CELERY_BROKER_HEARTBEAT", default=30)
    # When a worker loses its connection, a running delivery task finishes its batch (its
    # late ack is lost with the channel, so RabbitMQ redelivers the wake-up: one spare
    # claim query). Cancelling it instead would leave its claims to the sweep.
    CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
    # RabbitMQ closes a channel holding one unacknowledged message longer than its
    # consumer_timeout (30 min by default): every task's hard time limit (300 s) is far
    # below it, so acks_late never trips it.
else:
    # Tasks are only wake-ups: the database holds every delivery, and the sweep re-enqueues
    # what is due. So Redis redelivering an unacknowledged task is never needed for
    # correctness; the timeout only has to exceed the longest task (the hard time limit
    # below) so that Redis does not hand a running task to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
