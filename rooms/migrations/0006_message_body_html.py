from django.db import migrations, models

BATCH = 2000


def render_stored_messages(apps, schema_editor):
    """Render ``body_html`` for every message stored before formatting existed, in batches of
    ``BATCH`` by id (each batch one read and one bulk update; a deleted message keeps "")."""
    from rooms.formatting import render

    Message = apps.get_model("rooms", "Message")
    last_id = 0
    while True:
        batch = list(
            Message.objects.filter(id__gt=last_id, deleted_at__isnull=True)
            .order_by("id")
            .only("id", "body")[:BATCH]
        )
        if not batch:
            break
        for message in batch:
            message.body_html = render(message.body)
        Message.objects.bulk_update(batch, ["body_html"], batch_size=500)
        last_id = batch[-1].id


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0005_merge_0004_direct_messages_0004_read_state_mentions"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="body_html",
            field=models.TextField(blank=True, db_default="", default="", editable=False),
        ),
        migrations.RunPython(render_stored_messages, migrations.RunPython.noop, elidable=True),
    ]
