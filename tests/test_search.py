"""Search (``rooms.search``): ``GET /api/search/`` and the search page against the real
PostgreSQL (pg_trgm, the migration's GIN indexes): Korean substrings, who finds what, deleted and
edited messages, cursor paging, highlights, refusals; the room page's landing at a found seq; the
bench's command on a tiny data set."""

import os
import re
import subprocess
import sys
import uuid

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from rooms import search, services
from rooms.models import Message
from tests import factories
from tests.nodes import database_url_for_tests

URL = "/api/search/"


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def bob_api(other_user):
    client = APIClient()
    client.force_authenticate(other_user)
    return client


def post(room, author, body):
    return services.message_post(room=room, author=author, body=body, client_msg_id=uuid.uuid4().hex).message


def found(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [r["message"]["body"] for r in response.data["results"]]


# --- what is found --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_korean_word_is_found_inside_a_longer_word_with_its_place_highlighted(api, room, user):
    message = post(room, user, "여기는 일반대화방입니다")
    post(room, user, "다른 이야기")
    response = api.get(URL, {"q": "대화"})
    assert found(response) == ["여기는 일반대화방입니다"]
    result = response.data["results"][0]
    assert result["room"] == "lobby"
    assert result["message"]["seq"] == message.seq and result["message"]["id"] == message.pk
    assert result["highlights"] == [[6, 8]]
    assert "여기는 일반대화방입니다"[6:8] == "대화"
    assert response.data["has_more"] is False and response.data["next_before"] is None


@pytest.mark.django_db
def test_japanese_and_english_substrings_case_insensitive_every_term_must_occur(api, room, user):
    post(room, user, "会議室は三階です")
    post(room, user, "We DEPLOYED the release")
    post(room, user, "deploy later, no release")
    post(room, user, "nothing here")
    assert found(api.get(URL, {"q": "会議"})) == ["会議室は三階です"]
    assert found(api.get(URL, {"q": "deploy"})) == ["deploy later, no release", "We DEPLOYED the release"]
    assert found(api.get(URL, {"q": "release  deployed"})) == ["We DEPLOYED the release"]
    response = api.get(URL, {"q": "Deploy release"})
    assert response.data["results"][1]["highlights"] == [[3, 9], [16, 23]]


@pytest.mark.django_db
def test_like_wildcards_and_backslashes_are_matched_literally(api, room, user):
    post(room, user, "load is 100% now")
    post(room, user, "load is 1000 now")
    post(room, user, r"path a_b and c:\temp")
    post(room, user, "path axb")
    assert found(api.get(URL, {"q": "100%"})) == ["load is 100% now"]
    assert found(api.get(URL, {"q": "a_b"})) == [r"path a_b and c:\temp"]
    assert found(api.get(URL, {"q": "c:\\t"})) == [r"path a_b and c:\temp"]
    assert found(api.get(URL, {"q": "%%"})) == []


@pytest.mark.django_db
def test_deleted_messages_and_text_removed_by_an_edit_are_never_found(api, room, user):
    gone = post(room, user, "secret launch code")
    edited = post(room, user, "the password is hunter2")
    services.message_delete(message=gone, actor=user)
    services.message_edit(message=edited, actor=user, body="the password is in the vault")
    assert found(api.get(URL, {"q": "launch"})) == []
    assert found(api.get(URL, {"q": "hunter2"})) == []
    assert found(api.get(URL, {"q": "vault"})) == ["the password is in the vault"]
    assert api.get(URL, {"q": "vault"}).data["results"][0]["message"]["edited_at"] is not None


# --- who finds what -------------------------------------------------------------------------------


@pytest.fixture
def rooms_of_three(room, user, other_user):
    """lobby (public; alice and bob), attic (private; alice only), plaza (public; alice only),
    and bob banned from hall (public, alice's)."""
    services.member_join(room=room, user=other_user)
    attic = factories.make_room(created_by=user, slug="attic", is_private=True)
    plaza = factories.make_room(created_by=user, slug="plaza")
    hall = factories.make_room(created_by=user, slug="hall")
    services.member_join(room=hall, user=other_user)
    post(room, user, "marmalade in the lobby")
    post(attic, user, "marmalade in the attic")
    post(plaza, user, "marmalade in the plaza")
    post(hall, user, "marmalade in the hall")
    services.member_ban(room=hall, actor=user, user=other_user)
    return {"lobby": room, "attic": attic, "plaza": plaza, "hall": hall}


@pytest.mark.django_db
def test_a_private_rooms_messages_never_reach_a_non_member(api, bob_api, rooms_of_three):
    assert found(api.get(URL, {"q": "marmalade"})) == [
        "marmalade in the hall",
        "marmalade in the plaza",
        "marmalade in the attic",
        "marmalade in the lobby",
    ]
    assert found(bob_api.get(URL, {"q": "marmalade"})) == ["marmalade in the lobby"]
    response = bob_api.get(URL, {"q": "marmalade", "room": "attic"})
    assert response.status_code == 404 and response.json() == {"detail": "Not found.", "code": "not_found"}
    assert bob_api.get(URL, {"q": "marmalade", "room": "no-such-room"}).json() == {
        "detail": "Not found.",
        "code": "not_found",
    }


@pytest.mark.django_db
def test_a_public_room_not_joined_is_searched_only_when_named_and_a_ban_hides_it(bob_api, rooms_of_three):
    assert found(bob_api.get(URL, {"q": "marmalade", "room": "plaza"})) == ["marmalade in the plaza"]
    assert found(bob_api.get(URL, {"q": "marmalade", "room": "lobby"})) == ["marmalade in the lobby"]
    assert bob_api.get(URL, {"q": "marmalade", "room": "hall"}).status_code == 404  # banned


@pytest.mark.django_db
def test_a_former_member_of_a_private_room_no_longer_finds_its_messages(
    api, user, other_user, rooms_of_three
):
    attic = rooms_of_three["attic"]
    services.member_add(room=attic, actor=user, user=other_user, role="member")
    bob_api = APIClient()
    bob_api.force_authenticate(other_user)
    assert "marmalade in the attic" in found(bob_api.get(URL, {"q": "marmalade"}))
    services.member_leave(room=attic, user=other_user)
    assert "marmalade in the attic" not in found(bob_api.get(URL, {"q": "marmalade"}))
    assert bob_api.get(URL, {"q": "marmalade", "room": "attic"}).status_code == 404


@pytest.mark.django_db
def test_search_needs_a_signed_in_user(db):
    response = APIClient().get(URL, {"q": "marmalade"})
    assert response.status_code == 401


# --- paging ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_follow_the_cursor_newest_first_without_repeats_or_gaps(api, room, user):
    other = factories.make_room(created_by=user, slug="other")
    sent = []
    for i in range(7):
        sent.append(post(room if i % 2 else other, user, f"apricot number {i}"))
        post(room, user, f"plum {i}")
    seen, before, pages = [], None, 0
    while True:
        params = {"q": "apricot", "limit": 3, **({"before": before} if before else {})}
        data = api.get(URL, params).data
        pages += 1
        seen += [r["message"]["id"] for r in data["results"]]
        assert data["has_more"] == (data["next_before"] is not None)
        if not data["has_more"]:
            break
        assert data["next_before"] == data["results"][-1]["message"]["id"]
        before = data["next_before"]
    assert pages == 3
    assert seen == [m.pk for m in reversed(sent)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "query_empty"),
        ({"q": ""}, "query_empty"),
        ({"q": "   "}, "query_empty"),
        ({"q": "a"}, "query_too_short"),
        ({"q": "a b"}, "query_too_short"),
        ({"q": " é "}, "query_too_short"),
        ({"q": "x" * 201}, "query_too_long"),
        ({"q": "ab\x00"}, "invalid_text"),
    ],
)
def test_an_empty_too_short_or_too_long_query_answers_400_with_detail_and_code(api, room, params, code):
    response = api.get(URL, params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str) and set(body) == {"detail", "code"}


