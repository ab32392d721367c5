"""The message shape for lists (``rooms.message_shape``), checked against ``MessageSerializer``,
the shape's definition: a room holding every feature (edited, deleted, mentions and ``@room``,
reactions by several people, replies to live and deleted parents, an image and a file, Markdown
and links, display names, a long parent) gives the same dicts and the same JSON text on every
path that now uses it: REST history (newest, ``before_seq``, ``after_seq``), the socket's
resume frames and fetch, the thread route and the room page; in UTC and in another time zone;
in a fixed number of queries."""

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from rooms import attachments, consumers, events, message_shape, reactions, replies, selectors, services
from rooms.models import Message
from rooms.serializers import MessageSerializer
from tests import factories


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """Uploads into this test's own folder."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
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


@pytest.mark.django_db
def test_the_room_holds_every_feature(full_room):
    shapes = expected(full_room)
    assert any(m["edited_at"] for m in shapes) and any(m["deleted"] for m in shapes)
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
