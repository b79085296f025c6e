"""Who checks which producer group, and who consumes which topic and tag.

Registration happens in code, at import time of each app's ``checkers.py`` /
``consumers.py`` (autodiscovered in ``TxBrokerConfig.ready``), so every process of the
project (web, worker, beat) knows every checker: any of them can run a check-back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from txbroker.exceptions import ConfigurationError

if TYPE_CHECKING:
    from txbroker.models import LocalTransactionState
    from txbroker.types import ConsumedMessage, MessageView

Checker = Callable[["MessageView"], "LocalTransactionState"]
Handler = Callable[["ConsumedMessage"], None]

# What an ordered consumer group does when a delivery of a message group goes DEAD.
ON_DEAD_SKIP = "skip"  # the message group goes on; the dead letter stays visible
ON_DEAD_BLOCK = "block"  # the message group waits for an operator's replay or skip
ON_DEAD_CHOICES = (ON_DEAD_SKIP, ON_DEAD_BLOCK)

_NAME = re.compile(r"^[A-Za-z0-9_.:%-]{1,255}$")


def parse_tag_expression(expression: str) -> Optional[frozenset[str]]:
    """``"*"`` -> None (every tag); ``"pay || refund"`` -> {"pay", "refund"}."""
    expression = (expression or "*").strip()
    if expression == "*":
        return None
    tags = frozenset(part.strip() for part in expression.split("||"))
    if not tags or "" in tags or "*" in tags:
        raise ConfigurationError(f"bad tag expression {expression!r}: use '*', 'tag' or 'tag1 || tag2'")
    return tags


@dataclass(frozen=True)
class Consumer:
    topic: str
    group: str
    tag_expression: str
    handler: Handler
    max_reconsume_times: Optional[int] = None
    tags: Optional[frozenset[str]] = field(default=None, compare=False)
    on_dead_in_group: str = ON_DEAD_SKIP

    def accepts(self, tag: str) -> bool:
        return self.tags is None or tag in self.tags

    @property
    def name(self) -> str:
        return f"{self.handler.__module__}.{getattr(self.handler, '__qualname__', self.handler)}"


class Registry:
    def __init__(self) -> None:
        self._checkers: dict[str, Checker] = {}
        self._consumers: dict[tuple[str, str], Consumer] = {}

    # --- producer groups ---------------------------------------------------------------
    def register_checker(self, producer_group: str, checker: Checker) -> None:
        _check_name("producer group", producer_group)
        existing = self._checkers.get(producer_group)
        if existing is not None and existing is not checker:
            raise ConfigurationError(
                f"producer group {producer_group!r} already has a checker "
                f"({existing.__module__}.{existing.__qualname__}); a producer group is "
                "used by one kind of transactional message only"
            )
        self._checkers[producer_group] = checker

    def checker_for(self, producer_group: str) -> Optional[Checker]:
        return self._checkers.get(producer_group)

    # --- consumer groups --------------------------------------------------------------
    def register_consumer(
        self,
        *,
        topic: str,
        group: str,
        handler: Handler,
        tags: str = "*",
        max_reconsume_times: Optional[int] = None,
        on_dead_in_group: str = ON_DEAD_SKIP,
    ) -> Consumer:
        _check_name("topic", topic)
        _check_name("consumer group", group)
        if on_dead_in_group not in ON_DEAD_CHOICES:
            raise ConfigurationError(
                f"on_dead_in_group={on_dead_in_group!r}: use {ON_DEAD_SKIP!r} or {ON_DEAD_BLOCK!r}"
            )
        consumer = Consumer(
            topic=topic,
            group=group,
            tag_expression=tags,
            handler=handler,
            max_reconsume_times=max_reconsume_times,
            tags=parse_tag_expression(tags),
            on_dead_in_group=on_dead_in_group,
        )
        existing = self._consumers.get((topic, group))
        if existing is not None and existing.handler is not handler:
            raise ConfigurationError(
                f"consumer group {group!r} already consumes topic {topic!r} with "
                f"{existing.name}; one handler per (topic, group)"
            )
        self._consumers[(topic, group)] = consumer
        return consumer

    def unregister_consumer(self, *, topic: str, group: str) -> None:
        self._consumers.pop((topic, group), None)

    def unregister_checker(self, producer_group: str) -> None:
        self._checkers.pop(producer_group, None)

    def consumer_for(self, topic: str, group: str) -> Optional[Consumer]:
        return self._consumers.get((topic, group))

    def subscribers(self, topic: str, tag: str) -> list[Consumer]:
        """Consumer groups that must receive a message of this topic and tag."""
        return sorted(
            (c for (t, _), c in self._consumers.items() if t == topic and c.accepts(tag)),
            key=lambda c: c.group,
        )

    def groups_blocking_on_dead(self) -> list[str]:
        """Consumer groups whose message groups wait behind a DEAD delivery."""
        return sorted({c.group for c in self._consumers.values() if c.on_dead_in_group == ON_DEAD_BLOCK})

    def consumers(self) -> list[Consumer]:
        return sorted(self._consumers.values(), key=lambda c: (c.topic, c.group))

    def consumer_groups(self) -> list[str]:
        return sorted({c.group for c in self._consumers.values()})

    def producer_groups(self) -> list[str]:
        return sorted(self._checkers)


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"{what} {value!r} must be 1-255 characters of letters, digits and _ . : % -"
        )


registry = Registry()