@pytest.mark.django_db
def test_a_query_of_exactly_200_characters_and_of_two_are_searched(api, room, user):
    post(room, user, "ok then")
    assert api.get(URL, {"q": "y" * 200}).status_code == 200
    assert found(api.get(URL, {"q": "ok"})) == ["ok then"]


@pytest.mark.django_db
def test_one_and_two_character_terms_are_substrings_in_any_script_through_the_grams_index(
    api, bob_api, room, user, rooms_of_three
):
    post(room, user, "비빔밥을 먹었다")
    post(room, user, "밥은 먹었어?")
    post(room, user, "오늘 회의는 세 시, 회의실에서")
    gone = post(room, user, "밥 삭제")
    services.message_delete(message=gone, actor=user)
    edited = post(room, user, "Looks OK to me")
    services.message_edit(message=edited, actor=user, body="Seems fine to me")
    post(room, user, "BOOKS and cooks")
    post(rooms_of_three["attic"], user, "비빔밥 in the attic")
    assert found(api.get(URL, {"q": " 밥 "})) == ["비빔밥 in the attic", "밥은 먹었어?", "비빔밥을 먹었다"]
    response = api.get(URL, {"q": "회의"})
    assert found(response) == ["오늘 회의는 세 시, 회의실에서"]
    assert response.data["results"][0]["highlights"] == [[3, 5], [12, 14]]
    assert found(api.get(URL, {"q": "ok"})) == ["BOOKS and cooks"]  # a substring, any case
    assert found(api.get(URL, {"q": "밥 먹"})) == ["밥은 먹었어?", "비빔밥을 먹었다"]
    assert found(api.get(URL, {"q": "a ok"})) == ["BOOKS and cooks"]
    assert found(bob_api.get(URL, {"q": "밥"})) == ["밥은 먹었어?", "비빔밥을 먹었다"]  # not the attic's


