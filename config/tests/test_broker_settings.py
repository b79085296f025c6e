"""Celery's settings follow the broker (config/settings/broker.py): RabbitMQ's chosen ones
on an ``amqp://`` URL, Redis's visibility timeout on ``redis://``, the filesystem folders
in the embedded mode; ``CELERY_QUEUE`` names the queue and the control exchange."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from txbroker.tests.processes import ROOT

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
READ_CONF = (
    "import json; from config.celery import app; c = app.conf; print(json.dumps({k: c[k] for k in ("
    "'broker_transport_options', 'broker_heartbeat', 'task_default_queue', 'task_default_queue_type',"
    "'control_exchange', 'event_exchange', 'task_acks_late', 'worker_prefetch_multiplier',"
    "'task_reject_on_worker_lost', 'broker_connection_retry_on_startup',"
    "'worker_cancel_long_running_tasks_on_connection_loss')}, default=str))"
)


def celery_conf(**env: str) -> dict:
    child = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "DJANGO_"))}
    child.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_DEBUG": "1", **env})
    result = subprocess.run(
        [sys.executable, "-c", READ_CONF], cwd=ROOT, env=child, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_rabbitmq_gets_confirms_heartbeats_a_classic_queue_and_late_acks_one_at_a_time():
    conf = celery_conf(CELERY_BROKER_URL=AMQP_URL)
    assert conf["broker_transport_options"] == {"confirm_publish": True}
    assert conf["broker_heartbeat"] == 30
    assert conf["task_default_queue_type"] == "classic"
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert (conf["task_default_queue"], conf["control_exchange"]) == ("celery", "celery")


def test_redis_keeps_its_visibility_timeout_and_the_queue_name_comes_from_the_environment():
    conf = celery_conf(CELERY_BROKER_URL="redis://127.0.0.1:6379/0", CELERY_QUEUE="shop-a")
    assert conf["broker_transport_options"] == {"visibility_timeout": 600}
    assert conf["broker_heartbeat"] == 120  # Celery's default: Redis has no AMQP heartbeats
    assert conf["task_default_queue"] == conf["control_exchange"] == "shop-a"
    assert conf["event_exchange"] == "shop-aev"


def test_the_embedded_mode_keeps_its_queue_folders():
    conf = celery_conf()
    assert set(conf["broker_transport_options"]) >= {"data_folder_in", "data_folder_out", "control_folder"}


def test_deploy_check_warns_when_the_cache_is_per_process(settings):
    """With RabbitMQ and no REDIS_URL the throttle counters would live in each web process:
    `check --deploy` says so; a shared cache (Redis) passes."""
    from config.serving import check_shared_cache

    settings.DEBUG = False
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert [m.id for m in check_shared_cache()] == ["config.W002"]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/15",
        }
    }
    assert check_shared_cache() == []
