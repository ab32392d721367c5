"""``GET /api/rooms/<slug>/messages/`` (``MessageViewSet.list``), pinned from the outside: the
answer to a plain query (the route's own parser, ``rooms.api.plain_history_query``, and one
statement for the room's visibility and the page) and to any other query (``HistoryQuery``)
must be the bytes, statuses and error bodies the route gave through ``HistoryQuery`` and the
room's lookup before the page. The expected bodies are literals or built by
``MessageSerializer`` over model instances, never by the code under test."""

import json
import unicodedata
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from rooms import consumers, reactions, selectors, services
from rooms.api import HistoryQuery, plain_history_query
from rooms.models import Message
from rooms.serializers import MessageSerializer
from tests import factories

pytestmark = pytest.mark.django_db

NOT_FOUND = b'{"detail":"Not found.","code":"not_found"}'


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def talk(room, user, other_user):
    """``lobby`` with 30 messages: mentions, reactions, a reply, an edit, a deletion."""
    services.member_join(room=room, user=other_user)
    for i in range(1, 31):
        author = user if i % 3 else other_user
        body = f"@bob message {i} 한국어 ☕" if i % 7 == 0 else f"message {i}"
        reply_to = 2 if i == 20 else None
        message = services.message_post(
            room=room, author=author, body=body, client_msg_id=f"t{i}", reply_to=reply_to
        ).message
        if i % 5 == 0:
            reactions.reaction_add(message=message, user=other_user, emoji="👍")
            reactions.reaction_add(message=message, user=user, emoji="🎉")
    services.message_edit(message=Message.objects.get(room=room, seq=4), actor=user, body="edited @bob")
    services.message_delete(message=Message.objects.get(room=room, seq=10), actor=user)
    return room


def expected(room, *, after_seq=None, before_seq=None, limit=50) -> bytes:
    """The page as ``MessageSerializer`` renders it over the messages as instances."""
    qs = Message.objects.filter(room=room).select_related(*selectors.MESSAGE_RELATED)
    if after_seq is not None:
        rows = list(qs.filter(seq__gt=after_seq).order_by("seq")[: limit + 1])
        has_more, rows = len(rows) > limit, rows[:limit]
    else:
        if before_seq is not None:
            qs = qs.filter(seq__lt=before_seq)
        rows = list(reversed(qs.order_by("-seq")[: limit + 1]))
        has_more, rows = len(rows) > limit, rows[-limit:]
    data = MessageSerializer(selectors.attach(rows), many=True).data
    return JSONRenderer().render({"results": data, "has_more": has_more})


PAGES = [
    ({}, {}),
    ({"limit": "7"}, {"limit": 7}),
    ({"limit": "200"}, {"limit": 200}),
    ({"limit": "1"}, {"limit": 1}),
    ({"before_seq": "12", "limit": "5"}, {"before_seq": 12, "limit": 5}),
    ({"before_seq": "1"}, {"before_seq": 1}),
    ({"before_seq": "9223372036854775807"}, {"before_seq": 2**63 - 1}),
    ({"after_seq": "0", "limit": "4"}, {"after_seq": 0, "limit": 4}),
    ({"after_seq": "8", "limit": "3"}, {"after_seq": 8, "limit": 3}),
    ({"after_seq": "25"}, {"after_seq": 25}),
    ({"after_seq": "30"}, {"after_seq": 30}),
    ({"after_seq": "9223372036854775807"}, {"after_seq": 2**63 - 1}),
    # Empty values are left out, as HistoryQuery does; other parameters are ignored.
    ({"after_seq": "", "limit": ""}, {}),
    ({"before_seq": "", "after_seq": "3", "limit": "2"}, {"after_seq": 3, "limit": 2}),
    ({"limit": "5", "anything": "x"}, {"limit": 5}),
    ({"limit": "0005"}, {"limit": 5}),
    ({"format": "json", "limit": "3"}, {"limit": 3}),
    # Not plain, but accepted by HistoryQuery (IntegerField's int()): the same values.
    ({"limit": "+5"}, {"limit": 5}),
    ({"limit": " 5 "}, {"limit": 5}),
    ({"limit": "5.0"}, {"limit": 5}),
    ({"limit": "٣"}, {"limit": 3}),  # ARABIC-INDIC DIGIT THREE: int() takes it
    ({"before_seq": "00000000000000000000012"}, {"before_seq": 12}),
]