@pytest.mark.django_db
def test_a_common_gram_walks_each_room_newest_first_with_the_same_pages_and_rooms(
    api, bob_api, room, user, rooms_of_three, monkeypatch
):
    for i in range(7):
        post(room, user, f"대화 {i}")
        post(rooms_of_three["attic"], user, f"대화 attic {i}")
        post(rooms_of_three["plaza"], user, f"no match {i}")
    gone = post(room, user, "대화 deleted")
    services.message_delete(message=gone, actor=user)
    with connection.cursor() as cur:
        cur.execute("ANALYZE rooms_message")
    # A node that has not read pg_stats yet, on a machine up for 100 s (time.monotonic() counts
    # from its start): it reads them.
    monkeypatch.setattr(search, "_gram_shares", search.NEVER_READ)
    with monkeypatch.context() as up_100_seconds:
        up_100_seconds.setattr(search.time, "monotonic", lambda: 100.0)
        assert search.gram_share("대화") >= search.COMMON_GRAM_SHARE  # 14 of 26 live messages
    assert "LATERAL" in search.page_sql(user=user, terms=["대화"])[0]
    assert "LATERAL" not in search.page_sql(user=user, terms=["대화", "attic"])[0]
    seen, before = [], None
    for _ in range(5):
        data = api.get(URL, {"q": "대화", "limit": 4, **({"before": before} if before else {})}).data
        seen += [r["message"]["body"] for r in data["results"]]
        before = data["next_before"]
        if before is None:
            break
    wanted = [b for i in reversed(range(7)) for b in (f"대화 attic {i}", f"대화 {i}")]
    assert seen == wanted
    assert found(bob_api.get(URL, {"q": "대화"})) == [f"대화 {i}" for i in reversed(range(7))]
    assert found(api.get(URL, {"q": "대화", "room": "attic"}))[0] == "대화 attic 6"
    monkeypatch.setattr(search, "WALK_MAX_ROOMS", 1)
    assert "LATERAL" not in search.page_sql(user=user, terms=["대화"])[0]
    assert found(api.get(URL, {"q": "대화", "limit": 14})) == wanted


