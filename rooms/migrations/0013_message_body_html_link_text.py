"""Render again the stored messages that have a link (``formatting.RENDER_VERSION`` 2): a bare
URL's or an autolink's text is now the URL as typed, its host in punycode when typed in a
script that can pass for Latin letters, where it was decoded before (``http://xn--80ak6aa92e.com`` shown as the lookalike
``http://аррӏе.com``). Only a ``body_html`` with a link can change, so only those are read,
by ranges of ``SPAN`` ids (each a primary-key range scan, committed by itself), and only the
ones whose HTML changes are written."""

from django.db import migrations
from django.db.models import Max, Min

SPAN = 20000  # ids read per query: a range scan of the primary key, never the whole table


def render_links_again(apps, schema_editor):
    from rooms.formatting import render

    Message = apps.get_model("rooms", "Message")
    bounds = Message.objects.aggregate(low=Min("id"), high=Max("id"))
    if bounds["low"] is None:
        return
    for start in range(bounds["low"], bounds["high"] + 1, SPAN):
        batch = list(
            Message.objects.filter(
                id__gte=start, id__lt=start + SPAN, deleted_at__isnull=True, body_html__contains="<a "
            ).only("id", "body", "body_html")
        )
        changed = []
        for message in batch:
            html = render(message.body)
            if html != message.body_html:
                message.body_html = html
                changed.append(message)
        Message.objects.bulk_update(changed, ["body_html"], batch_size=500)


class Migration(migrations.Migration):
    # Each batch commits by itself: a node serving during the deploy never waits on the rows of
    # the whole table, and an interrupted run is simply run again (it writes only what differs).
    atomic = False

    dependencies = [
        ("rooms", "0012_message_search_grams_inlined"),
    ]

    operations = [
        migrations.RunPython(render_links_again, migrations.RunPython.noop, elidable=True),
    ]
