"""Render again the stored messages that have a link (``formatting.RENDER_VERSION`` 2): a bare
URL's or an autolink's text is now the URL as typed, its host in punycode when typed in a
script that can pass for Latin letters, where it was decoded before (``http://xn--80ak6aa92e.com`` shown as the lookalike
``http://аррӏе.com``). Only a ``body_html`` with a link can change, so only those are read,
in batches of ``BATCH`` by id, and only the ones whose HTML changes are written."""

from django.db import migrations

BATCH = 2000


def render_links_again(apps, schema_editor):
    from rooms.formatting import render

    Message = apps.get_model("rooms", "Message")
    last_id = 0
    while True:
        batch = list(
            Message.objects.filter(id__gt=last_id, deleted_at__isnull=True, body_html__contains="<a ")
            .order_by("id")
            .only("id", "body", "body_html")[:BATCH]
        )
        if not batch:
            break
        changed = []
        for message in batch:
            html = render(message.body)
            if html != message.body_html:
                message.body_html = html
                changed.append(message)
        Message.objects.bulk_update(changed, ["body_html"], batch_size=500)
        last_id = batch[-1].id


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0012_message_search_grams_inlined"),
    ]

    operations = [
        migrations.RunPython(render_links_again, migrations.RunPython.noop, elidable=True),
    ]
