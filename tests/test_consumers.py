"""The room consumer through ``chatsite.asgi.application`` (routing, Origin check, auth), on the
real Redis channel layer and PostgreSQL."""

import asyncio
import logging
import math
import os
import time

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from rooms.models import Message
from tests import factories
from tests.conftest import new_client_msg_id

pytestmark = pytest.mark.django_db(transaction=True)


async def clear_of_minute_end(margin: float = 10.0) -> None:
    """Wait for the next minute when fewer than ``margin`` seconds are left of this one: the
    ``/m`` rate limits count in fixed windows from the Unix epoch (``rooms.ratelimit``), so a
    test whose sends straddle a minute's end would see its count start again."""
    left = 60 - time.time() % 60
    if left < margin:
        await asyncio.sleep(left + 0.1)


async def send_and_collect(conn, body, client_msg_id=None):
    """Send a message and read both the ack and the sender's own copy (in either order)."""
    client_msg_id = client_msg_id or new_client_msg_id()
    await conn.send({"type": "message.send", "body": body, "client_msg_id": client_msg_id})
    frames = {}
    while len(frames) < 2:
        frame = await conn.receive()
        assert frame["type"] in ("ack", "message"), frame
        assert frame["type"] not in frames, frame
        frames[frame["type"]] = frame
    return frames["ack"], frames["message"]


async def assert_send_works(conn, body="still here"):
    ack, message = await send_and_collect(conn, body)
    assert message["message"]["body"] == body
    assert message["message"]["seq"] == ack["seq"]


@database_sync_to_async
def stored(room):
    return list(Message.objects.filter(room=room).order_by("seq").values_list("seq", "body", "server_id"))


# --- the frame contract --------------------------------------------------------------------------


async def test_hello_names_node_room_and_last_seq(ws, room, user):
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    hello = await conn.receive()
    assert hello == {"type": "hello", "server_id": "test-node", "room": "lobby", "last_seq": 0}
    await assert_send_works(conn)
    await conn.close()

    again = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await again.connect()
    assert (await again.receive())["last_seq"] == 1
    await again.close()


async def test_send_is_acked_stored_and_broadcast_in_the_one_message_shape(joined, room, user):
    ack, frame = await send_and_collect(joined, "hello world", "c-1")
    assert set(ack) == {"type", "client_msg_id", "id", "seq"}
    assert ack["client_msg_id"] == "c-1" and ack["seq"] == 1
    message = frame["message"]
    assert set(message) == {
        "id",
        "room",
        "seq",
        "author",
        "body",
        "created_at",
        "server_id",
        "edited_at",
        "deleted",
        "mentions",
        "mentions_room",
        "body_html",
        "reactions",
        "reply_to",
        "parent",
        "reply_count",
        "attachments",
    }
    assert message["id"] == ack["id"]
    assert message["room"] == "lobby"
    assert message["author"] == {"id": user.pk, "username": "alice", "display_name": ""}
    assert message["server_id"] == "test-node"
    assert message["created_at"].endswith("Z")
    assert await stored(room) == [(1, "hello world", "test-node")]


async def test_every_member_gets_the_message_and_only_the_sender_gets_the_ack(ws, room, user, other_user):
    alice = await ws(f"/ws/rooms/{room.slug}/", user=user)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    for conn in (alice, bob):
        assert await conn.connect()
        await conn.receive_type("hello")
    ack, _ = await send_and_collect(alice, "hi bob")
    got = await bob.receive_type("message")
    assert got["message"]["seq"] == ack["seq"] and got["message"]["body"] == "hi bob"
    assert await bob.nothing_more()
    await alice.close()
    await bob.close()


async def test_members_of_other_rooms_get_nothing(ws, room, user, other_user):
    other_room = await database_sync_to_async(factories.make_room)(created_by=other_user, slug="elsewhere")
    alice = await ws(f"/ws/rooms/{room.slug}/", user=user)
    bob = await ws(f"/ws/rooms/{other_room.slug}/", user=other_user)
    for conn in (alice, bob):
        assert await conn.connect()
        await conn.receive_type("hello")
    await assert_send_works(alice)
    assert await bob.nothing_more(0.3)
    await alice.close()
    await bob.close()


