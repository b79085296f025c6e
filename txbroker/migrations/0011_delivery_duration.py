from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("txbroker", "0010_grpc_consumer_groups"),
    ]

    operations = [
        migrations.AddField(
            model_name="delivery",
            name="duration_ms",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="delivery",
            index=models.Index(
                condition=models.Q(("duration_ms__isnull", False)),
                fields=["succeeded_at"],
                name="txb_dlv_succeeded_at",
            ),
        ),
    ]
