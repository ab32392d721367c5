"""Room slugs are unique regardless of case (issue 17): ``General`` and ``general`` are one slug.

Before the constraint is added, existing rooms are checked: slugs that differ only in case stop
the migration with the list of them, and nothing is changed (renaming a room's slug changes its
URL, which is for a person to decide). Rename all but one of each group in Django admin (a
room's change page) or the shell, then migrate again.
"""

import django.db.models.functions.text
from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import Lower


class SlugsDifferOnlyInCase(Exception):
    pass


def refuse_case_duplicates(apps, schema_editor):
    Room = apps.get_model("rooms", "Room")
    groups = (
        Room.objects.using(schema_editor.connection.alias)
        .annotate(folded=Lower("slug"))
        .values("folded")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("folded", flat=True)
    )
    folded = list(groups)
    if not folded:
        return
    rooms = (
        Room.objects.using(schema_editor.connection.alias)
        .annotate(folded=Lower("slug"))
        .filter(folded__in=folded)
        .order_by("folded", "id")
    )
    lines = [f"  room id {room.id}: slug {room.slug!r} (name {room.name!r})" for room in rooms]
    raise SlugsDifferOnlyInCase(
        f"rooms.0006: {len(folded)} slug(s) are held by several rooms that differ only in case; slugs "
        "are now unique regardless of case. Nothing was changed. Give all but one room of each group "
        "another slug (Django admin: the room's page; or `make manage ARGS=shell`), then migrate again:\n"
        + "\n".join(lines)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0005_merge_0004_direct_messages_0004_read_state_mentions"),
    ]

    operations = [
        migrations.RunPython(refuse_case_duplicates, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="room",
            constraint=models.UniqueConstraint(
                django.db.models.functions.text.Lower("slug"),
                name="room_slug_lower_unique",
                violation_error_message="This slug is not available; choose another.",
            ),
        ),
    ]
