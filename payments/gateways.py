"""Third-party payment gateways, pluggable like Django's EMAIL_BACKEND:
``PAYMENTS_GATEWAY_BACKEND`` names the class.

A backend's ``charge()`` returns a :class:`ChargeResult` (approved, or declined with the
gateway's reason), or raises :class:`GatewayError` when the gateway could not be asked or
answered with an error: the charge was not made. One exception to that: a call without an
answer within ``PAYMENTS_GATEWAY_TIMEOUT`` seconds raises :class:`GatewayTimeout`, and then
nobody knows yet whether the gateway charged.

Its ``lookup()`` answers what became of an earlier charge, by the idempotency key it was
made with: the reconciliation of charges whose process died while the gateway was being
called (``payments.reconciliation``) relies on it. A real gateway queries its API by
idempotency key (Stripe, Adyen and most others keep them for days).

Why the timeout is a setting of its own: reconciliation must know how long a call may still
be running. A charge the gateway has no record of is closed (ERROR, the order payable
again) only once it is older than the longest call; younger, the call may be in flight and
the gateway may still approve it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, Optional

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections, router
from django.utils.module_loading import import_string

from payments import conf

SIMULATED_GATEWAY_REFUSED = (
    "PAYMENTS_GATEWAY_BACKEND is {backend}, a simulation that approves any amount, and "
    "DJANGO_DEBUG is off: configure a real gateway, or set PAYMENTS_ALLOW_SIMULATED_GATEWAY=1 "
    "to run the simulation knowingly (tests, chaos and bench runs)."
)
GATEWAY_NOT_IMPORTABLE = "PAYMENTS_GATEWAY_BACKEND {backend!r} cannot be imported: {error}"


def gateway_timeout() -> float:
    """PAYMENTS_GATEWAY_TIMEOUT (seconds, default 30): the longest a gateway call may take.

    A backend gives up on a call after this long (its client-side timeout) and raises
    :class:`GatewayTimeout`; reconciliation treats a charge the gateway does not know as
    never made only once the charge is older than this (database time), so it never closes
    a charge whose call may still be in flight. Keep PAYMENTS_CHARGE_RECONCILE_AFTER above
    it for the common case; below it, reconciliation only looks early (IN_FLIGHT).
    """
    return conf.seconds("PAYMENTS_GATEWAY_TIMEOUT")


class GatewayError(Exception):
    """The gateway could not charge (unreachable, or an error answer)."""


class GatewayTimeout(GatewayError):
    """No answer within PAYMENTS_GATEWAY_TIMEOUT (or the answer was lost): unlike any other
    GatewayError, the gateway may have made the charge. The payment closes its charge
    without knowing, and reconciliation keeps asking the gateway about it."""


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reference: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RefundResult:
    reference: str


@dataclass(frozen=True)
class ChargeCall:
    order_id: str
    amount: Decimal
    payment_method: str
    idempotency_key: str
    result: str


class PaymentGateway:
    """The interface of a gateway backend."""

    #: The ``payment_method`` values this gateway accepts (the API validates against them).
    payment_methods: ClassVar[tuple[str, ...]] = ()
    default_payment_method: ClassVar[str] = ""
    #: A simulation moves no money: refused with DEBUG off unless PAYMENTS_ALLOW_SIMULATED_GATEWAY.
    simulated: ClassVar[bool] = False

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        """Charge once per ``idempotency_key`` (a repeated key answers the first result).
        Gives up after :func:`gateway_timeout` seconds with :class:`GatewayTimeout`: a real
        backend passes it as its HTTP client's timeout."""
        raise NotImplementedError

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        """What the gateway did with the charge made with ``idempotency_key``: its result
        (approved with the same reference as ``charge()`` returned, or declined), or None
        when the gateway never saw it (nothing was charged). Raises :class:`GatewayError`
        when the gateway cannot be asked now."""
        raise NotImplementedError

    def refund(self, *, charge_reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        """Give ``amount`` of the approved charge ``charge_reference`` back to the payer, once
        per ``idempotency_key`` (a repeated key answers the first refund). Raises
        :class:`GatewayError` when it could not (nothing refunded, or, for a
        :class:`GatewayTimeout`, maybe refunded: a repeat with the same key is safe)."""
        raise NotImplementedError


class SimulatedGateway(PaymentGateway):
    """Approves ``sim_approve``, declines ``sim_decline`` with a reason, raises a gateway
    error for ``sim_error`` (nothing charged). Every call is kept in
    ``SimulatedGateway.calls`` (this process only), so tests can count calls.

    What it charged is kept durably, like a real gateway's books: one
    ``SimulatedGatewayCharge`` row per idempotency key, written in autocommit outside the
    caller's transactions (on a connection of its own when the caller is inside one), so a
    caller's rollback or death never undoes it. ``lookup()`` answers from those rows in any
    process: approved (the reference ``charge()`` returned) or declined as recorded, None
    when ``charge()`` never ran for the key, failed, or has not completed yet. A repeated
    key answers what the first call recorded (idempotency).

    A call takes PAYMENTS_SIMULATED_GATEWAY_LATENCY seconds (default 0) before the gateway
    records it and answers. Longer than PAYMENTS_GATEWAY_TIMEOUT: the caller gives up after
    the timeout with :class:`GatewayTimeout`, and the simulated gateway, which does not know
    that its caller left, records the charge at that moment anyway (the worst case for a
    caller: money moved, no answer). A database error while recording is a lost answer:
    :class:`GatewayTimeout` too.
    """

    payment_methods = ("sim_approve", "sim_decline", "sim_error")
    default_payment_method = "sim_approve"
    simulated = True
    DECLINE_REASON = "card declined by the issuer (simulated)"
    ERROR_REASON = "payment gateway unavailable (simulated)"
    TIMEOUT_REASON = "no answer from the payment gateway within {timeout:g}s (simulated)"
    LOOKUP_ERROR_REASON = "lookup: payment gateway unavailable (simulated)"

    calls: ClassVar[list[ChargeCall]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def charge(
        self, *, order_id: str, amount: Decimal, payment_method: str, idempotency_key: str
    ) -> ChargeResult:
        result = {"sim_approve": "approved", "sim_decline": "declined"}.get(payment_method, "error")
        with self._lock:
            self.calls.append(ChargeCall(order_id, amount, payment_method, idempotency_key, result))
        latency, timeout = simulated_latency(), gateway_timeout()
        if latency > 0:
            time.sleep(min(latency, timeout))
        if result == "error":  # nothing charged, whether or not the caller is still waiting
            if latency > timeout:
                raise GatewayTimeout(self.TIMEOUT_REASON.format(timeout=timeout))
            raise GatewayError(self.ERROR_REASON)
        answer = (
            ChargeResult(approved=True, reference=self.reference_of(idempotency_key))
            if result == "approved"
            else ChargeResult(approved=False, reason=self.DECLINE_REASON)
        )
        try:
            answer = self._record(
                idempotency_key=idempotency_key,
                order_id=order_id,
                amount=amount,
                payment_method=payment_method,
                answer=answer,
            )
        except DatabaseError as exc:
            raise GatewayTimeout(self.TIMEOUT_REASON.format(timeout=timeout)) from exc
        if latency > timeout:
            raise GatewayTimeout(self.TIMEOUT_REASON.format(timeout=timeout))
        return answer

    def lookup(self, *, idempotency_key: str) -> Optional[ChargeResult]:
        try:
            with _books_cursor() as (cursor, table):
                cursor.execute(
                    f"SELECT approved, reference, reason FROM {table} WHERE idempotency_key = %s",  # noqa: S608 - our table
                    [idempotency_key],
                )
                row = cursor.fetchone()
        except DatabaseError as exc:
            raise GatewayError(self.LOOKUP_ERROR_REASON) from exc
        return _result_of(row)

    def refund(self, *, charge_reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        from payments.models import SimulatedGatewayRefund

        latency, timeout = simulated_latency(), gateway_timeout()
        if latency > 0:
            time.sleep(min(latency, timeout))
        reference = "SIMR-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16].upper()
        try:
            with _books_cursor(SimulatedGatewayRefund) as (cursor, table):
                cursor.execute(
                    f"INSERT INTO {table} (idempotency_key, charge_reference, amount, reference) "  # noqa: S608
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING",
                    [idempotency_key, charge_reference, amount, reference],
                )
        except DatabaseError as exc:
            raise GatewayTimeout(self.TIMEOUT_REASON.format(timeout=timeout)) from exc
        if latency > timeout:
            raise GatewayTimeout(self.TIMEOUT_REASON.format(timeout=timeout))
        return RefundResult(reference=reference)

    @staticmethod
    def _record(
        *, idempotency_key: str, order_id: str, amount: Decimal, payment_method: str, answer: ChargeResult
    ) -> ChargeResult:
        """Write the charge into the gateway's books, once per key; return what they hold."""
        with _books_cursor() as (cursor, table):
            cursor.execute(
                f"INSERT INTO {table} (idempotency_key, order_id, amount, payment_method, approved, "  # noqa: S608
                "reference, reason) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (idempotency_key) DO NOTHING",
                [
                    idempotency_key,
                    order_id,
                    amount,
                    payment_method,
                    answer.approved,
                    answer.reference,
                    answer.reason[:255],
                ],
            )
            if cursor.rowcount == 1:
                return answer
            # The key was charged before: the first answer stands.
            cursor.execute(
                f"SELECT approved, reference, reason FROM {table} WHERE idempotency_key = %s",  # noqa: S608
                [idempotency_key],
            )
            return _result_of(cursor.fetchone()) or answer

    @staticmethod
    def reference_of(idempotency_key: str) -> str:
        """The reference of an approved charge: the same for the same key in every process."""
        return "SIM-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16].upper()

    @classmethod
    def approved_calls(cls, order_id: str) -> list[ChargeCall]:
        with cls._lock:
            return [c for c in cls.calls if c.order_id == order_id and c.result == "approved"]

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.calls.clear()


def simulated_latency() -> float:
    """PAYMENTS_SIMULATED_GATEWAY_LATENCY: seconds each simulated charge takes (default 0)."""
    return conf.seconds("PAYMENTS_SIMULATED_GATEWAY_LATENCY")


@contextmanager
def _books_cursor(model: Any = None) -> Iterator[tuple[Any, str]]:
    """A cursor in autocommit on the simulated gateway's books, and their quoted table name.

    The gateway is another system: its writes must never join (or be rolled back with) a
    transaction of its caller. Outside any transaction the thread's own connection is in
    autocommit; inside one, a connection of its own is opened for the call and closed. On
    SQLite (one writer at a time) a charge made inside the caller's write transaction waits
    for it and fails after the busy timeout (a GatewayTimeout); nothing here charges inside a
    transaction (``payment_pay`` refuses to run in one).
    """
    from payments.models import SimulatedGatewayCharge

    model = model or SimulatedGatewayCharge
    alias = router.db_for_write(model)
    connection = connections[alias]
    table = connection.ops.quote_name(model._meta.db_table)
    if not connection.in_atomic_block and connection.get_autocommit():
        with connection.cursor() as cursor:
            yield cursor, table
        return
    own = connections.create_connection(alias)
    try:
        with own.cursor() as cursor:
            yield cursor, table
    finally:
        own.close()


def _result_of(row: Optional[tuple]) -> Optional[ChargeResult]:
    if row is None:
        return None
    approved, reference, reason = row
    return ChargeResult(approved=bool(approved), reference=reference, reason=reason)


def gateway_backend_path() -> str:
    return conf.setting("PAYMENTS_GATEWAY_BACKEND")


def simulated_gateway_refusal() -> Optional[str]:
    """Why the configured gateway may not run in this process, or None when it may.

    A simulated gateway (``simulated = True``: it approves any amount) is refused with DEBUG
    off unless PAYMENTS_ALLOW_SIMULATED_GATEWAY says the operator chose it knowingly.
    """
    if settings.DEBUG or conf.setting("PAYMENTS_ALLOW_SIMULATED_GATEWAY"):
        return None
    backend = gateway_backend_path()
    if getattr(import_string(backend), "simulated", False):
        return SIMULATED_GATEWAY_REFUSED.format(backend=backend)
    return None


def check_gateway(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """System check (``check --deploy``): a refused simulation is an Error."""
    try:
        refusal = simulated_gateway_refusal()
    except ImportError as exc:
        message = GATEWAY_NOT_IMPORTABLE.format(backend=gateway_backend_path(), error=exc)
        return [checks.Error(message, id="payments.E002")]
    return [checks.Error(refusal, id="payments.E001")] if refusal else []


def get_gateway() -> PaymentGateway:
    """An instance of the configured gateway backend; ImproperlyConfigured for a refused
    simulation (web, worker and beat refuse to start with one: ``config.serving``)."""
    refusal = simulated_gateway_refusal()
    if refusal:
        raise ImproperlyConfigured(refusal)
    return import_string(gateway_backend_path())()
