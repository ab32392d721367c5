"""``message_search_grams(body)`` (migration 0010) without ``STRICT``, so that PostgreSQL inlines
it: the same body, the same answer for every input, and less database CPU per stored message.

Why: PostgreSQL inlines a SQL function into the expression that calls it only when nothing
changes by doing so, and a ``STRICT`` function whose body calls a function that is not strict
(``string_to_array``: it treats a NULL delimiter specially) cannot be. The grams index then ran
the function through ``fmgr_sql``, which parses, analyses and plans its body again in every
statement that evaluates it: every send's ``INSERT`` (``perf`` on a backend: ``raw_parser`` under
``fmgr_sql``). Inlined, the index expression is the body itself, built once per backend.

Measured with the send statement of ``rooms.services._post_sql`` alone, autocommit, one
connection, 2,000 statements per round, alternated (bench/RESULTS.md, "Issue 16: session 22
pass"): 725-805 µs of backend CPU per statement with ``STRICT``, 510-670 without.

Nothing else changes: a NULL body (the column is ``NOT NULL``) still gives NULL
(``string_to_array(NULL, ...)`` is NULL), so the index built by 0010 stays valid and is not
rebuilt. The query's ``message_search_grams("rooms_message"."body") @> ARRAY[...]`` is inlined
in the same way, so it still matches the index expression (``tests/test_search.py``).

A connection that was open before the change keeps the index's expression as it read it then
(the call, not inlined) until that cached copy is invalidated, and its searches then no longer
match the index: a fresh reviewer measured "커피" going from the grams index (5.4 ms) to a
filter over the user's rooms (10.3 ms) in such a connection. So, after replacing the function,
the migration invalidates that copy in every session (``ALTER INDEX ... RESET (fastupdate)``:
no change to the index, whose ``fastupdate`` is the default; a ``SHARE UPDATE EXCLUSIVE`` lock
on it, which does not conflict with the inserts and reads of sends and searches), both ways.
PostgreSQL only; SQLite has no such function.
"""

import importlib

from django.db import migrations

# 0010's own definition and its PostgreSQL-only RunSQL, not a copy of either: this migration
# takes ``STRICT `` out of that text (``{strict}``: "" forwards, "STRICT " backwards).
_FIRST = importlib.import_module("rooms.migrations.0010_message_search_grams")
_DEFINE = _FIRST.FUNCTION_SQL[0].replace("STRICT ", "{strict}")
PostgresOnlySQL = _FIRST.PostgresOnlySQL

# Every session rereads the index's expression (see above); nothing when there is no such index.
_REREAD_INDEX = (
    "DO $$ BEGIN IF to_regclass('message_body_grams_idx') IS NOT NULL THEN "
    "ALTER INDEX message_body_grams_idx RESET (fastupdate); END IF; END $$"
)


class Migration(migrations.Migration):
    dependencies = [
        ("rooms", "0011_message_room_no_own_index"),
    ]

    operations = [
        PostgresOnlySQL(
            [_DEFINE.format(strict=""), _REREAD_INDEX], [_DEFINE.format(strict="STRICT "), _REREAD_INDEX]
        ),
    ]
