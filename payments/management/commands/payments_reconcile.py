from __future__ import annotations

import math

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from payments.reconciliation import ChargeReconcileReport, charge_reconcile_after, charge_reconcile_stale
from payments.refund_reconciliation import refund_reconcile_stale

OLDER_THAN_INVALID = "--older-than must be a number of seconds >= 0, not {value!r}"


class Command(BaseCommand):
    help = (
        "Settle charges left PENDING or APPROVED by payments whose process died: ask the gateway, "
        "then complete the payment or free the order; recheck charges closed without the "
        "gateway's answer and mark late approvals for refund; finish refunds left PENDING or "
        "APPROVED (what the beat task does)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            default=None,
            help="seconds a charge must have been left unsettled (default PAYMENTS_CHARGE_RECONCILE_AFTER)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="ask the gateway and the broker, change nothing"
        )

    def handle(self, *args, older_than: str | None = None, dry_run: bool = False, **options) -> None:
        if older_than is None:
            seconds = charge_reconcile_after()
        else:
            try:
                seconds = float(older_than)
            except ValueError:
                raise CommandError(OLDER_THAN_INVALID.format(value=older_than)) from None
            if not math.isfinite(seconds) or seconds < 0:
                raise CommandError(OLDER_THAN_INVALID.format(value=older_than))

        batches = []

        def progress(report: ChargeReconcileReport) -> None:
            # Progress only on long work: from the second batch on.
            batches.append(report.examined)
            if len(batches) > 1:
                self.stderr.write(f"  {report.examined} charge{pluralize(report.examined)} examined...")

        report = charge_reconcile_stale(older_than=seconds, dry_run=dry_run, progress=progress)
        self.stdout.write(self.style.SUCCESS(report.summary()) if report.noteworthy else report.summary())
        if not dry_run:  # finishing a refund moves money: nothing to preview
            refunds = refund_reconcile_stale(older_than=seconds)
            if refunds.examined:
                self.stdout.write(refunds.summary())