async def test_retry_with_same_client_msg_id_is_stored_once_and_gets_the_same_ack(joined, room):
    first_ack, _ = await send_and_collect(joined, "once", "retry-1")
    await joined.send({"type": "message.send", "body": "once", "client_msg_id": "retry-1"})
    second_ack = await joined.receive_type("ack")
    assert second_ack == first_ack
    assert await joined.nothing_more(0.3)  # no second broadcast
    assert await stored(room) == [(1, "once", "test-node")]


async def test_html_body_round_trips_as_text(joined, room):
    body = '<b>bold</b><script>alert("x")</script><img src=x onerror=alert(1)>'
    _, frame = await send_and_collect(joined, body)
    assert frame["message"]["body"] == body
    assert (await stored(room))[0][1] == body


async def test_body_of_4000_characters_is_accepted(joined, room):
    body = "é" * 4000
    _, frame = await send_and_collect(joined, body)
    assert frame["message"]["body"] == body


# --- bad input: an error frame with a code, the socket stays open ---------------------------------

BAD_FRAMES = [
    # (text sent, expected code)
    ("{bad json", "invalid_json"),
    ("hello", "invalid_json"),
    ("", "invalid_json"),
    ("null", "not_object"),
    ("[]", "not_object"),
    ("42", "not_object"),
    ('{"type": 123}', "invalid_field"),
    ('{"body": "no type"}', "missing_field"),
    ('{"type": "message.delete"}', "unknown_type"),
    ('{"type": "message.send"}', "missing_field"),
    ('{"type": "message.send", "client_msg_id": "m1"}', "missing_field"),
    ('{"type": "message.send", "body": "x"}', "missing_field"),
    ('{"type": "message.send", "body": 5, "client_msg_id": "m1"}', "invalid_field"),
    ('{"type": "message.send", "body": null, "client_msg_id": "m1"}', "invalid_field"),
    ('{"type": "message.send", "body": ["x"], "client_msg_id": "m1"}', "invalid_field"),
    ('{"type": "message.send", "body": "x", "client_msg_id": 7}', "invalid_field"),
    ('{"type": "message.send", "body": "x", "client_msg_id": ""}', "invalid_field"),
    ('{"type": "message.send", "body": "x", "client_msg_id": "%s"}' % ("k" * 65), "invalid_field"),
    ('{"type": "message.send", "body": "", "client_msg_id": "m1"}', "empty_body"),
    ('{"type": "message.send", "body": "  \\n\\t ", "client_msg_id": "m1"}', "empty_body"),
    ('{"type": "message.send", "body": "%s", "client_msg_id": "m1"}' % ("x" * 4001), "body_too_long"),
    ('{"type": "message.send", "body": "a\\u0000b", "client_msg_id": "m1"}', "invalid_text"),
    ('{"type": "message.send", "body": "\\ud83d", "client_msg_id": "m1"}', "invalid_text"),
    ('{"type": "message.send", "body": "ok", "client_msg_id": "\\udc00"}', "invalid_text"),
    ('{"type": "message.send", "body": "bell \\u0007", "client_msg_id": "m1"}', "invalid_text"),
    ('{"type": "message.send", "body": "pad \\u0080", "client_msg_id": "m1"}', "invalid_text"),
    ('{"type": "message.send", "body": "ok", "client_msg_id": "   "}', "invalid_field"),
    ('{"type": "message.send", "body": "\\u200b\\u2060 ", "client_msg_id": "m1"}', "empty_body"),
    ('{"type": "message.send", "body": "\\u3164\\u2800", "client_msg_id": "m1"}', "empty_body"),
    ('{"type": "message.send", "body": NaN, "client_msg_id": "m1"}', "invalid_json"),
    # Nested deeper than the decoder goes (a RecursionError): the same code as text that is not JSON.
    ("[" * 3000 + "]" * 3000, "invalid_json"),
    (
        '{"type": "message.send", "body": %s, "client_msg_id": "m1"}' % ("[" * 3000 + "]" * 3000),
        "invalid_json",
    ),
]


