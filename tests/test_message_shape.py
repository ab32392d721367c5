"""The message shape for lists (``rooms.message_shape``), checked against ``MessageSerializer``,
the shape's definition: a room holding every feature (edited, deleted, mentions and ``@room``,
reactions by several people, replies to live and deleted parents, an image and a file, Markdown
and links, display names, a long parent) gives the same dicts and the same JSON text on every
path that now uses it: REST history (newest, ``before_seq``, ``after_seq``), the socket's
resume frames and fetch, the thread route and the room page, and the two lists of results, ``GET /api/search/`` and
``GET /api/mentions/`` (compared with their serializers, ``SearchResultSerializer`` and
``MentionSerializer``, over ``rooms.search.search_messages`` and ``rooms.mentions.mentions_for``);
in UTC and in another time zone; in a fixed number of queries."""

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from rooms import (
    attachments,
    consumers,
    events,
    mentions,
    message_shape,
    reactions,
    replies,
    search,
    selectors,
    services,
)
from rooms.models import Message
from rooms.serializers import MentionSerializer, MessageSerializer, SearchResultSerializer
from tests import factories


@pytest.fixture(autouse=True)
def media(media_in_tmp, tmp_path):
    """Uploads into this test's own folder (conftest's ``media_in_tmp``)."""
    return tmp_path


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


def post(room, author, body, **extra):
    return services.message_post(
        room=room, author=author, body=body, client_msg_id=f"c-{Message.objects.count()}", **extra
    ).message


def upload(room, user, name, data):
    return attachments.attachment_upload(room=room, user=user, upload=SimpleUploadedFile(name, data)).pk


@pytest.fixture
def full_room(room, user, other_user):
    """``lobby`` with one message of each kind (and some of several), alice writing as "Alice
    Kim"; returns the room."""
    user.first_name = "Alice Kim"
    user.save(update_fields=["first_name"])
    carol = factories.make_user("carol")
    for member in (other_user, carol):
        services.member_join(room=room, user=member)
    long_parent = post(room, user, "a long question " + "x" * 200)
    post(room, user, "**bold**, _it_ and a link https://example.com/a?b=1 `code`")
    mentioned = post(room, other_user, "@alice and @carol, look (and a@example.com is no one)")
    post(room, carol, "@room 일반 대화방 🎉 everyone")
    edited = post(room, user, "first thought")
    services.message_edit(message=edited, actor=user, body="second thought, @bob")
    reacted = post(room, carol, "react to me")
    for who, emoji in ((user, "👍"), (other_user, "👍"), (carol, "🎉"), (other_user, "❤️")):
        reactions.reaction_add(message=reacted, user=who, emoji=emoji)
    reactions.reaction_add(message=mentioned, user=carol, emoji="👍")
    post(room, other_user, "an answer", reply_to=long_parent.seq)
    post(room, carol, "another answer, **bold**", reply_to=long_parent.seq)
    doomed_parent = post(room, carol, "soon gone")
    post(room, user, "answer to the gone one", reply_to=doomed_parent.seq)
    post(room, user, "answer to a reacted one", reply_to=reacted.seq)
    files = [upload(room, user, "pic.png", png()), upload(room, user, "notes.txt", b"some notes\n")]
    post(room, user, "two files", attachments=files)
    deleted = post(room, user, "gone @bob @room", attachments=[upload(room, user, "gone.txt", b"gone\n")])
    reactions.reaction_add(message=deleted, user=other_user, emoji="👍")
    post(room, other_user, "reply to soon-deleted", reply_to=deleted.seq)
    services.message_delete(message=deleted, actor=user)
    services.message_delete(message=doomed_parent, actor=carol)
    post(room, other_user, "the last one")
    return room


def serializer_data(messages) -> list[dict]:
    return json.loads(JSONRenderer().render(MessageSerializer(messages, many=True).data))


