"""Consumer groups that subscribe over gRPC (RocketMQ 5 clients): their subscriptions, and
the deliveries a commit creates for them.

A remote group is a consumer group of txbroker like a Django one: a commit creates one
delivery per subscribed group, in the commit's own statement or transaction. Its
deliveries carry ``remote = True``: gRPC clients receive them (txbroker.remote_deliveries),
Celery workers never claim them.

Cost: a commit must not pay a query to learn the remote subscriptions (issue 13 counts
statements per payment). Each process keeps them in memory and reads them again at most
every TXBROKER_GRPC_SUBSCRIPTION_REFRESH seconds (one SELECT, shared by every commit in
that time). A group that subscribed less than that ago may so miss messages that other
processes committed meanwhile: as in RocketMQ, where a new consumer group starts at the
latest offset, a group receives what is committed once it is known. The process that
records a subscription forgets its copy at once.

FIFO groups (TXBROKER_GRPC_FIFO_GROUPS, or a client that says so) keep the ordering rule
of txbroker.ordering; a group that is not FIFO receives ordered messages unordered, as
RocketMQ's consumers of a non-FIFO group do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Optional

from django.db.models.functions import Now

from txbroker.conf import txsettings
from txbroker.db import broker_db
from txbroker.exceptions import ConfigurationError
from txbroker.models import Delivery, Message, RemoteSubscription
from txbroker.registry import _check_name, parse_tag_expression


@dataclass(frozen=True)
class RemoteGroup:
    topic: str
    group: str
    tags: Optional[frozenset[str]]
    fifo: bool

    def accepts(self, tag: str) -> bool:
        return self.tags is None or tag in self.tags


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_topic: dict[str, list[RemoteGroup]] = {}
        self.read_at: Optional[float] = None

    def forget(self) -> None:
        with self.lock:
            self.read_at = None

    def groups(self, topic: str) -> list[RemoteGroup]:
        with self.lock:
            stale = (
                self.read_at is None
                or time.monotonic() - self.read_at >= txsettings.GRPC_SUBSCRIPTION_REFRESH
            )
            if stale:
                by_topic: dict[str, list[RemoteGroup]] = {}
                rows = RemoteSubscription.objects.using(broker_db()).values_list(
                    "topic", "consumer_group", "tag_expression", "fifo"
                )
                for sub_topic, group, expression, fifo in rows:
                    try:
                        tags = parse_tag_expression(expression)
                    except ConfigurationError:
                        continue  # refused when recorded; never matches
                    by_topic.setdefault(sub_topic, []).append(RemoteGroup(sub_topic, group, tags, fifo))
                self.by_topic, self.read_at = by_topic, time.monotonic()
            return self.by_topic.get(topic, [])


_cache = _Cache()


def forget_subscriptions() -> None:
    """Read the remote subscriptions again at the next commit (tests; a new subscription)."""
    _cache.forget()


def remote_subscribers(topic: str, tag: str) -> list[RemoteGroup]:
    """Remote groups subscribed to ``topic`` whose tag expression accepts ``tag``."""
    return sorted((g for g in _cache.groups(topic) if g.accepts(tag)), key=lambda g: g.group)


def remote_deliveries_for(message: Message, *, taken: set[str], extra: dict) -> list[Delivery]:
    """The remote groups' deliveries of ``message`` (see ``deliveries_for``), but for
    groups in ``taken`` (a Django consumer group of the same name consumes the topic: it
    wins, a group has one delivery per message)."""
    deliveries = []
    for group in remote_subscribers(message.topic, message.tag):
        if group.group in taken:
            continue
        fields = dict(extra)
        if not group.fifo:
            fields.pop("message_group", None)
            fields.pop("sequence", None)
        deliveries.append(
            Delivery(message_id=message.msg_id, consumer_group=group.group, remote=True, **fields)
        )
    return deliveries


def backoff_for(subscription: RemoteSubscription, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based; the last delay repeats)."""
    delays = subscription.backoff or list(txsettings.GRPC_BACKOFF)
    return float(delays[min(max(attempt, 1), len(delays)) - 1])


def subscription_record(
    *,
    group: str,
    topic: str,
    expression: str,
    client: str,
    fifo: bool = False,
    max_attempts: Optional[int] = None,
    backoff: Optional[list[float]] = None,
) -> RemoteSubscription:
    """Record (or update) that remote ``group`` consumes ``topic`` with the TAG
    ``expression``; returns the row, whose backoff and max attempts the group's clients
    are told. Raises ConfigurationError (nothing written) on a bad name or expression."""
    _check_name("topic", topic)
    _check_name("consumer group", group)
    expression = (expression or "*").strip()
    parse_tag_expression(expression)
    fifo = fifo or group in txsettings.GRPC_FIFO_GROUPS
    values = {
        "tag_expression": expression,
        "fifo": fifo,
        "max_attempts": max_attempts or txsettings.GRPC_MAX_ATTEMPTS,
        "backoff": list(backoff or txsettings.GRPC_BACKOFF),
        "client_id": client[:255],
        "updated_at": Now(),
    }
    subscription, _ = RemoteSubscription.objects.using(broker_db()).update_or_create(
        consumer_group=group, topic=topic, defaults=values
    )
    forget_subscriptions()
    return RemoteSubscription.objects.using(broker_db()).get(pk=subscription.pk)


def subscription_for(group: str, topic: str) -> Optional[RemoteSubscription]:
    return RemoteSubscription.objects.using(broker_db()).filter(consumer_group=group, topic=topic).first()