@pytest.mark.parametrize(("text", "code"), BAD_FRAMES, ids=[c for _, c in BAD_FRAMES])
async def test_bad_frame_gets_error_code_and_next_send_works(joined, room, text, code):
    await joined.send_text(text)
    error = await joined.receive_type("error")
    assert error["code"] == code
    assert error["detail"]
    assert await joined.nothing_more(0.05)
    await assert_send_works(joined)
    assert [seq for seq, *_ in await stored(room)] == [1]


async def test_error_frame_names_the_client_msg_id_when_known(joined):
    await joined.send({"type": "message.send", "body": "", "client_msg_id": "known-1"})
    error = await joined.receive_type("error")
    assert error["client_msg_id"] == "known-1" and error["field"] == "body"


async def test_client_msg_id_is_echoed_exactly_as_sent(joined):
    ack, _ = await send_and_collect(joined, "padded", "  padded-id  ")
    assert ack["client_msg_id"] == "  padded-id  "


async def test_same_client_msg_id_with_another_body_is_a_conflict(joined, room):
    await send_and_collect(joined, "first", "dup")
    await joined.send({"type": "message.send", "body": "second", "client_msg_id": "dup"})
    error = await joined.receive_type("error")
    assert error["code"] == "conflict" and error["client_msg_id"] == "dup" and error["seq"] == 1
    assert await stored(room) == [(1, "first", "test-node")]
    await assert_send_works(joined)


async def test_deactivated_users_socket_is_closed_at_its_next_send(joined, room, user):
    await database_sync_to_async(type(user).objects.filter(pk=user.pk).update)(is_active=False)
    await joined.send({"type": "message.send", "body": "still me?", "client_msg_id": "z"})
    assert (await joined.receive_type("error"))["code"] == "unauthenticated"
    assert await joined.close_code() == 4401
    assert await stored(room) == []


async def test_send_to_a_room_deleted_since_connect_closes_4404(joined, room):
    await database_sync_to_async(room.delete)()
    await joined.send({"type": "message.send", "body": "anyone?", "client_msg_id": "z"})
    assert (await joined.receive_type("error"))["code"] == "not_found"
    assert await joined.close_code() == 4404


async def test_binary_frame_gets_error_and_socket_stays_open(joined, room):
    await joined.communicator.send_to(bytes_data=b'{"type": "message.send"}')
    assert (await joined.receive_type("error"))["code"] == "binary_frame"
    await assert_send_works(joined)


# --- who may connect ------------------------------------------------------------------------------


async def test_anonymous_socket_is_closed_4401(ws, room):
    conn = await ws(f"/ws/rooms/{room.slug}/")
    assert await conn.connect()
    assert await conn.close_code() == 4401


async def test_unknown_room_is_closed_4404(ws, user, db):
    conn = await ws("/ws/rooms/no-such-room/", user=user)
    assert await conn.connect()
    assert await conn.close_code() == 4404


async def test_path_that_is_not_a_room_is_closed_4404(ws, user, db):
    conn = await ws("/ws/elsewhere/", user=user)
    assert await conn.connect()
    assert await conn.close_code() == 4404


async def test_api_token_authenticates_without_origin(ws, room, user):
    key = await database_sync_to_async(factories.token_for)(user)
    conn = await ws(f"/ws/rooms/{room.slug}/", token=key, origin=None)
    assert await conn.connect()
    await conn.receive_type("hello")
    ack, frame = await send_and_collect(conn, "from a script")
    assert frame["message"]["author"]["username"] == "alice"
    await conn.close()


async def test_wrong_token_is_4401_even_beside_a_valid_session_cookie(ws, room, user):
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user, token="0" * 40)
    assert await conn.connect()
    assert await conn.close_code() == 4401


@pytest.mark.parametrize(
    "origin",
    [
        b"http://evil.example",
        b"null",
        None,
        b"http://127.0.0.1:9999",
        b"https://127.0.0.1",
        b"http://127.0.0.1.evil.example",
    ],
)
async def test_cookie_socket_from_foreign_or_missing_origin_is_refused(ws, room, user, origin):
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user, origin=origin)
    assert not await conn.connect()


async def test_cookie_socket_from_own_origin_with_port_is_accepted(ws, room, user):
    conn = await ws(
        f"/ws/rooms/{room.slug}/", user=user, origin=b"http://127.0.0.1:8001", host=b"127.0.0.1:8001"
    )
    assert await conn.connect()
    await conn.receive_type("hello")
    await conn.close()