@pytest.mark.parametrize("params, query", PAGES, ids=[json.dumps(p, ensure_ascii=False) for p, _ in PAGES])
def test_a_page_is_the_serializers_json_byte_for_byte(talk, user, params, query):
    response = api(user).get(f"/api/rooms/{talk.slug}/messages/", params)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.content == expected(talk, **query)


def test_a_repeated_parameter_counts_by_its_last_value_as_in_drf(talk, user):
    response = api(user).get(
        f"/api/rooms/{talk.slug}/messages/?limit=3&limit=4&before_seq=2000&before_seq=20"
    )
    assert response.content == expected(talk, limit=4, before_seq=20)


def test_a_page_in_another_time_zone_is_the_serializers_json(talk, user):
    with timezone.override("Asia/Seoul"):
        response = api(user).get(f"/api/rooms/{talk.slug}/messages/", {"limit": 10})
        assert response.content == expected(talk, limit=10)
    assert json.loads(response.content)["results"][0]["created_at"].endswith("+09:00")


def test_a_timestamp_on_a_whole_second_has_no_fraction_as_in_drf(talk, user):
    Message.objects.filter(room=talk, seq=30).update(created_at=datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC))
    Message.objects.filter(room=talk, seq=29).update(
        created_at=datetime(2026, 12, 5, 8, 0, 0, 120000, tzinfo=UTC)
    )
    response = api(user).get(f"/api/rooms/{talk.slug}/messages/", {"limit": 2})
    assert response.content == expected(talk, limit=2)
    stamps = [m["created_at"] for m in json.loads(response.content)["results"]]
    assert stamps == ["2026-12-05T08:00:00.120000Z", "2026-12-05T08:00:00Z"]


def test_an_empty_room_answers_an_empty_page(room, user):
    for params in ({}, {"after_seq": 0}, {"before_seq": 5}):
        response = api(user).get("/api/rooms/lobby/messages/", params)
        assert response.status_code == 200 and response.content == b'{"results":[],"has_more":false}'


# --- errors ---------------------------------------------------------------------------------------


def field_error(field: str, text: str) -> bytes:
    return json.dumps({field: [text]}, separators=(",", ":")).encode()


BAD = [
    ({"limit": "0"}, field_error("limit", "Ensure this value is greater than or equal to 1.")),
    ({"limit": "201"}, field_error("limit", "Ensure this value is less than or equal to 200.")),
    ({"limit": "-1"}, field_error("limit", "Ensure this value is greater than or equal to 1.")),
    ({"limit": "x"}, field_error("limit", "A valid integer is required.")),
    ({"limit": "1e3"}, field_error("limit", "A valid integer is required.")),
    ({"limit": "5.5"}, field_error("limit", "A valid integer is required.")),
    ({"limit": "9" * 1001}, field_error("limit", "String value too large.")),
    ({"after_seq": "-1"}, field_error("after_seq", "Ensure this value is greater than or equal to 0.")),
    ({"after_seq": "x"}, field_error("after_seq", "A valid integer is required.")),
    (
        {"after_seq": str(2**63)},
        field_error("after_seq", "Ensure this value is less than or equal to 9223372036854775807."),
    ),
    ({"before_seq": "0"}, field_error("before_seq", "Ensure this value is greater than or equal to 1.")),
    (
        {"before_seq": "99999999999999999999"},
        field_error("before_seq", "Ensure this value is less than or equal to 9223372036854775807."),
    ),
    (
        {"after_seq": "1", "before_seq": "5"},
        field_error("non_field_errors", "Give after_seq or before_seq, not both."),
    ),
    (
        {"after_seq": "0", "before_seq": "1"},
        field_error("non_field_errors", "Give after_seq or before_seq, not both."),
    ),
]


@pytest.mark.parametrize("params, body", BAD, ids=[json.dumps(p)[:60] for p, _ in BAD])
def test_a_bad_query_answers_400_with_drfs_field_errors(talk, user, params, body):
    response = api(user).get(f"/api/rooms/{talk.slug}/messages/", params)
    assert response.status_code == 400
    assert response.content == body


@pytest.mark.parametrize("params, body", BAD[:4], ids=[json.dumps(p)[:60] for p, _ in BAD[:4]])
def test_a_bad_query_answers_in_the_callers_language(talk, user, params, body):
    client = api(user)
    response = client.get(f"/api/rooms/{talk.slug}/messages/", params, HTTP_ACCEPT_LANGUAGE="ko")
    assert response.status_code == 400 and response.content != body
    assert list(json.loads(response.content)) == list(json.loads(body))


