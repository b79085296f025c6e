"""Orders a payment holds (an active charge, or a successful payment) get the hold that
``orders.services`` now keeps (``Order.payment_hold``)."""

from django.db import migrations
from django.db.models import Q

ACTIVE = ["PENDING", "APPROVED", "RECORDED"]


def hold(apps, schema_editor):
    Order = apps.get_model("orders", "Order")
    Charge = apps.get_model("payments", "Charge")
    PaymentRecord = apps.get_model("payments", "PaymentRecord")
    charged = Charge.objects.filter(status__in=ACTIVE).values("order_id")
    paid = PaymentRecord.objects.filter(status="SUCCESS").values("order_id")
    Order.objects.filter(Q(order_id__in=charged) | Q(order_id__in=paid)).update(payment_hold=True)


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0002_order_payment_hold"),
        ("payments", "0003_charge_database_time_gateway_books"),
    ]

    operations = [migrations.RunPython(hold, migrations.RunPython.noop)]