@pytest.mark.django_db
def test_the_grams_function_holds_every_two_character_substring_and_each_cjk_character(user):
    bodies = ["Hello OK", "일반대화방입니다 밥", "会議室は三階です", "a\nb\tc  d", "x", "", "ÉCOLE École 😀!"]
    with connection.cursor() as cur:
        for body in bodies:
            cur.execute("SELECT message_search_grams(%s), lower(%s)", [body, body])
            grams, lowered = cur.fetchone()
            wanted = {lowered[i : i + 2] for i in range(len(lowered) - 1)}
            wanted |= {c for c in body if ord(c) >= 0x1100 and not c.isspace()}
            assert wanted <= set(grams), (body, wanted - set(grams))


@pytest.mark.django_db
def test_the_grams_function_is_inlined_so_no_send_parses_its_body_again(user, room):
    """Migration 0012: not ``STRICT``, so PostgreSQL puts its body in place of the call, in the
    grams index's expression and in queries alike: storing a message never calls the SQL
    function (a ``STRICT`` one is called, and its body parsed and planned again, in every
    statement that stores a message). A NULL body still gives NULL."""
    with connection.cursor() as cur:
        cur.execute("SET LOCAL track_functions = 'all'")  # the test's transaction only
        post(room, user, "회의는 세 시, ok?")
        cur.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = 'message_search_grams'"
        )
        assert cur.fetchone() == (0,)
        cur.execute("SELECT count(*) FROM rooms_message WHERE message_search_grams(body) @> ARRAY['회의']")
        assert cur.fetchone() == (1,)
        cur.execute("EXPLAIN (VERBOSE) SELECT message_search_grams(body) FROM rooms_message")
        plan = "\n".join(row[0] for row in cur.fetchall())
        cur.execute("SELECT message_search_grams(NULL), message_search_grams('')")
        assert cur.fetchone() == (None, ["", "", ""])
    assert "string_to_array" in plan and "message_search_grams" not in plan, plan


@pytest.mark.django_db(transaction=True)
def test_migration_0012_makes_connections_already_open_reread_the_index_so_searches_keep_it(user, room):
    """A connection open before the function was replaced kept the index's expression as the
    plain call and no longer matched it (searches left the grams index); the migration's SQL
    makes every session read it again, both ways."""
    import importlib

    import psycopg

    inlined = importlib.import_module("rooms.migrations.0012_message_search_grams_inlined")
    query = (
        "EXPLAIN SELECT id FROM rooms_message WHERE deleted_at IS NULL "
        "AND message_search_grams(body) @> ARRAY['ok']"
    )
    with (
        psycopg.connect(database_url_for_tests(), autocommit=True) as admin,
        psycopg.connect(database_url_for_tests(), autocommit=True) as open_before,
    ):
        admin.execute(  # enough rows that the grams index is the plan, as in a real table
            "INSERT INTO rooms_message (room_id, seq, author_id, body, client_msg_id, server_id, created_at,"
            " mentions_room, body_html, reply_count) SELECT %(room)s, n, %(user)s, 'message ' || n,"
            " 'c' || n, 'test', now(), false, '', 0 FROM generate_series(1, 20000) AS n",
            {"room": room.pk, "user": user.pk},
        )
        admin.execute("ANALYZE rooms_message")
        open_before.execute("SET enable_seqscan = off")  # 20,000 rows: a scan would be as cheap

        def uses_index() -> bool:
            return "message_body_grams_idx" in " ".join(row[0] for row in open_before.execute(query))

        try:
            for backwards in (True, False):  # migrating back to STRICT, then forwards again
                admin.execute(inlined._DEFINE.format(strict="STRICT " if backwards else ""))
                admin.execute(inlined._REREAD_INDEX)
                assert uses_index()  # its cached copy now holds this definition's expression
                admin.execute(inlined._DEFINE.format(strict="" if backwards else "STRICT "))
                assert not uses_index()  # replaced alone: the cached copy no longer matches
                admin.execute(inlined._REREAD_INDEX)
                assert uses_index()
        finally:
            admin.execute(inlined._DEFINE.format(strict=""))
            admin.execute(inlined._REREAD_INDEX)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params", [{"before": 0}, {"before": 2**63}, {"before": "x"}, {"limit": 0}, {"limit": 51}]
)
def test_a_cursor_or_limit_out_of_range_answers_400_with_field_errors(api, room, params):
    response = api.get(URL, {"q": "marmalade", **params})
    assert response.status_code == 400 and set(response.json()) == set(params)


