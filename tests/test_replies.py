"""Replies and threads (``rooms.replies``): ``reply_to`` on every send path (the one-statement
send, the step-by-step send, the event loop's send), refusals, ``reply_count`` and
``thread.updated``, the parent preview (a deleted parent shows as deleted), the thread route,
and a fixed number of queries per history page."""

import json

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from rooms import formatting, replies, services
from rooms.message_shape import messages_data, room_list_data
from rooms.models import Message
from rooms.serializers import MessageSerializer, message_data
from tests import factories
from tests.conftest import new_client_msg_id


def post(room, author, body="hi", client_msg_id=None, reply_to=None):
    return services.message_post(
        room=room, author=author, body=body, client_msg_id=client_msg_id or body, reply_to=reply_to
    ).message


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_a_reply_names_its_parent_and_counts_on_it(
    room, user, other_user, django_capture_on_commit_callbacks
):
    parent = post(room, user, "**the question**")
    services.member_join(room=room, user=other_user)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        reply = post(room, other_user, "the answer", reply_to=parent.seq)
    assert len(callbacks) == 2  # the message, then thread.updated
    stored = Message.objects.get(pk=reply.pk)
    assert stored.reply_to_id == parent.pk
    assert Message.objects.get(pk=parent.pk).reply_count == 1
    page = api(user).get(f"/api/rooms/{room.slug}/messages/").json()["results"]
    assert page[0]["reply_to"] is None and page[0]["parent"] is None and page[0]["reply_count"] == 1
    assert page[1]["reply_to"] == parent.seq and page[1]["reply_count"] == 0
    assert page[1]["parent"] == {
        "seq": parent.seq,
        "author": {"id": user.pk, "username": "alice", "display_name": ""},
        "excerpt": "the question",  # the text readers see, not the Markdown
        "deleted": False,
    }


# A parent with every kind of markup a chat line has, and the text a reader sees of it.
MARKDOWN_PARENT = (
    "message was *edited*, **bold** ~~old~~\nsee [the docs](https://example.com/d) and `a < b` @bob"
)
PLAIN_PARENT = "message was edited, bold old see the docs and a < b @bob"


@pytest.mark.parametrize(
    "body, text",
    [
        ("message was *edited*", "message was edited"),
        ("plain line, 10\u00a0kg", "plain line, 10 kg"),
        ("[the docs](https://example.com/x) and <https://example.org>", "the docs and https://example.org"),
        ("`x <b>y</b>` &amp; & <i>raw</i>", "x <b>y</b> & & <i>raw</i>"),  # as shown: &amp; is "&"
        ("one\ntwo\n\nthree", "one two three"),
        ("- a\n- b\n\n> quoted\n\n```\nx = 1\ny\n```", "a b quoted x = 1 y"),
        ("hi @bob and @room!", "hi @bob and @room!"),
    ],
)
def test_plain_text_is_what_a_reader_sees_of_the_rendered_body(body, text):
    from rooms import mentions

    html = formatting.render(body, mentions.Parsed(names=("bob",), room=True))
    assert formatting.plain_text(html) == text
    assert replies.excerpt(html) == text and replies.excerpt("") == ""


def test_plain_text_is_nh3s_text_extraction_on_generated_bodies():
    """``plain_text`` strips tags with a pattern (the cheap way); nh3, with no tag allowed, is
    the parser it must agree with on everything ``render`` makes."""
    import html as html_module
    import random

    import nh3

    from rooms import mentions

    pieces = [
        "*em*",
        "**strong**",
        "~~gone~~",
        "`a < b & c`",
        "[link *x*](https://example.com/a?b=1&c=<d>)",
        "<https://example.org/>",
        "https://한국.kr/위키",
        "@bob",
        "@room",
        "&amp;",
        "&lt;tag&gt;",
        "<i>",
        "x>y",
        '"quoted"',
        "'q'",
        "\n",
        "\n\n",
        "\n- item\n",
        "\n> quote\n",
        "\n```\ncode <b>\n```\n",
        "\u00a0",
        "1. one\n",
        "e\u0301",
        "😀",
        "\\*",
        "_u_",
        "a_b_c",
        "http://xn--80ak6aa92e.com",
        "mailto:a@b.c",
    ]
    rng = random.Random(7)
    for _ in range(400):
        body = " ".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        rendered = formatting.render(body, mentions.Parsed(names=("bob",), room=True))
        parsed = html_module.unescape(nh3.clean(rendered, tags=set(), clean_content_tags=set()))
        assert formatting.plain_text(rendered) == " ".join(parsed.split()), body


def test_the_excerpt_is_cut_to_its_length_after_the_markup_is_gone():
    words = " ".join(["word"] * 60)
    html = formatting.render(f"**{words}**")
    assert replies.excerpt(html) == words[: replies.EXCERPT_LENGTH]
    assert len(replies.excerpt(html)) == replies.EXCERPT_LENGTH == 120