def expected(room, **query) -> list[dict]:
    """``MessageSerializer``'s output for the room's messages (instances, ``selectors.attach``)."""
    qs = Message.objects.filter(room=room, **query).select_related(*selectors.MESSAGE_RELATED)
    return serializer_data(selectors.attach(list(qs.order_by("seq"))))


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def assert_every_feature(shapes: list[dict], *, deleted: bool = True) -> None:
    """``shapes`` hold every feature of ``full_room`` (a deleted message only if ``deleted``:
    search and mentions never list one)."""
    assert any(m["edited_at"] for m in shapes) and any(m["deleted"] for m in shapes) == deleted
    assert any(m["mentions"] for m in shapes) and any(m["mentions_room"] for m in shapes)
    assert any(len(m["reactions"]) > 1 and m["reactions"][0]["count"] == 2 for m in shapes)
    assert any(m["parent"] and m["parent"]["deleted"] for m in shapes)
    assert any(m["parent"] and not m["parent"]["deleted"] for m in shapes)
    assert any(m["parent"] and m["parent"]["author"]["display_name"] == "Alice Kim" for m in shapes)
    files = [a for m in shapes for a in m["attachments"]]
    assert {a["content_type"] for a in files} == {"image/png", "text/plain"}
    assert any(a["thumbnail_url"] and a["width"] == 30 for a in files)
    assert any("<strong>" in m["body_html"] and "<a " in m["body_html"] for m in shapes)


@pytest.mark.django_db
def test_the_room_holds_every_feature(full_room):
    assert_every_feature(expected(full_room))


@pytest.mark.django_db
def test_messages_data_is_the_serializers_output_exactly(full_room):
    want = MessageSerializer(selectors.room_history(room=full_room, limit=200), many=True).data
    got = message_shape.messages_data(Message.objects.filter(room=full_room).order_by("seq"))
    assert got == [dict(m) for m in want]
    assert [list(m) for m in got] == [list(m) for m in want]  # the same keys in the same order
    render = JSONRenderer().render
    assert render(got) == render(want)
    assert events.encode_frame({"m": got}) == events.encode_frame({"m": want})


@pytest.mark.django_db
def test_the_shape_follows_the_current_time_zone_as_the_serializer_does(full_room):
    with timezone.override("Asia/Seoul"):
        want = serializer_data(selectors.room_history(room=full_room, limit=200))
        got = json.loads(JSONRenderer().render(selectors.room_history_data(room=full_room, limit=200)))
    assert got == want and want[0]["created_at"].endswith("+09:00")
    assert expected(full_room)[0]["created_at"].endswith("Z")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params, query",
    [
        ({"limit": 200}, {}),
        ({"limit": 5}, {"seq__gt": 10}),
        ({"limit": 4, "before_seq": 9}, {"seq__gte": 5, "seq__lt": 9}),
        ({"limit": 6, "after_seq": 3}, {"seq__gt": 3, "seq__lte": 9}),
        ({"limit": 200, "after_seq": 3}, {"seq__gt": 3}),
    ],
)
def test_a_rest_history_page_is_the_serializers_json(full_room, user, params, query):
    response = api(user).get(f"/api/rooms/{full_room.slug}/messages/", params)
    assert response.status_code == 200
    results = expected(full_room, **query)
    total = Message.objects.filter(room=full_room).count()
    has_more = results[0]["seq"] > 1 if "after_seq" not in params else results[-1]["seq"] < total
    assert response.content == JSONRenderer().render({"results": results, "has_more": has_more})


@pytest.mark.django_db
def test_the_resume_frames_are_the_serializers(full_room):
    frames, reached = consumers._replay(room=full_room, after_seq=2)
    want = expected(full_room, seq__gt=2)
    assert frames == [(m["seq"], events.encode_frame(events.message_frame(m))) for m in want]
    assert reached == want[-1]["seq"]
    assert consumers._replay(room=full_room, after_seq=2, upto=5)[0] == frames[:3]