@pytest.mark.django_db
def test_search_is_throttled_per_user_with_retry_after(api, room, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import ScopedRateThrottle

    cache.clear()
    monkeypatch.setattr(
        ScopedRateThrottle, "THROTTLE_RATES", {**ScopedRateThrottle.THROTTLE_RATES, "search": "2/min"}
    )
    assert api.get(URL, {"q": "ab"}).status_code == 200
    assert api.get(URL, {"q": "ab"}).status_code == 200
    response = api.get(URL, {"q": "ab"})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    cache.clear()


@pytest.mark.django_db
def test_the_results_page_is_throttled_per_user_with_retry_after(client, user, settings):
    from django.core.cache import cache

    cache.clear()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "search": "1/min"},
    }
    client.force_login(user)
    assert client.get(reverse("rooms:search"), {"q": "ab"}).status_code == 200
    assert client.get(reverse("rooms:search")).status_code == 200  # the empty form is not a search
    response = client.get(reverse("rooms:search"), {"q": "ab"})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "Too many searches" in response.content.decode()
    cache.clear()


# --- the SQL ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migration_made_the_indexes_the_query_is_written_for(user):
    with connection.cursor() as cur:
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'rooms_message'")
        defs = dict(cur.fetchall())
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        assert cur.fetchone()
    for name, create in search.INDEXES:
        assert name in defs
        wanted = (
            create.replace("CONCURRENTLY IF NOT EXISTS ", "")
            .replace("ON rooms_message", "ON public.rooms_message")
            .replace("WHERE deleted_at IS NULL", "WHERE (deleted_at IS NULL)")
        )
        assert re.sub(r"\s+", " ", defs[name]) == wanted


@pytest.mark.django_db
def test_the_page_is_one_statement_whose_text_condition_the_trigram_index_serves(user, room):
    """On a few rows the planner rightly reads the room's index instead (the bench's EXPLAIN
    shows the trigram bitmap ANDed with it on a million); here: the statement's own condition,
    on its own, is served by the migration's partial trigram index."""
    post(room, user, "hello there")
    sql, params = search.page_sql(user=user, terms=["there", "hel"])
    assert sql.count('"rooms_message"."body" ILIKE %s') == 2 and '"rooms_message"."deleted_at" IS NULL' in sql
    assert "ANY(ARRAY(SELECT room_id" in sql
    korean, _ = search.page_sql(user=user, terms=["대화", "OK"])
    assert '"rooms_message"."body" LIKE %s AND "rooms_message"."body" ILIKE %s' in korean
    alone = (
        Message.objects.filter(deleted_at__isnull=True)
        .filter(search._match(["there"]))
        .order_by()
        .values("pk")
    )
    alone_sql, alone_params = alone.query.get_compiler(using="default").as_sql()
    with connection.cursor() as cur:
        # The walk's btree shares the partial predicate; on a few rows the planner prefers it.
        # Dropped inside the test's transaction (rolled back after it).
        cur.execute("DROP INDEX message_room_live_id_idx")
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL enable_indexscan = off")  # no walk of another index, filtering
        cur.execute("EXPLAIN " + alone_sql, alone_params)
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "message_body_trgm_idx" in plan, plan
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        search.search_messages(user=user, q="there")
    assert len(queries) == 2, [q["sql"] for q in queries]  # the page, then its attachments
    assert "ILIKE" in queries[0]["sql"] and "rooms_attachment" in queries[1]["sql"]