@pytest.mark.django_db
def test_the_excerpt_has_no_markdown_and_is_the_same_in_every_shape(room, user, other_user):
    services.member_join(room=room, user=other_user)
    parent = post(room, user, MARKDOWN_PARENT, client_msg_id="parent")
    replies_sent = [post(room, other_user, "one-statement", reply_to=parent.seq)]  # PostgreSQL's send
    vendor = connection.vendor
    try:
        connection.vendor = "sqlite"  # message_post's step-by-step branch, on the same PostgreSQL
        replies_sent.append(post(room, other_user, "step-by-step", reply_to=parent.seq))
    finally:
        connection.vendor = vendor
    expected = {
        "seq": parent.seq,
        "author": {"id": user.pk, "username": "alice", "display_name": ""},
        "excerpt": PLAIN_PARENT,
        "deleted": False,
    }
    live = [message_data(reply)["parent"] for reply in replies_sent]  # the broadcast frames' shape
    history = room_list_data(limit=50, room_id=room.pk)[1]  # REST history and the socket's replay
    rows = messages_data(Message.objects.filter(room=room).order_by("seq"))  # threads, search, SQLite
    single = api(user).get(f"/api/rooms/{room.slug}/messages/{replies_sent[0].pk}/").json()["parent"]
    serialized = MessageSerializer(Message.objects.get(pk=replies_sent[1].pk)).data["parent"]
    thread = api(user).get(f"/api/rooms/{room.slug}/messages/{parent.pk}/replies/").json()["results"]
    assert [m["parent"] for m in history[1:]] == [m["parent"] for m in rows[1:]] == [expected, expected]
    assert live == [expected, expected] and single == serialized == expected
    assert [m["parent"] for m in thread] == [expected, expected]


@pytest.mark.django_db
def test_an_edited_parents_excerpt_follows_its_body_and_a_deleted_one_is_empty(room, user, other_user):
    parent = post(room, user, "message was *edited*")
    reply = post(room, other_user, "yes", reply_to=parent.seq)

    def excerpts():
        page = room_list_data(limit=50, room_id=room.pk)[1]
        listed = messages_data(Message.objects.filter(pk=reply.pk))
        one = api(user).get(f"/api/rooms/{room.slug}/messages/{reply.pk}/").json()
        return {page[-1]["parent"]["excerpt"], listed[0]["parent"]["excerpt"], one["parent"]["excerpt"]}

    assert excerpts() == {"message was edited"}
    services.message_edit(message=Message.objects.get(pk=parent.pk), actor=user, body="now **bold**")
    assert excerpts() == {"now bold"}
    services.message_delete(message=Message.objects.get(pk=parent.pk), actor=user)
    assert excerpts() == {""}
    assert room_list_data(limit=50, room_id=room.pk)[1][-1]["parent"]["deleted"] is True


