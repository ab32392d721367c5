"""Search (``rooms.search``): the ``pg_trgm`` extension and a GIN trigram index on the current
body of messages that are not deleted (why no ``to_tsvector`` index: ``rooms.search``).
PostgreSQL only: on SQLite (``make run`` without ``DATABASE_URL``) nothing is created and
``rooms.search`` falls back to a plain scan.

The index is built ``CONCURRENTLY`` (so the migration does not hold off sends while it
builds it on a large table; it runs outside a transaction, ``atomic = False``). ``pg_trgm`` is a
trusted extension (PostgreSQL 13+): the database owner may create it without being superuser.
The expressions and the partial predicate must match ``rooms.search``'s query word for word.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

# The same text as ``rooms.search.INDEXES`` (a test compares them with pg_indexes).
INDEX_SQL = [
    (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS message_body_trgm_idx ON rooms_message "
        "USING gin (body gin_trgm_ops) WHERE deleted_at IS NULL",
        "DROP INDEX CONCURRENTLY IF EXISTS message_body_trgm_idx",
    ),
]


class PostgresOnlySQL(migrations.RunSQL):
    """``RunSQL`` that does nothing on another database (SQLite has no GIN)."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("rooms", "0005_merge_0004_direct_messages_0004_read_state_mentions"),
    ]

    operations = [
        TrigramExtension(),
        *[PostgresOnlySQL(create, drop) for create, drop in INDEX_SQL],
    ]