@pytest.mark.django_db
def test_a_query_without_a_trigram_looks_one_term_up_in_the_grams_index(user, room):
    post(room, user, "회의 ok")
    sql, params = search.page_sql(user=user, terms=["회의", "OK", "a"])
    assert sql.count("message_search_grams") == 1 and "회의" in params and "OK" not in params
    assert "message_search_grams" not in search.page_sql(user=user, terms=["회의", "meeting"])[0]
    assert "밥" in search.page_sql(user=user, terms=["밥", "a"])[1]
    alone = (
        Message.objects.filter(deleted_at__isnull=True).filter(search._match(["ok"])).order_by().values("pk")
    )
    alone_sql, alone_params = alone.query.get_compiler(using="default").as_sql()
    with connection.cursor() as cur:
        # The walk's btree shares the partial predicate; on a few rows the planner prefers it.
        # Dropped inside the test's transaction (rolled back after it).
        cur.execute("DROP INDEX message_room_live_id_idx")
        cur.execute("SET LOCAL enable_seqscan = off")
        cur.execute("SET LOCAL enable_indexscan = off")
        cur.execute("EXPLAIN " + alone_sql, alone_params)
        plan = "\n".join(row[0] for row in cur.fetchall())
    assert "message_body_grams_idx" in plan, plan


def test_highlights_merge_overlaps_and_keep_code_point_offsets():
    assert search.highlights("abcabc", ["bc", "ca"]) == [[1, 6]]
    assert search.highlights("😀 대화 대화", ["대화"]) == [[2, 4], [5, 7]]
    assert search.highlights("no match", ["zz"]) == []
    assert search.marked("a<b>c", [[1, 4]]) == [("a", False), ("<b>", True), ("c", False)]


# --- the page -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_page_has_a_search_box_in_its_header(client, user):
    client.force_login(user)
    html = client.get(reverse("rooms:list")).content.decode()
    assert re.search(r'<form[^>]*role="search"[^>]*action="/search/"', html), html
    assert 'name="q"' in html