@pytest.mark.django_db
def test_frames_are_the_json_modules_compact_text_exactly(full_room):
    """``events.encode_frame`` (orjson) gives the very text ``json.dumps(frame, ensure_ascii=False,
    separators=(",", ":"))`` gave: every message of a room with every feature, and the awkward
    strings (line and paragraph separators, control characters, quotes, emoji, Korean, int keys)."""
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    frames = [events.message_frame(m) for m in expected(full_room, seq__gt=0)]
    frames.append(
        {
            "type": "error",
            "text": 'a\u2028b\u2029c \x00\x1f\x7f "q" \\ </script> 😀 한국어',
            "counts": {1: 2, "x": [True, False, None, 0.5, 12.0, -3, 2**63 - 1]},
            "pair": (1, "2"),
        }
    )
    for frame in frames:
        assert events.encode_frame(frame) == compact(frame)
    for m in expected(full_room, seq__gt=0):
        assert events.encode_message_frame(m) == compact(events.message_frame(m))


@pytest.mark.django_db
def test_a_fetch_is_the_serializers_output(full_room):
    data, more = consumers._fetch(room=full_room, after_seq=1, before_seq=8)
    assert json.loads(JSONRenderer().render(data)) == expected(full_room, seq__gt=1, seq__lt=8)
    assert more is False


@pytest.mark.django_db
def test_the_thread_route_is_the_serializers_output(full_room, user):
    parent = Message.objects.get(room=full_room, seq=1)
    response = api(user).get(f"/api/rooms/{full_room.slug}/messages/{parent.pk}/replies/")
    assert response.status_code == 200
    page, _ = replies.thread_replies(parent=parent)
    selectors.attach([parent])
    want = {
        "parent": MessageSerializer(parent).data,
        "results": MessageSerializer(page, many=True).data,
        "has_more": False,
    }
    assert len(want["results"]) == 2
    assert response.content == JSONRenderer().render(want)
    one = api(user).get(f"/api/rooms/{full_room.slug}/messages/{parent.pk}/replies/", {"limit": 1}).json()
    assert one["results"] == json.loads(JSONRenderer().render(want["results"][:1])) and one["has_more"]


