# The mirror row links to its object generically (content type and object
# id) instead of through a foreign key to the user model, so any model can be
# a customer. Existing rows are carried over: each keeps its user as its
# object; rows whose user was already deleted keep no object, as before.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def link_users(apps, schema_editor):
    Customer = apps.get_model("autumn_django", "Customer")
    ContentType = apps.get_model("contenttypes", "ContentType")
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    db = schema_editor.connection.alias
    user_type, _ = ContentType.objects.using(db).get_or_create(app_label=app_label, model=model_name.lower())
    rows = Customer.objects.using(db).filter(user__isnull=False).only("pk", "user_id")
    batch = []
    for row in rows.iterator(chunk_size=2000):
        row.content_type_id, row.object_id = user_type.pk, str(row.user_id)
        batch.append(row)
        if len(batch) == 2000:
            Customer.objects.using(db).bulk_update(batch, ["content_type", "object_id"])
            batch = []
    Customer.objects.using(db).bulk_update(batch, ["content_type", "object_id"])


def unlink_users(apps, schema_editor):
    Customer = apps.get_model("autumn_django", "Customer")
    ContentType = apps.get_model("contenttypes", "ContentType")
    app_label, model_name = settings.AUTH_USER_MODEL.split(".")
    db = schema_editor.connection.alias
    user_type = ContentType.objects.using(db).filter(app_label=app_label, model=model_name.lower()).first()
    if user_type is None:
        return
    User = apps.get_model(settings.AUTH_USER_MODEL)
    pk_field = User._meta.pk
    rows = Customer.objects.using(db).filter(content_type=user_type, object_id__isnull=False)
    for row in rows.only("pk", "object_id").iterator(chunk_size=2000):
        Customer.objects.using(db).filter(pk=row.pk).update(user_id=pk_field.to_python(row.object_id))
    # Rows of other models cannot be expressed with a user foreign key.
    Customer.objects.using(db).exclude(content_type=user_type).exclude(object_id__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("autumn_django", "0004_webhook_events"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="content_type",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="contenttypes.contenttype",
            ),
        ),
        migrations.AddField(
            model_name="customer",
            name="object_id",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.RunPython(link_users, unlink_users, elidable=False),
        migrations.RemoveField(model_name="customer", name="user"),
        migrations.AddConstraint(
            model_name="customer",
            constraint=models.UniqueConstraint(
                fields=("content_type", "object_id"), name="autumn_customer_unique_source"
            ),
        ),
    ]