@pytest.mark.django_db
def test_the_one_statement_send_stores_a_reply_in_its_statement(room, user, other_user):
    parent = post(room, user, "q")
    with CaptureQueriesContext(connection) as captured:
        reply = services._post_in_one_statement(
            room=room, author=other_user, body="a", client_msg_id="a", reply_to=parent.seq
        )
    statements = [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert reply is not None and len(statements) == 1  # the test's transaction adds a savepoint
    assert reply.parent_preview == {
        "seq": parent.seq,
        "author": {"id": user.pk, "username": "alice", "display_name": ""},
        "excerpt": "q",
        "deleted": False,
    }
    assert reply.parent_reply_count == 1 == Message.objects.get(pk=parent.pk).reply_count
    assert (
        services._post_in_one_statement(
            room=room, author=other_user, body="b", client_msg_id="b", reply_to=999
        )
        is None
    )


@pytest.mark.django_db
def test_the_step_by_step_send_stores_a_reply_the_same_way(room, user, other_user):
    parent = post(room, user, "q")
    vendor = connection.vendor
    try:
        connection.vendor = "sqlite"  # message_post's step-by-step branch, on the same PostgreSQL
        reply = post(room, other_user, "a", reply_to=parent.seq)
        with pytest.raises(services.ReplyNotFound):
            post(room, other_user, "b", reply_to=99)
    finally:
        connection.vendor = vendor
    assert Message.objects.get(pk=reply.pk).reply_to_id == parent.pk
    assert Message.objects.get(pk=parent.pk).reply_count == 1
    assert not Message.objects.filter(body="b").exists()


@pytest.mark.django_db
def test_a_reply_to_a_missing_deleted_or_other_rooms_seq_is_refused_and_stores_nothing(room, user):
    elsewhere = factories.make_room(created_by=user, slug="elsewhere")
    for _ in range(3):
        post(elsewhere, user, f"there {_}")  # seqs 1..3 exist only in the other room
    first = post(room, user, "first")
    gone = post(room, user, "gone")
    services.message_delete(message=gone, actor=user)
    last_seq = type(room).objects.get(pk=room.pk).last_seq
    for reply_to in (3, 999, gone.seq):
        with pytest.raises(services.ReplyNotFound):
            post(room, user, f"reply to {reply_to}", reply_to=reply_to)
    response = api(user).post(
        f"/api/rooms/{room.slug}/messages/", {"body": "x", "client_msg_id": "x", "reply_to": 3}, format="json"
    )
    assert response.status_code == 400 and response.json()["code"] == "reply_not_found"
    assert type(room).objects.get(pk=room.pk).last_seq == last_seq  # no seq taken
    assert Message.objects.get(pk=first.pk).reply_count == 0


@pytest.mark.django_db
@pytest.mark.parametrize("reply_to", ["1", 1.0, True, 0, -1, 2**63, [1]])
def test_rest_refuses_a_reply_to_that_is_not_a_seq(room, user, reply_to):
    post(room, user, "first")
    response = api(user).post(
        f"/api/rooms/{room.slug}/messages/",
        {"body": "x", "client_msg_id": "x", "reply_to": reply_to},
        format="json",
    )
    assert response.status_code == 400 and "reply_to" in response.json()


@pytest.mark.django_db
def test_deleting_a_reply_counts_it_out_and_a_deleted_parent_shows_as_deleted(
    room, user, django_capture_on_commit_callbacks
):
    parent = post(room, user, "parent")
    replies = [post(room, user, f"r{i}", reply_to=parent.seq) for i in range(2)]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.message_delete(message=replies[0], actor=user)
    assert len(callbacks) == 2  # message.deleted and thread.updated
    assert Message.objects.get(pk=parent.pk).reply_count == 1
    services.message_delete(message=parent, actor=user)
    shown = api(user).get(f"/api/rooms/{room.slug}/messages/{replies[1].pk}/").json()
    assert shown["reply_to"] == parent.seq
    assert shown["parent"] == {
        "seq": parent.seq,
        "author": {"id": user.pk, "username": "alice", "display_name": ""},
        "excerpt": "",
        "deleted": True,
    }


@pytest.mark.django_db
def test_the_thread_route_pages_replies_by_seq(room, user, other_user):
    parent = post(room, user, "parent")
    other = post(room, user, "unrelated")
    ids = [post(room, user, f"r{i}", reply_to=parent.seq).seq for i in range(5)]
    post(room, user, "reply to another", reply_to=other.seq)
    url = f"/api/rooms/{room.slug}/messages/{parent.pk}/replies/"
    first = api(user).get(url, {"limit": 3}).json()
    assert first["parent"]["seq"] == parent.seq and first["parent"]["reply_count"] == 5
    assert [m["seq"] for m in first["results"]] == ids[:3] and first["has_more"] is True
    rest = api(user).get(url, {"limit": 3, "after_seq": ids[2]}).json()
    assert [m["seq"] for m in rest["results"]] == ids[3:] and rest["has_more"] is False
    assert api(user).get(url, {"limit": 0}).status_code == 400
    private = factories.make_room(created_by=user, slug="secret", is_private=True)
    hidden = post(private, user, "hidden")
    assert api(other_user).get(f"/api/rooms/secret/messages/{hidden.pk}/replies/").status_code == 404


@pytest.mark.django_db
def test_a_history_page_with_replies_takes_a_fixed_number_of_queries(room, user):
    parent = post(room, user, "p0")
    post(room, user, "r0", reply_to=parent.seq)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert api(user).get(f"/api/rooms/{room.slug}/messages/", {"limit": 200}).status_code == 200
        return len(captured)

    few = queries()
    for i in range(1, 20):
        p = post(room, user, f"p{i}", f"p{i}")
        post(room, user, f"r{i}", f"r{i}", reply_to=p.seq)
    assert queries() == few


@pytest.mark.django_db(transaction=True)
async def test_a_socket_reply_is_broadcast_with_its_parent_and_thread_updated(ws, room, user, other_user):
    parent = await database_sync_to_async(post)(room, user, "*question*")
    await database_sync_to_async(services.member_join)(room=room, user=other_user)
    alice = await ws(f"/ws/rooms/{room.slug}/", user=user)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    for conn in (alice, bob):
        assert await conn.connect()
        await conn.receive_type("hello")
    await bob.send({"type": "message.send", "body": "answer", "client_msg_id": "r-1", "reply_to": parent.seq})
    frames = [await bob.receive() for _ in range(3)]
    assert {f["type"] for f in frames} == {"ack", "message", "thread.updated"}
    message = next(f for f in frames if f["type"] == "message")["message"]
    assert message["reply_to"] == parent.seq and message["parent"]["excerpt"] == "question"  # not *question*
    seen_by_alice = [await alice.receive() for _ in range(2)]
    assert {"type": "thread.updated", "room": "lobby", "seq": parent.seq, "reply_count": 1} in seen_by_alice
    # refused: an error frame, the socket kept, nothing stored
    await bob.send(
        {"type": "message.send", "body": "lost", "client_msg_id": new_client_msg_id(), "reply_to": 77}
    )
    error = await bob.receive_type("error")
    assert error["code"] == "reply_not_found"
    await bob.send(
        {"type": "message.send", "body": "x", "client_msg_id": new_client_msg_id(), "reply_to": "1"}
    )
    assert (await bob.receive_type("error"))["code"] == "invalid_field"
    assert await alice.nothing_more()
    count = await database_sync_to_async(lambda: Message.objects.get(pk=parent.pk).reply_count)()
    assert count == 1
    json.dumps(message)
    await alice.close()
    await bob.close()