@pytest.fixture
def secret(user, other_user):
    """A private room of alice's, with one message; bob is not in it."""
    room = factories.make_room(created_by=user, slug="secret", name="Secret", is_private=True)
    services.message_post(room=room, author=user, body="hush", client_msg_id="s1")
    return room


@pytest.mark.parametrize(
    "params", [{}, {"limit": "0"}, {"after_seq": "1", "before_seq": "2"}, {"limit": "+1"}]
)
def test_a_room_one_may_not_see_is_404_before_any_400(secret, other_user, params):
    for slug in ("secret", "no-such-room", quote("없는-방"), "bad%00slug", "x" * 300):
        response = api(other_user).get(f"/api/rooms/{slug}/messages/", params)
        assert (response.status_code, response.content) == (404, NOT_FOUND), slug


def test_a_banned_member_of_a_private_room_gets_404_and_a_member_the_page(secret, user, other_user):
    services.member_add(room=secret, actor=user, user=other_user)
    assert api(other_user).get("/api/rooms/secret/messages/").content == expected(secret)
    services.member_ban(room=secret, actor=user, user=other_user)
    response = api(other_user).get("/api/rooms/secret/messages/")
    assert (response.status_code, response.content) == (404, NOT_FOUND)


def test_a_banned_user_still_reads_a_public_room_as_before(talk, user, other_user):
    services.member_ban(room=talk, actor=user, user=other_user)
    assert api(other_user).get("/api/rooms/lobby/messages/").content == expected(talk)


def test_a_slug_in_another_unicode_form_finds_the_room(user):
    room = factories.make_room(created_by=user, slug="일반-대화방", name="일반 대화방")
    services.message_post(room=room, author=user, body="안녕", client_msg_id="k")
    nfd = quote(unicodedata.normalize("NFD", "일반-대화방"))
    assert api(user).get(f"/api/rooms/{nfd}/messages/").content == expected(room)


def test_authentication_comes_first_and_a_token_works(talk, user):
    anonymous = APIClient()
    for slug in ("lobby", "no-such-room"):
        response = anonymous.get(f"/api/rooms/{slug}/messages/", {"limit": "0"})
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
        assert response.content == b'{"detail":"Authentication credentials were not provided."}'
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
    assert client.get("/api/rooms/lobby/messages/", {"limit": 3}).content == expected(talk, limit=3)
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert client.get("/api/rooms/lobby/messages/").content == b'{"detail":"Invalid token."}'


def test_a_session_works_and_the_headers_are_drfs(talk, user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    response = client.get("/api/rooms/lobby/messages/", {"limit": 2})
    assert response.status_code == 200 and response.content == expected(talk, limit=2)
    assert response["Content-Type"] == "application/json"
    assert response["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert "Accept" in response["Vary"]


def test_format_and_accept_are_negotiated_as_before(talk, user):
    client = api(user)
    assert client.get("/api/rooms/lobby/messages/", {"format": "xml"}).content == NOT_FOUND
    response = client.get("/api/rooms/lobby/messages/", HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert response.content == b'{"detail":"Could not satisfy the request Accept header."}'
    head = client.head("/api/rooms/lobby/messages/")
    assert head.status_code == 200


# --- the parser and the statements ----------------------------------------------------------------


QUERIES = [params for params, _ in PAGES + BAD] + [{"limit": ["3", "x"]}, {"limit": ["x", "3"]}]


@pytest.mark.parametrize("params", QUERIES, ids=[json.dumps(p)[:60] for p in QUERIES])
def test_the_plain_parser_agrees_with_history_query_or_leaves_it_the_answer(params):
    query = QueryDict(mutable=True)
    for name, value in params.items():
        query.setlist(name, value if isinstance(value, list) else [value])
    plain = plain_history_query(query)
    checked = HistoryQuery(data=query)
    if plain is None:
        return  # HistoryQuery answers (its 400, or its values)
    assert checked.is_valid(), checked.errors
    data = checked.validated_data
    assert plain == (data.get("after_seq"), data.get("before_seq"), data["limit"])


def test_a_page_is_one_statement_and_a_resume_too(talk, user):
    client = api(user)
    for params in ({}, {"before_seq": 20, "limit": 5}, {"after_seq": 3}):
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/rooms/lobby/messages/", params).status_code == 200
        assert len(queries) == 1, [q["sql"][:80] for q in queries]
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/rooms/no-such-room/messages/").status_code == 404
    assert len(queries) == 1
    with CaptureQueriesContext(connection) as queries:
        frames, reached = consumers._replay(room=talk, after_seq=0)
    assert len(queries) == 1 and len(frames) == 30 and reached == 30