async def test_trusted_origin_is_accepted(ws, room, user, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com"]
    conn = await ws(
        f"/ws/rooms/{room.slug}/", user=user, origin=b"https://chat.example.com", host=b"127.0.0.1"
    )
    assert await conn.connect()
    await conn.close()


# --- cases from ../shared/cases ---------------------------------------------------------------------


async def test_BR16_who_is_connecting(ws, room, user, caplog):
    """Valid session accepted; expired session, no cookie and an inactive user's session refused
    with 4401; no event-loop errors logged."""
    caplog.set_level(logging.WARNING)
    member = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await member.connect()
    await member.receive_type("hello")

    expired_key = await database_sync_to_async(factories.session_key_for)(user, expiry=-1)
    expired = await ws(f"/ws/rooms/{room.slug}/", cookie=f"{settings.SESSION_COOKIE_NAME}={expired_key}")
    assert await expired.connect()
    assert await expired.close_code() == 4401

    no_cookie = await ws(f"/ws/rooms/{room.slug}/")
    assert await no_cookie.connect()
    assert await no_cookie.close_code() == 4401

    inactive = await database_sync_to_async(factories.make_user)("mallory", is_active=False)
    barred = await ws(f"/ws/rooms/{room.slug}/", user=inactive)
    assert await barred.connect()
    assert await barred.close_code() == 4401

    await assert_send_works(member)  # the member is unaffected
    await member.close()
    for refused in (expired, no_cookie, barred):
        await refused.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_BR19_no_orm_on_the_event_loop(ws, room, user, other_user, caplog):
    """Connect (room lookup, auth), send (store, serialise with author) and receive run with
    DJANGO_ALLOW_ASYNC_UNSAFE unset: no SynchronousOnlyOperation anywhere."""
    assert "DJANGO_ALLOW_ASYNC_UNSAFE" not in os.environ
    caplog.set_level(logging.DEBUG)
    key = await database_sync_to_async(factories.token_for)(other_user)
    alice = await ws(f"/ws/rooms/{room.slug}/", user=user)
    bob = await ws(f"/ws/rooms/{room.slug}/", token=key, origin=None)
    for conn in (alice, bob):
        assert await conn.connect()
        await conn.receive_type("hello")
    await assert_send_works(alice, "one")
    assert (await bob.receive_type("message"))["message"]["author"]["username"] == "alice"
    await alice.close()
    await bob.close()
    assert "SynchronousOnlyOperation" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_BR20_malformed_frames_each_get_a_code_and_the_next_message_goes_through(
    ws, room, user, other_user, caplog
):
    caplog.set_level(logging.WARNING)
    sender = await ws(f"/ws/rooms/{room.slug}/", user=user)
    watcher = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    for conn in (sender, watcher):
        assert await conn.connect()
        await conn.receive_type("hello")
    bad = ["{bad json", "hello", "", "null", "[]", '{"type": 123}', '{"type": "message.send"}']
    for n, text in enumerate(bad, start=1):
        await sender.send_text(text)
        assert (await sender.receive_type("error"))["code"]
        await assert_send_works(sender, f"valid {n}")
        assert (await watcher.receive_type("message"))["message"]["body"] == f"valid {n}"
    await sender.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await sender.receive_type("error"))["code"] == "binary_frame"
    await assert_send_works(sender, "after binary")
    assert (await watcher.receive_type("message"))["message"]["body"] == "after binary"
    assert [seq for seq, *_ in await stored(room)] == list(range(1, len(bad) + 2))
    # Warnings are rate-limited: far fewer log lines than bad frames.
    warnings = [r for r in caplog.records if r.name == "rooms.consumers" and r.levelno == logging.WARNING]
    assert len(warnings) <= len(
        {"invalid_json", "not_object", "invalid_field", "missing_field", "binary_frame"}
    )
    await sender.close()
    await watcher.close()


UNICODE_BODIES = [
    "emoji 😀🎉",
    "ZWJ family 👨‍👩‍👧‍👦 and flag 🏳️‍🌈",
    "right-to-left: שלום עולם and مرحبا",
    "4-byte 𝄞 𠜎 𝕳",
    "combining é vs é",
    "한국어 메시지",
]


