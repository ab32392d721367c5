"""Message.room loses its own index (``rooms_message_room_id_...``): the unique (room_id, seq)
index leads with the room and serves every lookup by room. The extra index cost a write per
stored message, and PostgreSQL chose it for the unread counts' ``seq > marker`` ranges, reading
a whole room per count (``rooms.reads._count``). Dropping an index takes a brief exclusive lock
on the messages table."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0010_message_search_grams"),
    ]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="room",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="messages",
                to="rooms.room",
            ),
        ),
    ]
