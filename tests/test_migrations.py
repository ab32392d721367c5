"""Data migrations that check existing rows before adding a constraint, on the real PostgreSQL."""

import importlib

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = ("rooms", "0005_merge_0004_direct_messages_0004_read_state_mentions")
SLUG_LOWER = ("rooms", "0006_room_slug_lower_unique")
slug_migration = importlib.import_module("rooms.migrations.0006_room_slug_lower_unique")


def migrate(target):
    """Migrate the rooms app to ``target``; the models as they are there."""
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


def latest():
    executor = MigrationExecutor(connection)
    return [key for key in executor.loader.graph.leaf_nodes() if key[0] == "rooms"][0]


@pytest.mark.django_db(transaction=True)
def test_the_case_insensitive_slug_migration_stops_loudly_on_existing_duplicates_and_changes_nothing():
    try:
        apps = migrate(BEFORE)
        User, Room = apps.get_model("auth", "User"), apps.get_model("rooms", "Room")
        owner = User.objects.create(username="owner")
        rooms = [
            Room.objects.create(slug=slug, name=f"room {slug}", created_by=owner)
            for slug in ("General", "general", "GENERAL", "Other", "fine")
        ]
        with pytest.raises(slug_migration.SlugsDifferOnlyInCase) as refused:
            migrate(SLUG_LOWER)
        text = str(refused.value)
        assert "3 slug(s)" not in text and "2 slug(s)" not in text  # one group: general (3 rooms)
        assert "1 slug(s)" in text and all(f"room id {r.pk}: slug {r.slug!r}" in text for r in rooms[:3])
        assert "'fine'" not in text and "Nothing was changed" in text
        assert sorted(Room.objects.values_list("slug", flat=True)) == sorted(r.slug for r in rooms)
        assert MigrationExecutor(connection).loader.applied_migrations.keys().isdisjoint({SLUG_LOWER})

        Room.objects.filter(pk__in=[rooms[1].pk, rooms[2].pk]).delete()  # the operator resolves them
        apps = migrate(SLUG_LOWER)
        from django.db import IntegrityError, transaction

        with pytest.raises(IntegrityError), transaction.atomic():
            apps.get_model("rooms", "Room").objects.create(
                slug="GENERAL", name="again", created_by_id=owner.pk
            )
    finally:
        migrate(latest())