async def test_BR23_unicode_round_trips_and_lone_surrogate_is_refused_to_sender_only(
    ws, room, user, other_user, client
):
    sender = await ws(f"/ws/rooms/{room.slug}/", user=user)
    watcher = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    for conn in (sender, watcher):
        assert await conn.connect()
        await conn.receive_type("hello")
    for body in UNICODE_BODIES:
        _, frame = await send_and_collect(sender, body)
        assert frame["message"]["body"] == body
        assert (await watcher.receive_type("message"))["message"]["body"] == body

    await sender.send_text('{"type": "message.send", "body": "\\ud83d", "client_msg_id": "lone"}')
    assert (await sender.receive_type("error"))["code"] == "invalid_text"
    assert await watcher.nothing_more(0.3)
    await assert_send_works(sender, "after the surrogate")
    await watcher.receive_type("message")

    assert [body for _, body, _ in await stored(room)] == UNICODE_BODIES + ["after the surrogate"]
    await database_sync_to_async(client.force_login)(user)
    response = await database_sync_to_async(client.get)(f"/api/rooms/{room.slug}/messages/")
    assert [m["body"] for m in response.json()["results"]] == UNICODE_BODIES + ["after the surrogate"]
    await sender.close()
    await watcher.close()


@pytest.mark.parametrize(
    "path",
    [
        "/ws/rooms/caf\u00e9/",
        "/ws/rooms/%F0%9F%98%80/",
        "/ws/rooms/a%00b/",
        "/ws/rooms/\u05e9\u05dc\u05d5\u05dd/",
        "/ws/rooms/" + "x" * 300 + "/",
        "/ws/rooms//",
    ],
)
async def test_BR23_non_ascii_and_percent_encoded_room_urls_are_refused_cleanly(ws, user, room, path, caplog):
    caplog.set_level(logging.WARNING)
    conn = await ws(path, user=user)
    assert await conn.connect()
    assert await conn.close_code() == 4404
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    # The worker is not wedged: a good socket still works.
    good = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await good.connect()
    await good.receive_type("hello")
    await good.close()


@pytest.mark.parametrize("run", range(50))
async def test_BR26_two_members_one_message_fifty_times(ws, room, user, other_user, run):
    alice = await ws(f"/ws/rooms/{room.slug}/", user=user)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    for conn in (alice, bob):
        assert await conn.connect()
        await conn.receive_type("hello")
    ack, own = await send_and_collect(alice, f"run {run}")
    theirs = await bob.receive_type("message")
    assert own == theirs
    assert await stored(room) == [(1, f"run {run}", "test-node")]
    await asyncio.gather(alice.close(), bob.close())


# --- resume and fetch -------------------------------------------------------------------------------


async def post_many(room, user, n, start=0):
    from rooms import services

    for i in range(start, start + n):
        await database_sync_to_async(services.message_post)(
            room=room, author=user, body=f"m{i}", client_msg_id=f"p{i}"
        )


async def test_resume_replays_what_was_missed_then_continues_live(ws, room, user, other_user):
    await post_many(room, user, 5)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await bob.connect()
    assert (await bob.receive_type("hello"))["last_seq"] == 5
    await bob.send({"type": "resume", "after_seq": 2})
    assert [(await bob.receive_type("message"))["message"]["seq"] for _ in range(3)] == [3, 4, 5]
    assert await bob.receive() == {"type": "resumed", "last_seq": 5}
    await post_many(room, user, 1, start=5)
    assert (await bob.receive_type("message"))["message"]["seq"] == 6
    assert await bob.nothing_more()
    await bob.close()


async def test_resume_by_query_parameter(ws, room, user, other_user):
    await post_many(room, user, 3)
    bob = await ws(f"/ws/rooms/{room.slug}/?after_seq=1", user=other_user)
    assert await bob.connect()
    await bob.receive_type("hello")
    assert [(await bob.receive_type("message"))["message"]["seq"] for _ in range(2)] == [2, 3]
    assert (await bob.receive_type("resumed"))["last_seq"] == 3
    await bob.close()


