"""Which faults a chaos run injects, and how often (``manage.py chaos --faults``).

Kinds, each switched on by name (default: all):

- ``kill``: SIGKILL a random gunicorn worker and a random Celery process every few seconds;
- ``redis-wipe``: Redis loses everything (FLUSHALL, every client connection killed);
- ``rabbitmq-restart``: with ``--broker amqp``, the run's own RabbitMQ node is stopped
  (SIGTERM, as a service manager stops it) and started again while the load runs;
- ``pg-cut``: ``pg_terminate_backend`` of every connection of the application;
- ``freeze``: SIGSTOP a web worker or Celery pool process while its database session is
  inside a transaction, SIGCONT 30-120 s later (one stays frozen until the load ends);
- ``pg-crash``: the run's PostgreSQL server killed at once (``pg_ctl stop -m immediate``)
  and started again: a private cluster, created for the run;
- ``skew``: one Celery worker and beat run five minutes ahead (faketime);
- ``poison``: a share of messages kills its worker in every handler attempt;
- ``slow-check``: a share of checker calls blocks for a minute.

The TXBROKER_FAULTS points (processes dying at named points of the protocol) are set apart,
with ``--fault-points``; ``poison`` and ``slow-check`` add theirs to that string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FAULT_KINDS = (
    "kill",
    "redis-wipe",
    "rabbitmq-restart",
    "pg-cut",
    "freeze",
    "pg-crash",
    "skew",
    "poison",
    "slow-check",
)
BROKERS = ("redis", "amqp")
# Fault kinds that exist on one broker only ('all' means every kind of the run's broker).
BROKER_OF_FAULT = {"redis-wipe": "redis", "rabbitmq-restart": "amqp"}
# A frozen process is thawed after a random time in this range (times --freeze-scale).
FREEZE_SECONDS = (30.0, 120.0)
# Frozen at once, at most (the one kept frozen until the load ends included).
FREEZE_AT_ONCE = 4
# Which managed processes run with a skewed clock.
SKEWED_PROCESSES = ("worker2", "beat")
UNKNOWN_FAULT = "unknown fault kind {kind!r}; choose from {choices} (or 'all')"
WRONG_BROKER_FAULT = "fault kind {kind!r} needs --broker {needs} (this run's broker is {broker})"


def parse_fault_kinds(text: str, broker: str = "redis") -> frozenset[str]:
    """``kill,pg-crash`` -> the kinds; ``all`` or an empty string -> every kind of
    ``broker`` (redis-wipe on Redis, rabbitmq-restart on RabbitMQ)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or names == ["all"]:
        return frozenset(k for k in FAULT_KINDS if BROKER_OF_FAULT.get(k, broker) == broker)
    for name in names:
        if name not in FAULT_KINDS:
            raise ValueError(UNKNOWN_FAULT.format(kind=name, choices=", ".join(FAULT_KINDS)))
        needs = BROKER_OF_FAULT.get(name, broker)
        if needs != broker:
            raise ValueError(WRONG_BROKER_FAULT.format(kind=name, needs=needs, broker=broker))
    return frozenset(names)


@dataclass
class FaultPlan:
    kinds: frozenset[str] = field(default_factory=lambda: frozenset(FAULT_KINDS))
    kill_every: float = 3.0
    redis_every: float = 15.0
    rabbitmq_every: float = 30.0
    pg_every: float = 10.0
    freeze_every: float = 20.0
    freeze_scale: float = 1.0
    pg_crash_every: float = 30.0
    pg_crash_down: float = 3.0
    skew_seconds: float = 300.0
    poison_share: float = 0.01
    slow_check_share: float = 0.1

    def on(self, kind: str) -> bool:
        return kind in self.kinds

    @property
    def freeze_range(self) -> tuple[float, float]:
        low, high = FREEZE_SECONDS
        return low * self.freeze_scale, high * self.freeze_scale

    def clock_offsets(self) -> dict[str, float]:
        """Managed process name -> seconds its clock runs ahead."""
        return dict.fromkeys(SKEWED_PROCESSES, self.skew_seconds) if self.on("skew") else {}

    def fault_points(self, base: str) -> str:
        """TXBROKER_FAULTS of the processes: ``base`` plus poison and slow checks."""
        points = [p for p in base.split(",") if p.strip()]
        if self.on("poison") and self.poison_share > 0:
            points.append(f"poison_message={self.poison_share:g}")
        if self.on("slow-check") and self.slow_check_share > 0:
            points.append(f"checker_block={self.slow_check_share:g}")
        return ",".join(points)

    def lasting_fault_points(self) -> str:
        """TXBROKER_FAULTS once the faults stop: a poison message stays poison (it is the
        message that kills its worker, not a passing fault)."""
        share = self.active_poison_share
        return f"poison_message={share:g}" if share > 0 else ""

    @property
    def active_poison_share(self) -> float:
        return self.poison_share if self.on("poison") else 0.0

    def describe(self) -> dict:
        return {
            "kinds": sorted(self.kinds, key=FAULT_KINDS.index),
            "kill_every": self.kill_every,
            "redis_every": self.redis_every,
            "rabbitmq_every": self.rabbitmq_every,
            "pg_every": self.pg_every,
            "freeze_every": self.freeze_every,
            "freeze_seconds": list(self.freeze_range),
            "pg_crash_every": self.pg_crash_every,
            "pg_crash_down": self.pg_crash_down,
            "skew_seconds": self.skew_seconds,
            "skewed_processes": list(SKEWED_PROCESSES) if self.on("skew") else [],
            "poison_share": self.active_poison_share,
            "slow_check_share": self.slow_check_share if self.on("slow-check") else 0.0,
        }