@pytest.mark.django_db
def test_the_room_page_carries_the_serializers_history(full_room, user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    response = client.get(f"/rooms/{full_room.slug}/")
    assert response.status_code == 200
    assert json.loads(JSONRenderer().render(response.context["history"])) == expected(full_room)


@pytest.mark.django_db
def test_a_list_takes_a_fixed_number_of_queries(full_room, user):
    def count(**query):
        with CaptureQueriesContext(connection) as queries:
            message_shape.messages_data(Message.objects.filter(room=full_room, **query).order_by("seq"))
        return len(queries)

    assert count() == 4  # rows, mentions, reactions, attachments
    assert count(seq__gt=100) == 1  # no row, nothing more
    assert count(seq__gt=14) == 3  # no body with "@": no mention query
    for i in range(20):
        post(full_room, user, f"more @bob {i}")
    assert count() == 4


@pytest.mark.django_db
def test_an_empty_room_has_an_empty_history(room, user):
    assert selectors.room_history_data(room=room) == []
    assert consumers._replay(room=room, after_seq=0) == ([], 0)
    assert api(user).get(f"/api/rooms/{room.slug}/messages/").json() == {"results": [], "has_more": False}


# --- search and mentions ------------------------------------------------------------------------


@pytest.fixture
def bob_mentioned(full_room, user, other_user):
    """``full_room`` plus messages mentioning bob (``other_user``) with every feature: an
    answer to a live parent and one to a parent deleted since, ``@room``, formatting and
    reactions by three people, two files, an edit that added the mention; one deleted (never
    listed) and one in a private room bob has left (never listed either)."""
    carol = full_room.memberships.get(user__username="carol").user
    gone = post(full_room, carol, "a parent soon gone")
    post(full_room, user, "@bob see the gone one", reply_to=gone.seq)
    post(full_room, user, "@bob, an answer", reply_to=1)
    loud = post(full_room, carol, "@room and @bob: **bold** _it_ https://example.com/x `code`")
    for who, emoji in ((user, "👍"), (other_user, "👍"), (carol, "🎉")):
        reactions.reaction_add(message=loud, user=who, emoji=emoji)
    files = [upload(full_room, user, "pic.png", png()), upload(full_room, user, "notes.txt", b"notes\n")]
    post(full_room, user, "@bob files", attachments=files)
    draft = post(full_room, user, "a draft")
    services.message_edit(message=draft, actor=user, body="a draft, @bob")
    services.message_delete(message=post(full_room, user, "@bob soon deleted"), actor=user)
    services.message_delete(message=gone, actor=carol)
    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    services.member_add(room=secret, actor=user, user=other_user)
    post(secret, user, "@bob a secret")
    services.member_remove(room=secret, actor=user, user=other_user)
    return full_room


def old_search_json(user, **params) -> bytes:
    """``GET /api/search/``'s body as the serializer made it: ``SearchResultSerializer`` over
    ``search_messages``'s instances."""
    page = search.search_messages(user=user, **params)
    return JSONRenderer().render(
        {
            "results": SearchResultSerializer(page.results, many=True).data,
            "has_more": page.next_before is not None,
            "next_before": page.next_before,
        }
    )


def old_mentions_json(user, **params) -> bytes:
    """``GET /api/mentions/``'s body as the serializer made it: ``MentionSerializer`` over
    ``mentions_for``'s instances."""
    page, has_more = mentions.mentions_for(user=user, **params)
    return JSONRenderer().render({"results": MentionSerializer(page, many=True).data, "has_more": has_more})


SEARCHES = [
    {"q": "@bob"},
    {"q": "answer"},
    {"q": "react"},
    {"q": "일반"},
    {"q": "bold"},
    {"q": "files"},
    {"q": "thought"},
    {"q": "an", "limit": 3},
]


@pytest.fixture
def fresh_throttle():
    from django.core.cache import cache

    cache.clear()  # the search throttle's counts (60/min per user) from earlier tests


@pytest.mark.django_db
@pytest.mark.parametrize("walk", [False, True], ids=["one-statement", "walk"])
def test_a_search_page_is_the_serializers_json(bob_mentioned, user, walk, monkeypatch, fresh_throttle):
    if walk:  # a common gram: each room walked newest first, then the page loaded by id
        monkeypatch.setattr(search, "gram_share", lambda gram: 1.0)
    shapes = []
    for params in SEARCHES:
        response = api(user).get("/api/search/", params)
        assert response.status_code == 200
        old = {"limit": search.DEFAULT_LIMIT, **params}
        assert response.content == old_search_json(user, **old), params
        body = response.json()
        shapes += [r["message"] for r in body["results"]]
        if body["next_before"] is not None:
            older = api(user).get("/api/search/", {**params, "before": body["next_before"]})
            assert older.content == old_search_json(user, **old, before=body["next_before"])
            assert older.json()["results"]
    assert_every_feature(shapes, deleted=False)


@pytest.mark.django_db
def test_a_search_leaves_out_a_room_the_user_may_not_read(bob_mentioned, other_user, fresh_throttle):
    response = api(other_user).get("/api/search/", {"q": "@bob"})
    assert response.content == old_search_json(other_user, q="@bob")
    assert "secret" not in {r["room"] for r in response.json()["results"]} and response.json()["results"]


@pytest.mark.django_db
def test_a_mentions_page_is_the_serializers_json(bob_mentioned, other_user):
    response = api(other_user).get("/api/mentions/")
    assert response.status_code == 200
    assert response.content == old_mentions_json(other_user)
    results = response.json()["results"]
    assert "secret" not in {r["room"] for r in results} and len(results) == 6
    assert_every_feature([r["message"] for r in results], deleted=False)
    first = api(other_user).get("/api/mentions/", {"limit": 2})
    assert first.content == old_mentions_json(other_user, limit=2) and first.json()["has_more"]
    before_id = first.json()["results"][-1]["message"]["id"]
    rest = api(other_user).get("/api/mentions/", {"limit": 2, "before_id": before_id})
    assert rest.content == old_mentions_json(other_user, limit=2, before_id=before_id)


@pytest.mark.django_db
@pytest.mark.parametrize("walk", [False, True], ids=["one-statement", "walk"])
def test_search_and_mentions_take_as_many_queries_for_20_results_as_for_2(
    bob_mentioned, user, other_user, walk, monkeypatch, fresh_throttle
):
    carol = bob_mentioned.memberships.get(user__username="carol").user
    parents = sorted(
        set(
            Message.objects.filter(room=bob_mentioned, reply_to__deleted_at__isnull=True)
            .exclude(reply_to=None)
            .values_list("reply_to__seq", flat=True)
        )
    )
    for i in range(20):  # each an answer with reactions by two people
        more = post(bob_mentioned, carol, f"@bob more {i}", reply_to=parents[i % len(parents)])
        for who, emoji in ((user, "👍"), (other_user, "🎉")):
            reactions.reaction_add(message=more, user=who, emoji=emoji)
    if walk:
        monkeypatch.setattr(search, "gram_share", lambda gram: 1.0)

    def count(path, **params):
        with CaptureQueriesContext(connection) as queries:
            response = api(other_user).get(path, params)
        assert response.status_code == 200 and len(response.json()["results"]) == params["limit"]
        return len(queries)

    query = {"q": "@b"} if walk else {"q": "@bob"}  # "@b": no trigram, a gram to walk by
    assert count("/api/search/", **query, limit=20) == count("/api/search/", **query, limit=2)
    assert count("/api/search/", **query, limit=20) <= (6 if walk else 4)
    assert count("/api/mentions/", limit=20) == count("/api/mentions/", limit=2) <= 4


# Frames for the send frame's fast acceptance: plain sends it takes, and every kind it must leave
# to the serializer (invalid ones, and valid ones with more than a plain send).
SEND_FRAMES = [
    {"body": "hello", "client_msg_id": "a"},
    {"type": "message.send", "body": "  spaced  ", "client_msg_id": "b"},
    {"body": "x" * 4000, "client_msg_id": "c" * 64},
    {"body": "x" * 4001, "client_msg_id": "c"},
    {"body": "x", "client_msg_id": "c" * 65},
    {"body": "안녕하세요 👋", "client_msg_id": "한"},
    {"body": "hello", "client_msg_id": "d", "reply_to": None},
    {"body": "hello", "client_msg_id": "e", "reply_to": 3},
    {"body": "hello", "client_msg_id": "f", "reply_to": "3"},
    {"body": "hello", "client_msg_id": "g", "attachments": []},
    {"body": "hello", "client_msg_id": "g", "attachments": [1]},
    {"body": "", "client_msg_id": "h"},
    {"body": "   \n\t", "client_msg_id": "i"},
    {"body": "\u200b\u3164", "client_msg_id": "j"},
    {"body": "a\x00b", "client_msg_id": "k"},
    {"body": "bell \x07", "client_msg_id": "k"},
    {"body": "tab\tand\r\nlines", "client_msg_id": "k"},
    {"body": "ok", "client_msg_id": "k\x00"},
    {"body": "\ud83d", "client_msg_id": "l"},
    {"body": "ok", "client_msg_id": "\ud83d"},
    {"body": "ok", "client_msg_id": ""},
    {"body": "ok", "client_msg_id": "   "},
    {"body": 5, "client_msg_id": "m"},
    {"body": "ok", "client_msg_id": 5},
    {"body": ["ok"], "client_msg_id": "n"},
    {"body": None, "client_msg_id": "o"},
    {"client_msg_id": "p"},
    {"body": "ok"},
    {},
]


@pytest.mark.parametrize("frame", SEND_FRAMES)
def test_send_frame_fast_acceptance_answers_as_the_serializer_does(frame):
    """``send_frame_accepted`` takes only what ``MessageSendFrame`` takes, with the same
    validated data; all else it leaves to the serializer (None)."""
    from rest_framework.exceptions import ValidationError

    from rooms.serializers import MessageSendFrame, send_frame_accepted

    fast = send_frame_accepted(frame)
    try:
        slow = dict(MessageSendFrame().run_validation(frame))
    except ValidationError:
        slow = None
    if fast is not None:
        assert fast == slow
    plain = set(frame) <= {"type", "body", "client_msg_id", "reply_to"} and frame.get("reply_to") is None
    assert (fast is not None) == (slow is not None and plain)