async def test_live_frames_covered_by_the_replay_are_not_sent_twice(ws, room, user, other_user):
    """Messages sent while the resume runs reach the client exactly once (live order may differ
    from seq order: README)."""
    await post_many(room, user, 20)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await bob.connect()
    await bob.receive_type("hello")
    sender = asyncio.ensure_future(post_many(room, user, 20, start=20))
    await bob.send({"type": "resume", "after_seq": 0})
    await sender
    seqs = []
    while len(seqs) < 40:
        frame = await bob.receive()
        if frame["type"] == "message":
            seqs.append(frame["message"]["seq"])
        else:
            assert frame["type"] == "resumed"
    assert await bob.nothing_more(0.3)
    assert sorted(seqs) == list(range(1, 41))
    await bob.close()


async def test_a_resume_frame_after_live_messages_does_not_send_them_again(ws, room, user, other_user):
    """The client reads live messages between ``hello`` and its ``resume`` frame: the replay
    stops at hello's last_seq, so those live messages are not sent a second time."""
    await post_many(room, user, 5)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await bob.connect()
    assert (await bob.receive_type("hello"))["last_seq"] == 5
    await post_many(room, user, 3, start=5)
    assert [(await bob.receive_type("message"))["message"]["seq"] for _ in range(3)] == [6, 7, 8]
    await bob.send({"type": "resume", "after_seq": 2})
    assert [(await bob.receive_type("message"))["message"]["seq"] for _ in range(3)] == [3, 4, 5]
    assert await bob.receive() == {"type": "resumed", "last_seq": 5}
    assert await bob.nothing_more(0.3)
    await bob.close()


def test_live_messages_up_to_hello_are_remembered_so_a_resume_skips_them():
    from rooms.consumers import RoomConsumer

    consumer = RoomConsumer()
    consumer._sent_live(3)  # before hello: nothing to remember
    consumer.hello_seq = 5
    for seq in (4, 6, 5, 9):
        consumer._sent_live(seq)
    assert consumer.live_seqs == {4, 5} and RoomConsumer.live_seqs == frozenset()


async def test_resume_over_the_bound_answers_resync(ws, room, user, other_user, monkeypatch):
    from rooms import consumers

    monkeypatch.setattr(consumers, "RESUME_MAX", 3)
    await post_many(room, user, 5)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await bob.connect()
    await bob.receive_type("hello")
    await bob.send({"type": "resume", "after_seq": 0})
    assert await bob.receive() == {"type": "resync", "latest_seq": 5}
    await bob.send({"type": "resume", "after_seq": 3})
    assert [(await bob.receive_type("message"))["message"]["seq"] for _ in range(2)] == [4, 5]
    await bob.close()


async def test_fetch_answers_a_range_as_history(ws, room, user, other_user):
    await post_many(room, user, 6)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await bob.connect()
    await bob.receive_type("hello")
    await bob.send({"type": "fetch", "after_seq": 1, "before_seq": 5})
    history = await bob.receive_type("history")
    assert [m["seq"] for m in history["messages"]] == [2, 3, 4] and history["has_more"] is False
    for bad, code in (
        ({"type": "fetch"}, "missing_field"),
        ({"type": "fetch", "after_seq": -1}, "invalid_field"),
        ({"type": "resume", "after_seq": "3"}, "invalid_field"),
    ):
        await bob.send(bad)
        assert (await bob.receive_type("error"))["code"] == code
    await bob.close()


async def test_sends_over_the_rate_limit_get_rate_limited_with_retry_after(
    ws, room, user, other_user, settings
):
    settings.WS_SEND_RATE = "3/m"
    await clear_of_minute_end()
    sender = await ws(f"/ws/rooms/{room.slug}/", user=user)
    watcher = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    for conn in (sender, watcher):
        assert await conn.connect()
        await conn.receive_type("hello")
    for i in range(3):
        await send_and_collect(sender, f"ok {i}")
    await sender.send({"type": "message.send", "body": "one too many", "client_msg_id": "flood"})
    error = await sender.receive_type("error")
    assert (
        error["code"] == "rate_limited"
        and 0 < error["retry_after"] <= 60
        and error["client_msg_id"] == "flood"
    )
    # the text rounds the wait up to a tenth of a second: never "wait 0.0 s"
    assert (
        error["detail"]
        == f"Too many messages; wait {math.ceil(round(error['retry_after'] * 10, 6)) / 10:.1f} s."
    )
    assert [(await watcher.receive_type("message"))["message"]["body"] for _ in range(3)] == [
        "ok 0",
        "ok 1",
        "ok 2",
    ]
    assert await watcher.nothing_more(0.2)
    # Another member is not limited by the flooder.
    await send_and_collect(watcher, "not me")
    assert [seq for seq, *_ in await stored(room)] == [1, 2, 3, 4]
    await sender.close()
    await watcher.close()


