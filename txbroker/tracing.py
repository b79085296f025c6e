"""OpenTelemetry tracing across the broker, when OpenTelemetry is installed (the ``tracing``
extra); without it every hook here is a no-op and nothing of OpenTelemetry is imported.

txbroker only uses OpenTelemetry's API: whoever runs the process configures the SDK (the
standard way: ``opentelemetry-instrument`` and the ``OTEL_*`` environment variables). The
producer's context is stored with the message, in its ``properties`` (``traceparent``, and
``tracestate`` when there is one: whatever the configured propagators write, by default
W3C Trace Context and baggage), and every span about the message continues it.

The spans follow OpenTelemetry's messaging semantic conventions:

- ``send <topic>`` (PRODUCER): a transactional send, half message to end of transaction;
- ``create <topic>`` (PRODUCER): a plain message stored in the caller's transaction;
- ``process <topic>`` (CONSUMER): one delivery attempt, the handler and its commit; a child
  of the producer's span, with a link to it as well;
- ``commit <topic>``, ``rollback <topic>`` and ``check <topic>`` (CLIENT, operation type
  ``settle``): the end of a transaction by the producer, an operator or check-back, and a
  check-back (the checker's call and what it settles).

``messaging.system`` is ``txbroker``: the messages are RocketMQ-shaped but no RocketMQ
server is involved, so the RocketMQ-specific attributes (``messaging.rocketmq.*``) are
used for what they mean, without claiming the system is RocketMQ.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Optional, TypeVar

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, StatusCode
except ImportError:  # the optional extra is not installed: tracing is off
    trace = None

if TYPE_CHECKING:
    from txbroker.models import Message
    from txbroker.types import OutgoingMessage

__all__ = [
    "ENABLED",
    "SYSTEM",
    "checking",
    "failed",
    "identify",
    "inject",
    "outcome",
    "processing",
    "producing",
    "settles",
]

# Whether OpenTelemetry's API could be imported (whether its SDK records anything is the
# configuration's business).
ENABLED = trace is not None
SYSTEM = "txbroker"
INSTRUMENTATION = "txbroker"

F = TypeVar("F", bound=Callable[..., Any])


def _tracer() -> Any:
    # Looked up at every span: the SDK may be configured after txbroker is imported.
    return trace.get_tracer(INSTRUMENTATION)


def _message_attributes(
    *, topic: str, tag: str, keys: Any, msg_id: str = "", message_group: str = ""
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": topic,
    }
    if msg_id:
        attributes["messaging.message.id"] = msg_id
    if tag:
        attributes["messaging.rocketmq.message.tag"] = tag
    keys = [str(k) for k in keys or ()]
    if keys:
        attributes["messaging.rocketmq.message.keys"] = keys
    if message_group:
        attributes["messaging.rocketmq.message.group"] = message_group
    return attributes


def _stored_attributes(message: Message) -> dict[str, Any]:
    return _message_attributes(
        topic=message.topic,
        tag=message.tag,
        keys=message.keys,
        msg_id=message.msg_id,
        message_group=message.message_group,
    )


def _message_parent(properties: Optional[Mapping[str, Any]]):
    """The span context the producer stored in ``properties``, or None."""
    if not properties:
        return None
    carrier = {k: v for k, v in properties.items() if isinstance(v, str)}
    span_context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


# --- producer -----------------------------------------------------------------------------
def producing(message: OutgoingMessage, producer_group: str, *, transactional: bool):
    """The producer's span (``send`` for a transactional send, ``create`` for a plain one),
    current while the message is stored, so that :func:`inject` stores its context. Yields
    the span, or None when tracing is off."""
    if not ENABLED:
        return nullcontext()
    return _producing(message, producer_group, transactional)


def _message_type(message: OutgoingMessage, transactional: bool) -> str:
    if transactional:
        return "transaction"
    if message.message_group:
        return "fifo"
    if message.deliver_at is not None or message.delay is not None:
        return "delay"
    return "normal"


@contextmanager
def _producing(message: OutgoingMessage, producer_group: str, transactional: bool) -> Iterator[Any]:
    operation = "send" if transactional else "create"
    attributes = _message_attributes(
        topic=message.topic, tag=message.tag, keys=message.keys, message_group=message.message_group
    )
    attributes.update(
        {
            "messaging.operation.type": operation,
            "messaging.operation.name": operation,
            "messaging.rocketmq.client_group": producer_group,
            "messaging.rocketmq.message.type": _message_type(message, transactional),
        }
    )
    with _tracer().start_as_current_span(
        f"{operation} {message.topic}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def inject(properties: dict[str, str]) -> dict[str, str]:
    """``properties`` with the current trace context added (``traceparent``, ...), for the
    message being stored; a context the caller put there already is kept."""
    if not ENABLED:
        return properties
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for name, value in carrier.items():
        properties.setdefault(name, value)
    return properties


def identify(span: Any, msg_id: str, **attributes: Any) -> None:
    """Name the message's id on the producer's span, once it has one (and any attributes)."""
    if span is None:
        return
    span.set_attribute("messaging.message.id", msg_id)
    for name, value in attributes.items():
        span.set_attribute(name, value)


# --- consumer -----------------------------------------------------------------------------
def processing(message: Message, consumer_group: str, attempt: int):
    """The ``process`` span of one delivery attempt: a child of the producer's span (the
    context stored with the message), linked to it too; current while the handler runs and
    its delivery commits. Yields the span, or None when tracing is off."""
    if not ENABLED:
        return nullcontext()
    return _processing(message, consumer_group, attempt)


@contextmanager
def _processing(message: Message, consumer_group: str, attempt: int) -> Iterator[Any]:
    parent = _message_parent(message.properties)
    attributes = _stored_attributes(message)
    attributes.update(
        {
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": consumer_group,
            "messaging.rocketmq.client_group": consumer_group,
            "messaging.rocketmq.consumption_model": "clustering",
            "txbroker.delivery.attempt": attempt,
        }
    )
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
    with _tracer().start_as_current_span(
        f"process {message.topic}",
        context=context,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=[Link(parent)] if parent else None,
    ) as span:
        yield span


def failed(span: Any, error: BaseException, *, outcome: str = "") -> None:
    """Mark ``span`` failed by ``error`` (a handler's, caught by txbroker); ``outcome`` is
    what became of the delivery (RETRY, DEAD)."""
    if span is None:
        return
    span.record_exception(error)
    span.set_attribute("error.type", type(error).__qualname__)
    if outcome:
        span.set_attribute("txbroker.delivery.outcome", outcome)
    span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")


def outcome(span: Any, value: str) -> None:
    """Record what became of the message or delivery on ``span``."""
    if span is not None:
        span.set_attribute("txbroker.outcome", value)


# --- settlement ---------------------------------------------------------------------------
def _settling(message: Message, operation: str, **attributes: Any):
    """A ``settle`` span about ``message``: a child of the current span when there is one
    (the producer's send, a check-back, an operator's request), else of the producer's
    context; linked to the producer's context either way."""
    parent = _message_parent(getattr(message, "properties", None))
    current = trace.get_current_span().get_span_context()
    context = None
    if not current.is_valid and parent is not None:
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
    merged = _stored_attributes(message)
    merged.update(
        {
            "messaging.operation.type": "settle",
            "messaging.operation.name": operation,
            "messaging.rocketmq.client_group": message.producer_group,
            **attributes,
        }
    )
    return _tracer().start_as_current_span(
        f"{operation} {message.topic}",
        context=context,
        kind=SpanKind.CLIENT,
        attributes=merged,
        links=[Link(parent)] if parent is not None else None,
    )


def settles(operation: str) -> Callable[[F], F]:
    """Decorate a settlement (``message_commit(message, *, by, ...)``) so that it runs in a
    ``settle`` span named ``<operation> <topic>``; the function itself when tracing is off."""

    def decorate(function: F) -> F:
        if not ENABLED:
            return function

        @functools.wraps(function)
        def settle(message: Message, *args: Any, **kwargs: Any) -> Any:
            by = kwargs.get("by", "")
            with _settling(message, operation, **{"txbroker.settled_by": by}) as span:
                done = function(message, *args, **kwargs)
                span.set_attribute("txbroker.settled", bool(done))
                return done

        return settle  # type: ignore[return-value]

    return decorate


def checking(message: Message, check_times: int):
    """The ``check`` span of one check-back of ``message`` (its checker's call and the
    settlement that follows). Yields the span, or None when tracing is off."""
    if not ENABLED:
        return nullcontext()
    return _settling(message, "check", **{"txbroker.check_times": check_times})
