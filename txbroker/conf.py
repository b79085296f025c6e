"""txbroker's settings: Django settings named ``TXBROKER_*``, read lazily, each with a typed
default written here once. A value may be given as text ("10s", "2m", "1", "on"), as a
project that maps environment variables onto its settings would pass it.

txbroker reads Django settings only: mapping the environment onto them is the project's
business (this project's ``config/settings/base.py`` maps every ``TXBROKER_*`` variable).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

RETRY_DELAYS_DEFAULT = "10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """``"10s"``, ``"2m"``, ``"1h"``, ``"7d"``, ``"250ms"`` or bare seconds -> seconds."""
    match = _DURATION.match(str(text).strip().lower())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 10s, 2m, 1h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_durations(value: Any) -> tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        delays = tuple(float(v) if not isinstance(v, str) else parse_duration(v) for v in value)
    else:
        delays = tuple(parse_duration(part) for part in str(value).replace(",", " ").split())
    if not delays:
        raise ValueError("TXBROKER_RETRY_DELAYS needs at least one delay")
    return delays


def parse_faults(value: Any) -> dict[str, float]:
    """``"after_half_stored=0.05,handler_before_commit=0.1"`` -> {point: probability}."""
    from txbroker.faults import FAULT_POINTS

    if isinstance(value, dict):
        items = value.items()
    else:
        items = []
        for part in str(value or "").split(","):
            if not part.strip():
                continue
            name, sep, prob = part.partition("=")
            if not sep:
                raise ValueError(f"TXBROKER_FAULTS entry {part!r} is not point=probability")
            items.append((name.strip(), prob.strip()))
    faults = {}
    for name, prob in items:
        if name not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {name!r}; known: {', '.join(FAULT_POINTS)}")
        probability = float(prob)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"fault probability for {name} must be within 0..1")
        if probability > 0:
            faults[name] = probability
    return faults


@dataclass(frozen=True)
class Setting:
    default: Any
    parse: Callable[[Any], Any]


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be a boolean (1/0, true/false, yes/no, on/off)")


def _names(value: Any) -> frozenset[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(str(v).strip() for v in value if str(v).strip())
    return frozenset(part for part in str(value or "").replace(",", " ").split())


WAKEUP_MARKS = ("auto", "redis", "database", "none")


def _wakeup_mark(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in WAKEUP_MARKS:
        raise ValueError(f"must be one of {', '.join(WAKEUP_MARKS)}")
    return text


def _non_negative_float(value: Any) -> float:
    number = parse_duration(value) if isinstance(value, str) else float(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def parse_credentials(value: Any) -> dict[str, str]:
    """``"ak:secret,ak2:secret2"`` (or a dict) -> {access key: secret}."""
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        pairs = []
        for part in str(value or "").split(","):
            if not part.strip():
                continue
            key, sep, secret = part.strip().partition(":")
            if not sep or not key or not secret:
                raise ValueError(f"entry {part.strip()[:20]!r}... is not access_key:secret")
            pairs.append((key, secret))
    return dict(pairs)


GRPC_MESSAGE_TYPES = ("NORMAL", "FIFO", "DELAY", "TRANSACTION")


def parse_topic_types(value: Any) -> dict[str, frozenset[str]]:
    """``"orders=FIFO,audit=NORMAL|DELAY"`` (or a dict of lists) -> {topic: the message types
    it accepts}; a topic not named accepts them all."""
    if isinstance(value, dict):
        items = [(str(k), v if isinstance(v, str) else "|".join(v)) for k, v in value.items()]
    else:
        items = []
        for part in str(value or "").split(","):
            if part.strip():
                topic, sep, kinds = part.strip().partition("=")
                if not sep or not topic.strip():
                    raise ValueError(f"entry {part.strip()[:40]!r} is not topic=TYPE|TYPE")
                items.append((topic.strip(), kinds))
    parsed = {}
    for topic, kinds in items:
        names = frozenset(kind.strip().upper() for kind in kinds.split("|") if kind.strip())
        unknown = names - set(GRPC_MESSAGE_TYPES)
        if not names or unknown:
            raise ValueError(f"topic {topic!r}: types must be among {', '.join(GRPC_MESSAGE_TYPES)}")
        parsed[topic] = names
    return parsed


def _address(value: Any) -> str:
    """``host:port`` or ''."""
    text = str(value or "").strip()
    if text:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port")
    return text


SETTINGS: dict[str, Setting] = {
    # Alias of the database holding txbroker's tables.
    "TXBROKER_DATABASE": Setting("default", str),
    # Seconds between two check-back passes (and the least wait between two checks of one message).
    "TXBROKER_CHECK_INTERVAL": Setting(30.0, _non_negative_float),
    # A HALF message younger than this is never checked.
    "TXBROKER_TRANSACTION_TIMEOUT": Setting(6.0, _non_negative_float),
    # Real checks before a message is DISCARDED (parked, resumable).
    "TXBROKER_CHECK_MAX": Setting(15, _positive_int),
    # HALF messages claimed per batch of a check pass.
    "TXBROKER_CHECK_BATCH_SIZE": Setting(100, _positive_int),
    # Seconds one checker call may take (its lock waits and statements included); an
    # overrun is an UNKNOWN answer for that message only.
    "TXBROKER_CHECK_TIMEOUT": Setting(5.0, _non_negative_float),
    # Seconds one check pass keeps checking before it stops cleanly (the next pass goes on).
    "TXBROKER_CHECK_PASS_BUDGET": Setting(60.0, _non_negative_float),
    # Retries after the first attempt before a delivery is DEAD.
    "TXBROKER_MAX_RECONSUME_TIMES": Setting(16, lambda v: int(v)),
    # Delay before retry k (the last one repeats).
    "TXBROKER_RETRY_DELAYS": Setting(RETRY_DELAYS_DEFAULT, parse_durations),
    # Seconds between two delivery sweeps.
    "TXBROKER_SWEEP_INTERVAL": Setting(5.0, _non_negative_float),
    # Deliveries claimed per batch by one delivery task.
    "TXBROKER_BATCH_SIZE": Setting(50, _positive_int),
    # Seconds a claim lasts: a claimed delivery not started by then, or whose handler
    # started that long ago and whose worker no longer holds its row lock (it died, or froze
    # and PostgreSQL ended its session), is taken back by the sweep.
    "TXBROKER_CLAIM_TIMEOUT": Setting(30.0, _non_negative_float),
    # Seconds one handler call may take; an overrun is a failed attempt (retried).
    "TXBROKER_HANDLER_TIMEOUT": Setting(20.0, _non_negative_float),
    # A claimed batch's handlers run in one transaction, each in a savepoint, started and
    # settled by one statement each (PostgreSQL with TXBROKER_FASTPATH; see txbroker.batch).
    # Off: one transaction per delivery, as before (a handler that holds locks long, or
    # whose transaction must commit on its own).
    "TXBROKER_BATCH_TRANSACTION": Setting(True, _bool),
    # Seconds a batch's transaction keeps taking handlers: past it, what ran commits and
    # the rest runs in the next one. A transaction lasts at most this plus one handler
    # (TXBROKER_HANDLER_TIMEOUT), and so does the wait of a batch-mate's commit.
    "TXBROKER_BATCH_TRANSACTION_BUDGET": Setting(0.25, _non_negative_float),
    # Seconds one delivery task keeps claiming batches before it yields its worker slot.
    "TXBROKER_TASK_BUDGET": Setting(10.0, _non_negative_float),
    # --- consumer groups subscribed over gRPC (RocketMQ 5 clients; txbroker.remote_groups) ---
    # Seconds a process reuses the remote subscriptions it read: a commit costs no query for
    # them within that time. A group subscribed less than that ago may miss messages
    # committed meanwhile by other processes (RocketMQ: a new group starts at the latest offset).
    "TXBROKER_GRPC_SUBSCRIPTION_REFRESH": Setting(2.0, _non_negative_float),
    # Attempts (the first included) before a remote group's delivery is DEAD, and the delays
    # the push consumers are told to wait after a failure (the backoff policy they are sent).
    "TXBROKER_GRPC_MAX_ATTEMPTS": Setting(17, _positive_int),
    "TXBROKER_GRPC_BACKOFF": Setting(RETRY_DELAYS_DEFAULT, parse_durations),
    # Remote consumer groups that are FIFO (RocketMQ keeps this in the group's configuration,
    # not in the client): names separated by commas or spaces.
    "TXBROKER_GRPC_FIFO_GROUPS": Setting("", _names),
    # Bounds of ReceiveMessage: the longest invisible duration (claim), the longest long
    # polling, seconds between two polls of the database while waiting, messages per call.
    "TXBROKER_GRPC_MAX_INVISIBLE": Setting(43200.0, _non_negative_float),
    "TXBROKER_GRPC_MAX_LONG_POLLING": Setting(20.0, _non_negative_float),
    "TXBROKER_GRPC_POLL_INTERVAL": Setting(0.2, _non_negative_float),
    "TXBROKER_GRPC_MAX_BATCH": Setting(32, _positive_int),
    # The invisible duration of what a push consumer receives (it asks for none): its
    # listener has that long to answer before the message counts as failed and comes back.
    "TXBROKER_GRPC_PUSH_INVISIBLE": Setting(60.0, _non_negative_float),
    # One-statement writes on the hot path on PostgreSQL (see txbroker.fastpath); off: the
    # portable ORM path, for comparison or for a PostgreSQL look-alike that lacks them.
    "TXBROKER_FASTPATH": Setting(True, _bool),
    # At most one delivery wake-up waiting in the broker's queue (see txbroker.wakeup).
    "TXBROKER_WAKEUP_COALESCE": Setting(True, _bool),
    # Where "a wake-up is queued" is marked: auto (Redis key on a Redis broker, none on the
    # filesystem or memory transport, a database row on any other broker), redis,
    # database or none (every commit publishes).
    "TXBROKER_WAKEUP_MARK": Setting("auto", _wakeup_mark),
    # Seconds after which a queued wake-up that never started stops suppressing new ones.
    "TXBROKER_WAKEUP_TTL": Setting(2.0, _non_negative_float),
    # Seconds /metrics reuses the database gauges it read (per process): a scrape costs no
    # query within them, so scraping often or many tables' rows cost the database nothing more.
    "TXBROKER_METRICS_CACHE_SECONDS": Setting(15.0, _non_negative_float),
    # Health (txbroker.health.backlog_problems): a delivery not done after this many seconds,
    # or a HALF message not settled after this many, makes the broker unhealthy.
    "TXBROKER_HEALTH_MAX_PENDING_AGE": Setting(600.0, _non_negative_float),
    "TXBROKER_HEALTH_MAX_HALF_AGE": Setting(900.0, _non_negative_float),
    # The admin's dashboard: seconds between its refreshes (0: never), and seconds it waits for
    # Celery workers to say what they run (one broadcast per refresh).
    "TXBROKER_DASHBOARD_REFRESH": Setting(5.0, _non_negative_float),
    "TXBROKER_DASHBOARD_INSPECT_TIMEOUT": Setting(0.5, _non_negative_float),
    # The RocketMQ 5 gRPC endpoint (manage.py txbroker_grpc, txbroker.grpcapi).
    # access_key:secret pairs, comma-separated: every request must carry a signature made with
    # one of them. None: the endpoint binds loopback addresses only.
    "TXBROKER_GRPC_CREDENTIALS": Setting("", parse_credentials),
    # Seconds a request's signed x-mq-date-time may differ from this host's clock (0: not
    # checked). The client's clock against the server's: host clocks, by necessity.
    "TXBROKER_GRPC_MAX_CLOCK_SKEW": Setting(300.0, _non_negative_float),
    # host:port the routes send clients to ('' : the address the client reached, else the bind).
    "TXBROKER_GRPC_ADVERTISED_ADDRESS": Setting("", _address),
    # Threads serving RPCs, and the most RPCs at once (each live client's telemetry stream
    # holds one for its life; beyond it a call fails with RESOURCE_EXHAUSTED).
    "TXBROKER_GRPC_WORKERS": Setting(64, _positive_int),
    # A client whose last heartbeat (or telemetry) is older than this is not live.
    "TXBROKER_GRPC_CLIENT_TIMEOUT": Setting(30.0, _non_negative_float),
    # Topics restricted to some message types over gRPC ("orders=FIFO,audit=NORMAL|DELAY"):
    # their routes list only those, and a message of another type is refused. A topic not
    # named accepts NORMAL, FIFO, DELAY and TRANSACTION.
    "TXBROKER_GRPC_TOPIC_TYPES": Setting("", parse_topic_types),
    # The largest message body accepted over gRPC (bytes).
    "TXBROKER_GRPC_MAX_BODY_SIZE": Setting(4 * 1024 * 1024, _positive_int),
    # Fault injection (tests and chaos runs only): point=probability,...
    "TXBROKER_FAULTS": Setting("", parse_faults),
}


class _Settings:
    """Attribute access to the TXBROKER_* settings, parsed on every read (cheap) so that
    ``override_settings`` in tests takes effect."""

    def __getattr__(self, attr: str) -> Any:
        name = f"TXBROKER_{attr}"
        if name not in SETTINGS:
            raise AttributeError(attr)
        spec = SETTINGS[name]
        raw = getattr(django_settings, name, spec.default)
        try:
            return spec.parse(raw)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"{name}={raw!r}: {exc}") from exc


txsettings = _Settings()
