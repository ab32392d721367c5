"""Search (``rooms.search``): short terms get an index too. ``message_search_grams(body)``, an
immutable SQL function, gives every two-character substring of ``lower(body)`` and every
character from U+1100 up (Hangul, kana, CJK ideographs: a one-character Korean or Japanese
word); a GIN index over it, on the current body of messages that are not deleted, serves
``"body" ILIKE '%ok%'`` or ``LIKE '%회의%'`` / ``'%밥%'`` through ``grams @> ARRAY[lower(term)]``
(a trigram index cannot: a term under 3 characters has no trigram). Why and the figures:
``rooms.search`` and bench/RESULTS.md (2026-12-05, "search2").

Built with plain functions (``regexp_replace``, ``string_to_array``): about 35 µs per body of a
chat line, against 340 µs for a ``generate_series`` version. The index is built
``CONCURRENTLY`` (``atomic = False``), about 90 s and 92 MB per million messages. PostgreSQL only
(SQLite: nothing, ``rooms.search`` falls back to a scan). The expression and the predicate must
match ``rooms.search``'s query word for word. With it, ``message_room_live_id_idx`` (a
btree on ``(room_id, id)`` of live messages, 30 MB per million): the newest-first walk of each
room for a one-term query whose gram is common (``rooms.search``).
"""

from django.db import migrations

# The index: the same text as ``rooms.search.INDEXES``. The function is defined again, without
# STRICT, by 0012.
FUNCTION_SQL = (
    "CREATE OR REPLACE FUNCTION message_search_grams(body text) RETURNS text[] "
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ "
    "SELECT string_to_array("
    "regexp_replace(lower(body), '(..)', E'\\\\1\\x1f', 'g') || E'\\x1f' || "
    "regexp_replace(substr(lower(body), 2), '(..)', E'\\\\1\\x1f', 'g') || E'\\x1f' || "
    "regexp_replace(regexp_replace(body, '[\\u0001-\\u10ff\\s]+', '', 'g'), '(.)', E'\\\\1\\x1f', 'g'), "
    "E'\\x1f') $$",
    "DROP FUNCTION IF EXISTS message_search_grams(text)",
)
INDEX_SQL = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS message_body_grams_idx ON rooms_message "
    "USING gin (message_search_grams(body)) WHERE deleted_at IS NULL",
    "DROP INDEX CONCURRENTLY IF EXISTS message_body_grams_idx",
)
# A room's live messages newest first: the walk of a one-term query whose gram is common.
WALK_INDEX_SQL = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS message_room_live_id_idx ON rooms_message "
    "USING btree (room_id, id) WHERE deleted_at IS NULL",
    "DROP INDEX CONCURRENTLY IF EXISTS message_room_live_id_idx",
)


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
        ("rooms", "0009_merge"),
    ]

    operations = [
        PostgresOnlySQL(*FUNCTION_SQL),
        PostgresOnlySQL(*INDEX_SQL),
        PostgresOnlySQL(*WALK_INDEX_SQL),
    ]