@pytest.mark.django_db
def test_the_results_page_marks_matches_in_escaped_text_and_links_to_the_seq(client, user, room):
    message = post(room, user, "<script>alert(1)</script> 일반대화방 <img src=x onerror=alert(2)>")
    client.force_login(user)
    response = client.get(reverse("rooms:search"), {"q": "대화"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 일반<mark>대화</mark>방 &lt;img" in html
    assert f'href="/rooms/lobby/?seq={message.seq}#message-{message.seq}"' in html
    assert 'value="대화"' in html  # the box keeps the query


@pytest.mark.django_db
def test_the_results_page_never_shows_a_private_rooms_message_to_a_non_member(
    client, other_user, rooms_of_three
):
    client.force_login(other_user)
    html = client.get(reverse("rooms:search"), {"q": "marmalade"}).content.decode()
    assert "marmalade in the lobby" in html.replace("<mark>", "").replace("</mark>", "")
    assert "attic" not in html and "plaza" not in html and "hall" not in html
    assert client.get(reverse("rooms:search"), {"q": "marmalade", "room": "attic"}).status_code == 404


@pytest.mark.django_db
def test_the_results_page_names_rooms_and_dms_as_people_read_them_never_by_slug(client, user, other_user):
    """A private room's slug carries an unguessable suffix and a DM's is internal: the page's
    heading, its help text and each result name the room (escaped) or the other person."""
    from rooms import dms

    secret = services.room_create(name="Plans <b>Q3</b>", is_private=True, created_by=user)
    post(secret, user, "pomegranate plans")
    dm = dms.dm_open(user=user, username=other_user.username).room
    post(dm, user, "pomegranate for you")
    client.force_login(user)
    html = client.get(reverse("rooms:search"), {"q": "pomegranate"}).content.decode()
    visible = re.sub(r'(href|value)="[^"]*"', "", html)  # the slugs stay in links only
    assert secret.slug not in visible and dm.slug not in visible, visible
    assert "Plans &lt;b&gt;Q3&lt;/b&gt;" in html and f"@{other_user.username}" in html
    html = client.get(reverse("rooms:search"), {"q": "pomegranate", "room": secret.slug}).content.decode()
    assert (
        "Search in Plans &lt;b&gt;Q3&lt;/b&gt;" in html
        and "here only in Plans &lt;b&gt;Q3&lt;/b&gt;." in html
    )
    html = client.get(reverse("rooms:search"), {"q": "pomegranate", "room": dm.slug}).content.decode()
    assert f"Search in @{other_user.username}" in html and dm.slug not in re.sub(
        r'(href|value)="[^"]*"', "", html
    )


@pytest.mark.django_db
def test_the_results_page_pages_and_explains_a_refused_query(client, user, room):
    for i in range(3):
        post(room, user, f"quince {i}")
    client.force_login(user)
    html = client.get(reverse("rooms:search"), {"q": "quince", "limit": 2}).content.decode()
    assert "quince 2" in html.replace("<mark>", "").replace("</mark>", "")
    assert re.search(r'href="\?q=quince&amp;before=\d+(&amp;limit=2)?"', html), html
    response = client.get(reverse("rooms:search"), {"q": "x"})
    assert response.status_code == 400 and "at least 2 characters" in response.content.decode()
    empty = client.get(reverse("rooms:search"))
    assert empty.status_code == 200 and "<mark>" not in empty.content.decode()


@pytest.mark.django_db
def test_the_room_page_lands_at_a_seq_given_in_its_address(client, user, room):
    message = post(room, user, "find me")
    client.force_login(user)
    response = client.get(reverse("rooms:detail", args=["lobby"]), {"seq": message.seq})
    assert response.context["room_config"]["land_seq"] == message.seq
    for bad in ("0", "-1", "x", str(2**63)):
        response = client.get(reverse("rooms:detail", args=["lobby"]), {"seq": bad})
        assert response.status_code == 200 and "land_seq" not in response.context["room_config"]


# --- the bench ------------------------------------------------------------------------------------


def test_the_search_bench_loads_a_tiny_data_set_into_its_own_database_and_prints_percentiles():
    base = database_url_for_tests().rsplit("/", 1)[0]
    name = f"chatsite_search_bench_test_{uuid.uuid4().hex[:8]}"
    url = f"{base}/{name}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench",
                "search",
                "--database-url",
                url,
                "--messages",
                "2000",
                "--rooms",
                "20",
                "--user-rooms",
                "5",
                "--repeat",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "| `대화` |" in proc.stdout and re.search(
            r"p50 [\d.]+ ms, p95 [\d.]+ ms, p99 [\d.]+ ms", proc.stdout
        )
        refused = subprocess.run(
            [sys.executable, "-m", "bench", "search", "--database-url", f"{base}/test_x"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert refused.returncode != 0 and "its own database" in refused.stderr
    finally:
        import psycopg

        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


# --- the schema ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_schema_documents_the_search_route_its_page_shape_refusals_and_an_example(
    api, client, room, user
):
    from tests.test_schema import fits, served_schema

    post(room, user, "schema 대화 example")
    schema = served_schema(client)
    route = schema["paths"]["/api/search/"]["get"]
    assert {p["name"] for p in route["parameters"]} == {"q", "room", "before", "limit"}
    assert {"200", "400", "401", "404", "429"} <= set(route["responses"])
    assert "Retry-After" in route["responses"]["429"]["headers"]
    assert "query_too_short" in route["description"] and "highlights" in route["description"]
    ok = route["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/SearchPage"}
    example = next(iter(ok["examples"].values()))["value"]
    real = api.get(URL, {"q": "대화"}).json()
    # (jsonschema does not read OpenAPI's "nullable", so a message is compared by its keys;
    # Schemathesis checks real answers against the schema in tests/test_schema.py.)
    assert set(example) == set(real) == set(schema["components"]["schemas"]["SearchPage"]["properties"])
    assert set(example["results"][0]) == set(real["results"][0]) == {"room", "message", "highlights"}
    assert set(example["results"][0]["message"]) == set(real["results"][0]["message"])
    assert fits(schema, "Error", api.get(URL, {"q": "x"}).json())
