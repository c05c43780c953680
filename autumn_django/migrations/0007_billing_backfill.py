# The billing tables of 0006 filled from what the mirror already holds:
# rows synced before them keep Autumn's last answer in `data`, and their
# plans must be queryable (and filterable in the admin) at once, not only
# after Autumn's answer next changes.

from django.db import migrations

from autumn_django.billing import write

BATCH = 1000


def backfill(apps, schema_editor):
    Customer = apps.get_model("autumn_django", "Customer")
    plan_model = apps.get_model("autumn_django", "CustomerPlan")
    feature_model = apps.get_model("autumn_django", "CustomerFeature")
    db = schema_editor.connection.alias
    rows = Customer.objects.using(db).filter(data__isnull=False).order_by("pk").values_list("pk", "data")
    batch = []
    for pk, data in rows.iterator(chunk_size=BATCH):
        batch.append((pk, data))
        if len(batch) == BATCH:
            write(batch, plan_model, feature_model, db)
            batch = []
    write(batch, plan_model, feature_model, db)


class Migration(migrations.Migration):
    dependencies = [("autumn_django", "0006_billing_state")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop, elidable=True)]
