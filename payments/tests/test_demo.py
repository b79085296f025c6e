"""``manage.py demo`` end to end, on a real worker."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from orders.models import Order
from payments.models import PaymentRecord

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def test_demo_pays_concurrently_waits_for_the_consumers_and_checks_the_invariants(app_worker):
    out = StringIO()

    call_command(
        "demo", orders=12, concurrency=4, users=3, decline_share=0.25, seed=7, timeout=60, stdout=out
    )

    output = out.getvalue()
    assert "all invariants hold" in output
    assert "paying" in output and "12/12" in output
    assert "\r" not in output and "paying 12/12" in output.splitlines()  # not a terminal: lines
    for row in ("orders", "payment records", "points", "SMS", "messages", "deliveries", "elapsed"):
        assert row in output
    assert Order.objects.filter(status="PAID").count() == 9
    assert Order.objects.filter(status="CREATED").count() == 3
    assert PaymentRecord.objects.count() == 9
    assert len(app_worker.sms()) == 9


@pytest.mark.django_db
def test_demo_refuses_bad_arguments():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("demo", orders=0, stdout=StringIO())
    with pytest.raises(CommandError, match=r"within 0\.\.1"):
        call_command("demo", decline_share=2.0, stdout=StringIO())


def test_demo_progress_is_redrawn_on_a_terminal_and_one_line_per_change_otherwise():
    from config.management.commands.demo import ProgressBar

    written = []
    bar = ProgressBar(written.append, "consuming", 3, tty=False)
    for done in (0, 1, 1, 1, 3):
        bar.update(done)
    bar.finish()
    assert "".join(written) == "consuming 0/3\nconsuming 1/3\nconsuming 3/3\n"
    written.clear()
    bar = ProgressBar(written.append, "consuming", 3, tty=True)
    bar.update(1)
    bar.finish()
    assert written[0].startswith("\rconsuming") and written[-1] == "\n"