async def test_the_rate_limit_counts_a_users_sends_over_all_their_sockets(ws, room, user, settings):
    """Each socket's own window lets its sends through; the shared counter (in PostgreSQL, the
    one every node uses) refuses the user's fourth send of the minute on the second socket."""
    settings.WS_SEND_RATE = "3/m"
    await clear_of_minute_end()
    first = await ws(f"/ws/rooms/{room.slug}/", user=user)
    second = await ws(f"/ws/rooms/{room.slug}/", user=user)
    for conn in (first, second):
        assert await conn.connect()
        await conn.receive_type("hello")
    await send_and_collect(first, "one")
    await send_and_collect(first, "two")

    async def reply(frame):  # the ack or error, past the room's message frames
        await second.send(frame)
        while (got := await second.receive())["type"] == "message":
            pass
        return got

    assert (await reply({"type": "message.send", "body": "three", "client_msg_id": "s-3"}))["seq"] == 3
    error = await reply({"type": "message.send", "body": "four", "client_msg_id": "s-4"})
    assert error["code"] == "rate_limited" and error["client_msg_id"] == "s-4"
    assert [body for _, body, _ in await stored(room)] == ["one", "two", "three"]
    await first.close()
    await second.close()


async def test_a_silent_redis_costs_the_shared_rate_limit_one_short_wait_not_one_per_send(
    settings, monkeypatch
):
    """A Redis that accepts connections and never answers (a failover, a hung host): the shared
    counter allows the send after SHARED_TIMEOUT, then counts nothing shared for SHARED_PAUSE, so
    the sends after it do not wait at all."""
    import socket
    import time

    from chatsite import redis_config
    from rooms import ratelimit

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        settings.REDIS = redis_config.from_env(
            {"REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}
        )
        monkeypatch.setattr(ratelimit, "_shared_paused_until", 0.0)
        started = time.monotonic()
        assert await ratelimit.ahit("ws-send:1", "1/m") is None
        assert ratelimit.SHARED_TIMEOUT <= time.monotonic() - started < ratelimit.SHARED_TIMEOUT + 0.5
        started = time.monotonic()
        for _ in range(5):
            assert await ratelimit.ahit("ws-send:1", "1/m") is None
        assert time.monotonic() - started < 0.1
    finally:
        silent.close()


async def test_a_plain_send_is_stored_from_the_event_loop_without_the_database_thread(
    joined, room, monkeypatch
):
    """The usual send is one statement from the loop's own pool; only refusals and retries go
    to the step-by-step path on the database thread."""
    from rooms import services

    def no_thread_hop(**kwargs):
        raise AssertionError("the fallback path was taken")

    monkeypatch.setattr(services, "_message_post_checked", no_thread_hop)
    ack, frame = await send_and_collect(joined, "straight through", "loop-1")
    assert frame["message"]["seq"] == ack["seq"] == 1
    assert await stored(room) == [(1, "straight through", "test-node")]


async def test_the_send_limit_is_counted_in_the_send_statement_without_a_redis_round_trip(
    ws, room, user, settings, monkeypatch
):
    """With PostgreSQL the per-user limit is counted by the statement that stores the message
    (``SendWindow``): no Redis call, a refused send stores nothing, and a retry of a stored
    ``client_msg_id`` is answered with its ack without counting. (Each socket's own window
    counts the retry; the limit here is reached on a second socket.)"""
    from rooms import ratelimit
    from rooms.models import SendWindow

    async def no_redis(*args, **kwargs):
        raise AssertionError("the Redis counter was used")

    monkeypatch.setattr(ratelimit, "ahit", no_redis)
    settings.WS_SEND_RATE = "2/m"
    await clear_of_minute_end()
    first, second = (
        await ws(f"/ws/rooms/{room.slug}/", user=user),
        await ws(f"/ws/rooms/{room.slug}/", user=user),
    )
    for conn in (first, second):
        assert await conn.connect()
        await conn.receive_type("hello")
    ack, _ = await send_and_collect(first, "one", "c-1")
    await first.send({"type": "message.send", "body": "one", "client_msg_id": "c-1"})  # a retry
    assert (await first.receive_type("ack"))["seq"] == ack["seq"]
    await send_and_collect(second, "two", "c-2")
    await second.send({"type": "message.send", "body": "three", "client_msg_id": "c-3"})
    error = await second.receive_type("error")
    assert error["code"] == "rate_limited" and 0 < error["retry_after"] <= 60
    assert [body for _, body, _ in await stored(room)] == ["one", "two"]
    window = await SendWindow.objects.aget(user=user)
    assert (window.period, window.count) == (60, 3)  # one, two, three; not the retry
    await first.close()
    await second.close()


async def test_message_bodies_never_appear_in_logs(ws, room, user, other_user, caplog, settings):
    """Bad frames, refusals, limits and conflicts are logged without the text people wrote."""
    from datetime import timedelta

    from django.utils import timezone

    from rooms import services

    caplog.set_level(logging.DEBUG)
    marker = "PRIVATE-WORDS-7f3a"
    settings.WS_SEND_RATE = "4/m"
    await clear_of_minute_end()
    conn = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await conn.connect()
    await conn.receive_type("hello")
    await send_and_collect(conn, f"{marker} stored", "k1")
    for frame in (
        '{"type": "message.send", "body": "' + marker + '" , "client_msg_id": 5}',
        '{"type": "message.send", "body": "' + marker + '\\ud83d", "client_msg_id": "k2"}',
        '{"type": "message.send", "body": "' + marker + ' changed", "client_msg_id": "k1"}',
        '{"type": "message.send", "body": "' + marker + "x" * 4001 + '", "client_msg_id": "k3"}',
        "{" + marker,
    ):
        await conn.send_text(frame)
        await conn.receive_type("error")
    await database_sync_to_async(services.member_mute)(
        room=room, actor=user, user=other_user, until=timezone.now() + timedelta(minutes=1)
    )
    await conn.send({"type": "message.send", "body": f"{marker} muted", "client_msg_id": "k4"})
    assert (await conn.receive_type("error"))["code"] == "muted"
    for i in range(3):
        await conn.send({"type": "message.send", "body": f"{marker} flood", "client_msg_id": f"f{i}"})
        await conn.receive_type("error")
    await conn.close()
    assert caplog.records, "nothing was logged at all"
    assert marker not in caplog.text


async def test_resume_beyond_the_room_answers_the_real_last_seq_and_bad_query_is_an_error(
    ws, room, user, other_user
):
    await post_many(room, user, 2)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await bob.connect()
    await bob.receive_type("hello")
    await bob.send({"type": "resume", "after_seq": 10**6})
    assert await bob.receive() == {"type": "resumed", "last_seq": 2}
    await bob.send({"type": "resume", "after_seq": 10**30})
    assert (await bob.receive_type("error"))["code"] == "invalid_field"
    await bob.close()
    odd = await ws(f"/ws/rooms/{room.slug}/?after_seq=abc", user=other_user)
    assert await odd.connect()
    await odd.receive_type("hello")
    assert (await odd.receive_type("error"))["field"] == "after_seq"
    await odd.close()


async def test_a_rooms_socket_path_is_its_slug_exactly_another_case_is_no_room(ws, room, user):
    for path in ("/ws/rooms/LOBBY/", "/ws/rooms/Lobby/"):
        conn = await ws(path, user=user)
        assert await conn.connect()
        assert await conn.close_code() == 4404
        await conn.close()
    conn = await ws("/ws/rooms/lobby/", user=user)
    assert await conn.connect()
    assert (await conn.receive_type("hello"))["room"] == "lobby"
    await conn.close()
