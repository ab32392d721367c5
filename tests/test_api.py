"""The REST API through DRF's APIClient against the real database (and Redis-backed throttles)."""

import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from rooms import dms, services
from rooms.models import Membership, Message, Room
from tests import factories

pytestmark = pytest.mark.django_db

MESSAGE_FIELDS = {
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


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def api(user):
    return client_for(user)


@pytest.fixture
def bob_api(other_user):
    return client_for(other_user)


@pytest.fixture
def history(room, user):
    for i in range(1, 121):
        services.message_post(room=room, author=user, body=f"m{i}", client_msg_id=f"c{i}")
    return room


@pytest.fixture
def private_room(user):
    return factories.make_room(created_by=user, slug="secret", name="Secret", is_private=True)


@pytest.fixture
def rates(monkeypatch):
    """``rates(send=..., login=...)`` sets throttle rates for this test (DRF reads them at import)."""

    def set_rates(**scoped):
        monkeypatch.setattr(
            ScopedRateThrottle, "THROTTLE_RATES", {**ScopedRateThrottle.THROTTLE_RATES, **scoped}
        )

    return set_rates


def seqs(response):
    return [m["seq"] for m in response.data["results"]]


# --- auth -----------------------------------------------------------------------------------------


def test_token_for_username_and_password_then_revoke(user):
    client = APIClient()
    response = client.post(
        "/api/auth/token/", {"username": "alice", "password": factories.PASSWORD}, format="json"
    )
    assert response.status_code == 200
    token = response.data["token"]
    assert (
        client.post("/api/auth/token/", {"username": "alice", "password": factories.PASSWORD}).data["token"]
        == token
    )
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/rooms/").status_code == 200
    assert client.delete("/api/auth/token/").status_code == 204
    assert client.get("/api/rooms/").status_code == 401


def test_token_with_wrong_password_is_400_with_errors(user):
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 400 and response.data["non_field_errors"]


def test_logins_are_throttled_with_retry_after(user, rates):
    rates(login="3/min")
    client = APIClient(REMOTE_ADDR="10.9.8.7")
    codes = [
        client.post("/api/auth/token/", {"username": "alice", "password": "wrong"}).status_code
        for _ in range(4)
    ]
    assert codes == [400, 400, 400, 429]
    response = client.post("/api/auth/token/", {"username": "alice", "password": factories.PASSWORD})
    assert response.status_code == 429 and int(response["Retry-After"]) > 0 and response.data["detail"]


def test_every_throttled_429_carries_code_rate_limited_and_retry_after(user, api, room, rates, settings):
    """DRF's throttles (log-in per address, sends per user) and the per-account log-in limit
    answer 429 as rooms' own rate limits do: ``{"detail", "code": "rate_limited",
    "retry_after": seconds}`` with ``Retry-After`` (the same whole seconds)."""
    rates(login="1/min", send="1/min")
    settings.LOGIN_ACCOUNT_RATE = "1/h"
    guessed = factories.make_user(f"guessed-{uuid.uuid4().hex[:12]}")  # its own account count
    wrong = {"username": guessed.username, "password": "wrong"}

    def fresh_client() -> APIClient:  # its own address count
        return APIClient(REMOTE_ADDR=f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7")

    refusals = []
    by_address = fresh_client()
    by_address.post("/api/auth/token/", {"username": f"nobody-{uuid.uuid4().hex}", "password": "x"})
    refusals.append(by_address.post("/api/auth/token/", wrong))
    assert fresh_client().post("/api/auth/token/", wrong).status_code == 400  # the account's one failure
    refusals.append(fresh_client().post("/api/auth/token/", wrong))  # over the account's limit
    api.post("/api/rooms/lobby/messages/", {"body": "one", "client_msg_id": "r1"}, format="json")
    refusals.append(
        api.post("/api/rooms/lobby/messages/", {"body": "two", "client_msg_id": "r2"}, format="json")
    )
    for response in refusals:
        body = response.json()
        assert response.status_code == 429 and body["code"] == "rate_limited" and body["detail"], body
        assert body["retry_after"] == int(response["Retry-After"]) > 0, body
    assert Message.objects.count() == 1


def test_a_429_whose_wait_is_unknown_still_says_when_to_retry():
    """DRF's throttle gives no wait once its rate was lowered below the history it keeps: the
    429 still carries ``retry_after`` and ``Retry-After`` (one second)."""
    from rest_framework.exceptions import Throttled

    from rooms.api import exception_handler

    response = exception_handler(Throttled(None), {"request": None, "view": None})
    assert response.status_code == 429
    assert response.data["code"] == "rate_limited" and response.data["retry_after"] == 1
    assert response["Retry-After"] == "1"


def test_anonymous_requests_are_refused(room):
    client = APIClient()
    assert client.get("/api/rooms/").status_code in (401, 403)
    assert client.get("/api/rooms/lobby/messages/").status_code in (401, 403)


def test_session_post_without_csrf_token_is_refused(user):
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="alice", password=factories.PASSWORD)
    response = client.post("/api/rooms/", {"name": "Sneaky"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.data["detail"]
    assert not Room.objects.filter(name="Sneaky").exists()


def test_session_writes_without_csrf_token_answer_403_csrf_failed_and_change_nothing(user, room):
    """A session request of an unsafe method without its CSRF token, on any route: 403
    ``{"detail", "code": "csrf_failed"}`` (docs/rest.md), nothing written."""
    token = factories.token_for(user)
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="alice", password=factories.PASSWORD)
    for method, path, body in (
        ("post", "/api/rooms/", {"name": "Sneaky"}),
        ("post", "/api/rooms/lobby/messages/", {"body": "hi", "client_msg_id": "csrf1"}),
        ("patch", "/api/me/settings/", {"dms_from": "shared_rooms"}),
        ("delete", "/api/auth/token/", None),
    ):
        response = getattr(client, method)(path, body, format="json")
        assert response.status_code == 403, path
        assert response.json()["code"] == "csrf_failed" and "CSRF" in response.json()["detail"], path
    assert not Room.objects.filter(name="Sneaky").exists() and not Message.objects.exists()
    assert Token.objects.filter(key=token).exists()
    assert dms.dms_from(user.pk) == "anyone"


# --- malformed JSON bodies ------------------------------------------------------------------------

DEEP_JSON = "[" * 3000 + "]" * 3000


@pytest.mark.parametrize(
    "body",
    [
        "{bad json",
        DEEP_JSON,
        '{"body": ' + DEEP_JSON + ', "client_msg_id": "deep"}',
        '{"a": ' * 3000 + "1" + "}" * 3000,
    ],
    ids=["malformed", "deep-array", "deep-in-a-field", "deep-objects"],
)
@pytest.mark.parametrize(
    ("method", "path", "signed_in"),
    [
        ("post", "/api/auth/token/", False),
        ("post", "/api/rooms/", True),
        ("post", "/api/dms/", True),
        ("patch", "/api/me/settings/", True),
        ("post", "/api/rooms/lobby/read/", True),
        ("post", "/api/rooms/lobby/messages/", True),
    ],
)
def test_a_json_body_that_cannot_be_decoded_or_nests_too_deep_is_400_invalid_json(
    api, room, method, path, signed_in, body, caplog
):
    """Text that is not JSON, and JSON nested deeper than the decoder goes (3,000 arrays or
    objects: Python's ``RecursionError``), answer 400 ``{"detail", "code": "invalid_json"}``
    on every route, signed in or not; nothing is logged as an error and nothing changes."""
    client = api if signed_in else APIClient()
    before = (Room.objects.count(), Message.objects.count(), Membership.objects.count())
    with caplog.at_level(logging.WARNING):
        response = getattr(client, method)(path, body, content_type="application/json")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "invalid_json" and response.json()["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (Room.objects.count(), Message.objects.count(), Membership.objects.count()) == before


# --- rooms ----------------------------------------------------------------------------------------


def test_create_room_makes_the_caller_owner(api, user):
    response = api.post("/api/rooms/", {"name": "Book Club", "description": "reading"}, format="json")
    assert response.status_code == 201
    assert response.data["slug"] == "book-club" and response.data["my_role"] == "owner"
    assert Membership.objects.get(room__slug="book-club", user=user).role == "owner"


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "name"), ({"name": "x", "slug": "no spaces"}, "slug"), ({"name": "Lobby"}, "slug")],
)
def test_create_room_errors_are_400_with_field_errors(api, room, body, field):
    response = api.post("/api/rooms/", body, format="json")
    assert response.status_code == 400 and field in response.data


def test_room_list_shows_public_rooms_and_my_private_ones(api, bob_api, room, private_room):
    assert [r["slug"] for r in api.get("/api/rooms/").data["results"]] == ["lobby", "secret"]
    assert [r["slug"] for r in bob_api.get("/api/rooms/").data["results"]] == ["lobby"]
    assert bob_api.get("/api/rooms/", {"limit": 1, "offset": 0}).data["count"] == 1


def test_only_owner_or_moderator_changes_a_room(api, bob_api, room, other_user, user):
    assert bob_api.patch("/api/rooms/lobby/", {"name": "Mine now"}, format="json").status_code == 403
    services.member_add(room=room, actor=user, user=other_user, role="moderator")
    response = bob_api.patch("/api/rooms/lobby/", {"description": "moderated"}, format="json")
    assert response.status_code == 200 and response.data["description"] == "moderated"
    assert api.patch("/api/rooms/lobby/", {"name": ""}, format="json").status_code == 400


def test_deleting_a_room_archives_it_and_keeps_history(api, bob_api, history):
    assert bob_api.delete("/api/rooms/lobby/").status_code == 403
    assert api.delete("/api/rooms/lobby/").status_code == 204
    detail = api.get("/api/rooms/lobby/").data
    assert detail["archived"] is True and detail["archived_at"]
    assert len(api.get("/api/rooms/lobby/messages/").data["results"]) == 50
    response = api.post("/api/rooms/lobby/messages/", {"body": "late", "client_msg_id": "x1"}, format="json")
    assert response.status_code == 409 and response.data["code"] == "archived"
    assert api.patch("/api/rooms/lobby/", {"name": "again"}, format="json").status_code == 409


def test_private_room_is_invisible_on_every_route_to_a_non_member(bob_api, private_room, user):
    message = services.message_post(room=private_room, author=user, body="secret", client_msg_id="s1").message
    base = "/api/rooms/secret"
    routes = [
        ("get", f"{base}/"),
        ("patch", f"{base}/"),
        ("delete", f"{base}/"),
        ("get", f"{base}/messages/"),
        ("post", f"{base}/messages/"),
        ("get", f"{base}/messages/?after_seq=0"),
        ("get", f"{base}/messages/{message.pk}/"),
        ("patch", f"{base}/messages/{message.pk}/"),
        ("delete", f"{base}/messages/{message.pk}/"),
        ("get", f"{base}/members/"),
        ("post", f"{base}/members/"),
        ("get", f"{base}/members/alice/"),
        ("patch", f"{base}/members/alice/"),
        ("delete", f"{base}/members/me/"),
        ("post", f"{base}/members/alice/mute/"),
        ("delete", f"{base}/members/alice/mute/"),
        ("post", f"{base}/members/alice/ban/"),
        ("delete", f"{base}/members/alice/ban/"),
    ]
    unknown = {
        (m, u.replace("/secret/", "/no-such-room/")): getattr(bob_api, m)(
            u.replace("/secret/", "/no-such-room/"), {}, format="json"
        ).status_code
        for m, u in routes
    }
    for method, url in routes:
        response = getattr(bob_api, method)(
            url, {"body": "x", "client_msg_id": "y", "role": "member"}, format="json"
        )
        assert response.status_code == 404, (method, url, response.status_code)
        assert unknown[(method, url.replace("/secret/", "/no-such-room/"))] == 404
    assert "secret" not in [r["slug"] for r in bob_api.get("/api/rooms/").data["results"]]
    assert Message.objects.get(pk=message.pk).deleted_at is None


# --- messages -------------------------------------------------------------------------------------


def test_newest_page_by_default(api, history):
    response = api.get("/api/rooms/lobby/messages/")
    assert response.status_code == 200
    assert seqs(response) == list(range(71, 121)) and response.data["has_more"] is True


def test_after_seq_pages_forward_and_joins_without_gap_or_duplicate(api, history):
    seen, after = [], 0
    while True:
        response = api.get("/api/rooms/lobby/messages/", {"after_seq": after, "limit": 50})
        seen += seqs(response)
        if not response.data["has_more"]:
            break
        after = seen[-1]
    assert seen == list(range(1, 121))


def test_before_seq_pages_backward(api, history):
    response = api.get("/api/rooms/lobby/messages/", {"before_seq": 11, "limit": 200})
    assert seqs(response) == list(range(1, 11)) and response.data["has_more"] is False
    response = api.get("/api/rooms/lobby/messages/", {"before_seq": 60, "limit": 5})
    assert seqs(response) == [55, 56, 57, 58, 59] and response.data["has_more"] is True


def test_pages_join_exactly_even_when_every_message_has_the_same_timestamp(api, history):
    Message.objects.update(created_at=timezone.now())
    backward, before = [], None
    while True:
        query = {"limit": 7} | ({"before_seq": before} if before else {})
        response = api.get("/api/rooms/lobby/messages/", query)
        backward = seqs(response) + backward
        if not response.data["has_more"]:
            break
        before = seqs(response)[0]
    assert backward == list(range(1, 121))


def test_messages_have_the_one_message_shape(api, history, user):
    message = api.get("/api/rooms/lobby/messages/", {"limit": 1}).data["results"][0]
    assert message["author"] == {"id": user.pk, "username": "alice", "display_name": ""}
    assert set(message) == MESSAGE_FIELDS


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 201}, {"after_seq": -1}, {"after_seq": "x"}, {"after_seq": 1, "before_seq": 5}],
)
def test_bad_history_query_is_400_with_errors(api, room, query):
    response = api.get("/api/rooms/lobby/messages/", query)
    assert response.status_code == 400 and response.data


def test_unknown_room_is_404(api, db):
    response = api.get("/api/rooms/nope/messages/")
    assert response.status_code == 404 and "detail" in response.data


def test_token_authenticates(room, user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
    assert client.get("/api/rooms/lobby/messages/").status_code == 200


def test_send_over_rest_stores_once_and_a_retry_answers_the_first_message(api, room):
    first = api.post(
        "/api/rooms/lobby/messages/", {"body": "via REST", "client_msg_id": "r-1"}, format="json"
    )
    assert first.status_code == 201 and set(first.data) == MESSAGE_FIELDS and first.data["seq"] == 1
    again = api.post(
        "/api/rooms/lobby/messages/", {"body": "via REST", "client_msg_id": "r-1"}, format="json"
    )
    assert again.status_code == 200 and again.data == first.data
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"client_msg_id": "a"}, "body"),
        ({"body": "", "client_msg_id": "a"}, "body"),
        ({"body": "x" * 4001, "client_msg_id": "a"}, "body"),
        ({"body": "x"}, "client_msg_id"),
        ({"body": 5, "client_msg_id": "a"}, "body"),
    ],
)
def test_bad_send_is_400_with_field_errors(api, room, body, field):
    response = api.post("/api/rooms/lobby/messages/", body, format="json")
    assert response.status_code == 400 and field in response.data


INVISIBLE = [
    "\u3164",
    "\uffa0",
    "\u115f",
    "\u1160",
    "\u034f",
    "\u2800",
    "\U0001d159",
    "\u200b",
    "\u00ad",
    "\u2060",
    "\ufeff",
    "\ufe0f",
    "\U000e0041",
    "\u180e",
    "\u3000",
    "\x07",
]


@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_a_body_with_nothing_visible_is_refused_as_empty(api, room, char):
    response = api.post(
        "/api/rooms/lobby/messages/", {"body": f"{char} {char}{char}", "client_msg_id": "a"}, format="json"
    )
    assert response.status_code == 400 and response.data["body"][0].code == "blank"
    assert not Message.objects.filter(room=room).exists()


@pytest.mark.parametrize(
    "body",
    [
        "\u3164hi",
        "a\u200b",
        "\u0301",
        "\U0001f600",
        "\u2800\u2801",
        "\u05e9\u05dc\u05d5\u05dd",
        "\u06dd",
        "\u0600",
        "\U000110bd",
    ],
)
def test_a_body_with_something_visible_is_stored_exactly(api, room, body):
    response = api.post("/api/rooms/lobby/messages/", {"body": body, "client_msg_id": "a"}, format="json")
    assert response.status_code == 201 and Message.objects.get(room=room).body == body


CONTROLS = ["bell \x07", "esc\x1b[2J", "back\x08space", "del\x7f", "so\x0e", "csi\x9b31m"]


@pytest.mark.parametrize("body", CONTROLS, ids=["bell", "esc", "backspace", "del", "shift-out", "csi"])
def test_a_body_with_a_control_character_is_refused_on_send_and_edit_and_nothing_changes(
    api, room, user, body
):
    """C0 and C1 control characters (and DEL) are refused, code ``invalid_text``; tab, line
    feed and carriage return are text."""
    response = api.post("/api/rooms/lobby/messages/", {"body": body, "client_msg_id": "c1"}, format="json")
    assert response.status_code == 400 and response.data["body"][0].code == "invalid_text", response.data
    assert not Message.objects.filter(room=room).exists()
    message = services.message_post(room=room, author=user, body="before", client_msg_id="c2").message
    response = api.patch(f"/api/rooms/lobby/messages/{message.pk}/", {"body": body}, format="json")
    assert response.status_code == 400 and response.data["body"][0].code == "invalid_text", response.data
    message.refresh_from_db()
    assert (message.body, message.edited_at) == ("before", None)


def test_a_body_keeps_tabs_and_line_breaks(api, room):
    """Pasted text keeps its breaks: PowerPoint's soft breaks (VT), source code's form feeds,
    NEL."""
    body = "col\tcol\r\nnext line\nlast\x0bsoft break\x0cnext page\x85next line"
    response = api.post("/api/rooms/lobby/messages/", {"body": body, "client_msg_id": "t1"}, format="json")
    assert response.status_code == 201 and Message.objects.get(room=room).body == body


def test_a_body_over_the_upload_limit_is_413_json_and_nothing_is_stored(api, room, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"body": "x" * 20_000, "client_msg_id": "big"})
    response = api.generic("POST", "/api/rooms/lobby/messages/", body, content_type="application/json")
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"detail": "The request body is too large.", "code": "too_large"}
    assert not Message.objects.filter(room=room).exists()


def test_a_form_body_with_too_many_fields_is_400_json(api, room):
    body = "&".join(f"f{i}=x" for i in range(1100)) + "&body=hi&client_msg_id=many"
    response = api.generic(
        "POST", "/api/rooms/lobby/messages/", body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert json.loads(response.content)["code"] == "too_many_fields"
    assert not Message.objects.filter(room=room).exists()


def test_sends_are_throttled_with_retry_after(api, room, rates):
    rates(send="3/min")
    codes = [
        api.post(
            "/api/rooms/lobby/messages/", {"body": f"m{i}", "client_msg_id": f"t{i}"}, format="json"
        ).status_code
        for i in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    response = api.post("/api/rooms/lobby/messages/", {"body": "more", "client_msg_id": "t9"}, format="json")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert Message.objects.count() == 3


def test_a_throttle_rate_with_a_multiple_counts_in_its_window_and_a_bad_one_stops_start_up(api, room, rates):
    """``THROTTLE_*_RATE`` takes what the log-in limits take (``"2/15m"``: 2 in 15 minutes);
    a rate that cannot be read stops the settings from loading instead of failing later."""
    import subprocess
    import sys

    rates(send="2/15m")
    codes = [
        api.post("/api/rooms/lobby/messages/", {"body": f"m{i}", "client_msg_id": f"w{i}"}, format="json")
        for i in range(3)
    ]
    assert [c.status_code for c in codes] == [201, 201, 429]
    assert 0 < codes[-1].data["retry_after"] <= 900
    proc = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **__import__("os").environ,
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            "THROTTLE_SEND_RATE": "10/x",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "THROTTLE_SEND_RATE: '10/x' is not like" in proc.stderr, proc.stderr


def test_author_edits_a_message_and_others_cannot(api, bob_api, room, user):
    message = services.message_post(room=room, author=user, body="tpyo", client_msg_id="e1").message
    assert (
        bob_api.patch(f"/api/rooms/lobby/messages/{message.pk}/", {"body": "mine"}, format="json").status_code
        == 403
    )
    response = api.patch(f"/api/rooms/lobby/messages/{message.pk}/", {"body": "typo"}, format="json")
    assert response.status_code == 200 and response.data["body"] == "typo" and response.data["edited_at"]
    assert (
        api.patch(f"/api/rooms/lobby/messages/{message.pk}/", {"body": ""}, format="json").status_code == 400
    )


def test_delete_is_soft_and_allowed_to_author_and_moderators_only(api, bob_api, room, user, other_user):
    mine = services.message_post(room=room, author=user, body="oops", client_msg_id="d1").message
    theirs = services.message_post(room=room, author=other_user, body="spam", client_msg_id="d2").message
    assert bob_api.delete(f"/api/rooms/lobby/messages/{mine.pk}/").status_code == 403
    assert api.delete(f"/api/rooms/lobby/messages/{mine.pk}/").status_code == 204
    assert api.delete(f"/api/rooms/lobby/messages/{theirs.pk}/").status_code == 204  # the owner moderates
    history = api.get("/api/rooms/lobby/messages/").data["results"]
    assert [(m["seq"], m["body"], m["deleted"]) for m in history] == [(1, "", True), (2, "", True)]
    assert (
        api.patch(f"/api/rooms/lobby/messages/{mine.pk}/", {"body": "back"}, format="json").status_code == 409
    )
    assert Message.objects.count() == 2


# --- members --------------------------------------------------------------------------------------


def test_join_and_leave_a_public_room(bob_api, room):
    response = bob_api.post("/api/rooms/lobby/members/", {}, format="json")
    assert response.status_code == 201 and response.data["role"] == "member"
    names = [m["user"]["username"] for m in bob_api.get("/api/rooms/lobby/members/").data["results"]]
    assert names == ["alice", "bob"]
    assert bob_api.delete("/api/rooms/lobby/members/me/").status_code == 204
    assert bob_api.delete("/api/rooms/lobby/members/me/").status_code == 204  # leaving twice is fine
    response = bob_api.delete("/api/rooms/lobby/members/alice/")
    assert response.status_code == 403 and response.data["code"] == "forbidden"


def test_owner_cannot_leave(api, room):
    response = api.delete("/api/rooms/lobby/members/me/")
    assert response.status_code == 409 and response.data["code"] == "conflict"


def test_owner_adds_members_to_a_private_room(api, bob_api, private_room, other_user):
    assert bob_api.post("/api/rooms/secret/members/", {}, format="json").status_code == 404
    response = api.post("/api/rooms/secret/members/", {"username": "bob"}, format="json")
    assert response.status_code == 201 and response.data["user"]["username"] == "bob"
    assert bob_api.get("/api/rooms/secret/").status_code == 200
    assert bob_api.post("/api/rooms/secret/members/", {"username": "alice"}, format="json").status_code == 403
    assert api.post("/api/rooms/secret/members/", {"username": "nobody"}, format="json").status_code == 400


def test_roles_moderators_and_who_may_act_on_whom(api, room, user, other_user):
    carol = factories.make_user("carol")
    services.member_join(room=room, user=carol)
    services.member_join(room=room, user=other_user)
    assert (
        api.patch("/api/rooms/lobby/members/bob/", {"role": "moderator"}, format="json").data["role"]
        == "moderator"
    )
    bob_api, carol_api = client_for(other_user), client_for(carol)
    assert (
        bob_api.patch("/api/rooms/lobby/members/carol/", {"role": "moderator"}, format="json").status_code
        == 403
    )
    assert bob_api.post("/api/rooms/lobby/members/alice/ban/").status_code == 403  # never the owner
    assert (
        carol_api.post("/api/rooms/lobby/members/bob/mute/", {"minutes": 5}, format="json").status_code == 403
    )
    assert (
        bob_api.post("/api/rooms/lobby/members/carol/mute/", {"minutes": 5}, format="json").status_code == 200
    )
    assert api.patch("/api/rooms/lobby/members/bob/", {"role": "owner"}, format="json").status_code == 400


def test_mute_refuses_sends_until_it_ends(api, bob_api, room, other_user):
    services.member_join(room=room, user=other_user)
    until = (timezone.now() + timedelta(minutes=10)).isoformat()
    assert api.post("/api/rooms/lobby/members/bob/mute/", {"until": until}, format="json").status_code == 200
    response = bob_api.post(
        "/api/rooms/lobby/messages/", {"body": "hi", "client_msg_id": "m1"}, format="json"
    )
    assert response.status_code == 403 and response.data["code"] == "muted" and response.data["until"]
    past = (timezone.now() - timedelta(minutes=1)).isoformat()
    assert api.post("/api/rooms/lobby/members/bob/mute/", {"until": past}, format="json").status_code == 400
    assert api.delete("/api/rooms/lobby/members/bob/mute/").status_code == 200
    assert (
        bob_api.post(
            "/api/rooms/lobby/messages/", {"body": "hi", "client_msg_id": "m1"}, format="json"
        ).status_code
        == 201
    )


def test_ban_refuses_sends_and_rejoining_until_lifted(api, bob_api, room, other_user):
    services.member_join(room=room, user=other_user)
    response = api.post("/api/rooms/lobby/members/bob/ban/")
    assert response.status_code == 200 and response.data["banned"] is True
    send = bob_api.post("/api/rooms/lobby/messages/", {"body": "hi", "client_msg_id": "b1"}, format="json")
    assert send.status_code == 403 and send.data["code"] == "banned"
    assert bob_api.post("/api/rooms/lobby/members/", {}, format="json").status_code == 403
    assert api.delete("/api/rooms/lobby/members/bob/ban/").status_code == 204
    assert bob_api.post("/api/rooms/lobby/members/", {}, format="json").status_code == 201


# --- schema ---------------------------------------------------------------------------------------


def test_openapi_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in (
        "/api/rooms/",
        "/api/rooms/{slug}/",
        "/api/rooms/{room_slug}/messages/",
        "/api/rooms/{room_slug}/messages/{id}/",
        "/api/rooms/{room_slug}/members/",
        "/api/rooms/{room_slug}/members/{username}/ban/",
        "/api/auth/token/",
    ):
        assert f"{path}:" in text, path


def test_interactive_docs_are_served(api):
    assert api.get("/api/docs/").status_code == 200
    assert api.get("/api/schema/").status_code == 200


def test_BR14_a_forged_forwarded_for_does_not_bypass_the_login_limit(user, rates):
    rates(login="2/min")
    codes = [
        APIClient(REMOTE_ADDR="10.20.30.40", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
        .post("/api/auth/token/", {"username": "alice", "password": "wrong"})
        .status_code
        for i in range(3)
    ]
    assert codes == [400, 400, 429]


def test_refusal_bodies_keep_numbers_as_numbers(api, room):
    api.post("/api/rooms/lobby/messages/", {"body": "first", "client_msg_id": "dup"}, format="json")
    response = api.post(
        "/api/rooms/lobby/messages/", {"body": "second", "client_msg_id": "dup"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict" and response.json()["seq"] == 1


def test_text_errors_are_reported_once(api, room):
    response = api.post(
        "/api/rooms/lobby/messages/", {"body": "a\u0000b", "client_msg_id": "n"}, format="json"
    )
    assert response.status_code == 400 and len(response.data["body"]) == 1


def test_a_name_without_a_possible_slug_asks_for_one(api, db):
    # a name in any script makes its own slug (tests/test_room_slugs.py); one of no letter or
    # digit cannot
    response = api.post("/api/rooms/", {"name": "!!! ???"}, format="json")
    assert response.status_code == 400 and "Choose a slug" in response.data["slug"][0]
    assert (
        api.post("/api/rooms/", {"name": "!!! ???", "slug": "punctuation"}, format="json").status_code == 201
    )
    assert api.post("/api/rooms/", {"name": "日本語"}, format="json").data["slug"] == "日本語"


def test_unknown_api_paths_answer_json_404(api, room, user):
    response = api.get("/api/rooms/lobby/messages/abc/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found.", "code": "not_found"}
    strict = APIClient(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
    for method in ("post", "patch", "delete"):  # any method: no CSRF page first
        response = getattr(strict, method)("/api/messages/1/", {"body": "x"}, format="json")
        assert response.status_code == 404 and response.json() == {
            "detail": "Not found.",
            "code": "not_found",
        }


# --- moderation hierarchy and what muted or banned users may do ------------------------------------


def _rows():
    return (
        list(Membership.objects.order_by("pk").values()),
        list(Message.objects.order_by("pk").values()),
        list(Room.objects.order_by("pk").values()),
    )


@pytest.fixture
def moderators(room, user, other_user):
    """lobby: alice owner, bob and carol moderators, dave member, each with a message."""
    carol, dave = factories.make_user("carol"), factories.make_user("dave")
    for member, role in ((other_user, "moderator"), (carol, "moderator"), (dave, "member")):
        services.member_add(room=room, actor=user, user=member, role=role)
    said = {
        u.username: services.message_post(
            room=room, author=u, body=f"from {u.username}", client_msg_id="c"
        ).message
        for u in (user, other_user, carol, dave)
    }
    return said


def _moderation_requests(target, message_id):
    base = "/api/rooms/lobby"
    return [
        ("post", f"{base}/members/", {"username": target, "role": "member"}),
        ("post", f"{base}/members/", {"username": target, "role": "moderator"}),
        ("patch", f"{base}/members/{target}/", {"role": "member"}),
        ("post", f"{base}/members/{target}/mute/", {"minutes": 5}),
        ("delete", f"{base}/members/{target}/mute/", None),
        ("post", f"{base}/members/{target}/ban/", None),
        ("delete", f"{base}/members/{target}/ban/", None),
        ("delete", f"{base}/members/{target}/", None),
        ("delete", f"{base}/messages/{message_id}/", None),
    ]


def test_a_moderator_cannot_demote_mute_ban_or_delete_for_a_fellow_moderator_over_rest(
    room, other_user, moderators
):
    bob_api = client_for(other_user)
    before = _rows()
    for method, url, body in _moderation_requests("carol", moderators["carol"].pk):
        response = getattr(bob_api, method)(url, body, format="json")
        assert response.status_code == 403 and response.data["code"] == "forbidden", (
            method,
            url,
            response.data,
        )
        assert _rows() == before, (method, url)


def test_nobody_acts_on_the_owner_over_rest(room, other_user, moderators):
    bob_api = client_for(other_user)
    before = _rows()
    for method, url, body in _moderation_requests("alice", moderators["alice"].pk):
        response = getattr(bob_api, method)(url, body, format="json")
        assert response.status_code == 403 and response.data["code"] == "forbidden", (
            method,
            url,
            response.data,
        )
        assert _rows() == before, (method, url)


def test_the_owner_demotes_a_moderator_who_then_can_be_muted_by_one(api, room, other_user, moderators):
    response = api.post("/api/rooms/lobby/members/", {"username": "carol", "role": "member"}, format="json")
    assert response.status_code == 200 and response.data["role"] == "member"
    assert (
        client_for(other_user)
        .post("/api/rooms/lobby/members/carol/mute/", {"minutes": 5}, format="json")
        .status_code
        == 200
    )
    assert api.delete(f"/api/rooms/lobby/messages/{moderators['bob'].pk}/").status_code == 204


def test_a_muted_author_cannot_edit_over_rest_and_gets_muted_with_until(api, bob_api, room, other_user):
    message = services.message_post(room=room, author=other_user, body="old", client_msg_id="o").message
    until = (timezone.now() + timedelta(minutes=10)).isoformat()
    assert api.post("/api/rooms/lobby/members/bob/mute/", {"until": until}, format="json").status_code == 200
    before = _rows()
    response = bob_api.patch(f"/api/rooms/lobby/messages/{message.pk}/", {"body": "new"}, format="json")
    assert response.status_code == 403 and response.data["code"] == "muted" and response.data["until"]
    assert _rows() == before


def test_a_muted_user_reads_history_and_deletes_their_own_message_over_rest(api, bob_api, room, other_user):
    message = services.message_post(room=room, author=other_user, body="regret", client_msg_id="r").message
    assert api.post("/api/rooms/lobby/members/bob/mute/", {"minutes": 5}, format="json").status_code == 200
    assert [m["body"] for m in bob_api.get("/api/rooms/lobby/messages/").data["results"]] == ["regret"]
    assert bob_api.delete(f"/api/rooms/lobby/messages/{message.pk}/").status_code == 204
    assert Message.objects.get(pk=message.pk).deleted_at is not None


def test_a_muted_user_cannot_leave_a_public_room_to_shed_the_mute(api, bob_api, room, other_user):
    services.member_join(room=room, user=other_user)
    assert api.post("/api/rooms/lobby/members/bob/mute/", {"minutes": 5}, format="json").status_code == 200
    before = _rows()
    response = bob_api.delete("/api/rooms/lobby/members/me/")
    assert response.status_code == 403 and response.data["code"] == "muted" and response.data["until"]
    assert _rows() == before


def test_a_banned_user_reads_a_public_rooms_history_but_cannot_edit_or_delete(api, bob_api, room, other_user):
    message = services.message_post(room=room, author=other_user, body="mine", client_msg_id="m").message
    assert api.post("/api/rooms/lobby/members/bob/ban/").status_code == 200
    assert [m["body"] for m in bob_api.get("/api/rooms/lobby/messages/").data["results"]] == ["mine"]
    before = _rows()
    for method, body in (("patch", {"body": "changed"}), ("delete", None)):
        response = getattr(bob_api, method)(f"/api/rooms/lobby/messages/{message.pk}/", body, format="json")
        assert response.status_code == 403 and response.data["code"] == "banned"
    assert _rows() == before


def test_a_banned_user_of_a_private_room_gets_404_on_their_own_messages(
    api, bob_api, private_room, other_user
):
    services.member_add(room=private_room, actor=private_room.created_by, user=other_user)
    message = services.message_post(
        room=private_room, author=other_user, body="mine", client_msg_id="m"
    ).message
    assert api.post("/api/rooms/secret/members/bob/ban/").status_code == 200
    for method, body in (("get", None), ("patch", {"body": "changed"}), ("delete", None)):
        assert (
            getattr(bob_api, method)(
                f"/api/rooms/secret/messages/{message.pk}/", body, format="json"
            ).status_code
            == 404
        )
    assert bob_api.get("/api/rooms/secret/messages/").status_code == 404


# --- nothing reveals a private room ----------------------------------------------------------------

UNAVAILABLE_BODY = (
    b'{"detail":"This slug is not available; choose another.","code":"slug_unavailable",'
    b'"slug":["This slug is not available; choose another."]}'
)


def test_creating_a_room_over_a_private_slug_answers_exactly_as_over_any_unavailable_slug(
    bob_api, room, private_room
):
    """bob cannot see ``secret``; ``lobby`` is visible to him, ``new`` is reserved: one answer."""
    count = Room.objects.count()
    answers = []
    for body in (
        {"name": "Mine", "slug": "secret"},
        {"name": "Mine", "slug": "lobby"},
        {"name": "Mine", "slug": "new"},
        {"name": "Secret"},
        {"name": "Lobby"},
    ):
        response = bob_api.post("/api/rooms/", body, format="json")
        answers.append((response.status_code, response.content))
    assert answers == [(400, UNAVAILABLE_BODY)] * 5
    assert Room.objects.count() == count
    assert (
        bob_api.get("/api/rooms/secret/").status_code
        == bob_api.get("/api/rooms/nothing-here/").status_code
        == 404
    )


@pytest.mark.parametrize("value", ["yes", "on", "1", 1, 0, "no", "", [], {}])
def test_is_private_takes_a_boolean_only_and_a_refusal_changes_nothing(api, room, value):
    """``is_private`` is JSON ``true``/``false`` (or, in a form body, the text ``true``/``false``):
    DRF read ``"yes"``, ``"on"``, ``1`` as true. Anything else is 400 with the field's error, on
    create and on update, and changes nothing."""
    created = api.post("/api/rooms/", {"name": "Plans", "is_private": value}, format="json")
    assert created.status_code == 400 and list(created.data) == ["is_private"], created.data
    assert not Room.objects.filter(name="Plans").exists()
    updated = api.patch("/api/rooms/lobby/", {"is_private": value, "name": "Renamed"}, format="json")
    assert updated.status_code == 400 and list(updated.data) == ["is_private"], updated.data
    room.refresh_from_db()
    assert (room.is_private, room.name) == (False, "Lobby")


def test_is_private_in_a_form_body_is_the_text_true_or_false(api, room):
    """A multipart body carries text: ``true`` and ``false`` are read in any case."""
    assert api.post("/api/rooms/", {"name": "Plans", "is_private": "True"}).data["is_private"] is True
    assert api.patch("/api/rooms/lobby/", {"is_private": "FALSE"}).data["is_private"] is False


def test_a_private_room_made_without_a_slug_cannot_be_found_by_its_name(api, bob_api):
    response = api.post("/api/rooms/", {"name": "Plans", "is_private": True}, format="json")
    assert (
        response.status_code == 201
        and response.data["slug"].startswith("plans-")
        and len(response.data["slug"]) == 18
    )
    probe = bob_api.post(
        "/api/rooms/", {"name": "Plans"}, format="json"
    )  # the slug a name would give is free
    assert probe.status_code == 201 and probe.data["slug"] == "plans"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "\u200b\u200b"}, "name"),
        ({"name": "\u3164"}, "name"),
        ({"name": "a\u200bb"}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"name": "a\nb", "slug": "ab"}, "name"),
        ({"name": "ok", "description": "\u200b"}, "description"),
        ({"name": "ok", "description": "esc\x1b[2J"}, "description"),
    ],
)
def test_room_names_and_descriptions_with_control_or_only_invisible_characters_are_400(
    api, room, body, field
):
    count = Room.objects.count()
    response = api.post("/api/rooms/", body, format="json")
    assert response.status_code == 400 and list(response.data) == [field], response.data
    assert Room.objects.count() == count
    response = api.patch("/api/rooms/lobby/", {k: v for k, v in body.items() if k != "slug"}, format="json")
    assert response.status_code == 400 and field in response.data
    assert Room.objects.get(slug="lobby").name == "Lobby"


def test_every_room_route_answers_an_invisible_private_room_with_the_body_of_a_missing_one(
    bob_api, private_room, user
):
    message = services.message_post(room=private_room, author=user, body="secret", client_msg_id="s1").message
    routes = [
        ("get", "/"),
        ("patch", "/"),
        ("delete", "/"),
        ("get", "/presence/"),
        ("get", "/messages/"),
        ("post", "/messages/"),
        ("get", f"/messages/{message.pk}/"),
        ("patch", f"/messages/{message.pk}/"),
        ("delete", f"/messages/{message.pk}/"),
        ("get", "/members/"),
        ("post", "/members/"),
        ("get", "/members/alice/"),
        ("patch", "/members/alice/"),
        ("delete", "/members/me/"),
        ("post", "/members/alice/mute/"),
        ("post", "/members/alice/ban/"),
        ("delete", "/members/alice/ban/"),
    ]
    body = {
        "body": "x",
        "client_msg_id": "y",
        "role": "member",
        "username": "alice",
        "minutes": 5,
        "name": "n",
    }
    for method, tail in routes:
        hidden = getattr(bob_api, method)(f"/api/rooms/secret{tail}", body, format="json")
        missing = getattr(bob_api, method)(f"/api/rooms/secreu{tail}", body, format="json")
        assert (
            (hidden.status_code, hidden.content)
            == (missing.status_code, missing.content)
            == (404, b'{"detail":"Not found.","code":"not_found"}')
        ), (method, tail, hidden.content)


def test_a_moderator_cannot_make_a_private_room_public_nor_archive_it_over_rest(
    api, private_room, other_user
):
    services.member_add(room=private_room, actor=private_room.created_by, user=other_user, role="moderator")
    bob_api = client_for(other_user)
    before = _rows()
    response = bob_api.patch("/api/rooms/secret/", {"is_private": False}, format="json")
    assert response.status_code == 403 and response.data["code"] == "forbidden"
    response = bob_api.delete("/api/rooms/secret/")
    assert response.status_code == 403 and response.data["code"] == "forbidden"
    assert _rows() == before
    assert bob_api.patch("/api/rooms/secret/", {"name": "Renamed"}, format="json").status_code == 200
    assert api.patch("/api/rooms/secret/", {"is_private": False}, format="json").data["is_private"] is False


def test_joining_again_answers_200_with_the_membership_first_join_201(
    bob_api, api, room, private_room, other_user
):
    first = bob_api.post("/api/rooms/lobby/members/", {}, format="json")
    assert first.status_code == 201 and first.data["role"] == "member"
    again = bob_api.post("/api/rooms/lobby/members/", {}, format="json")
    assert again.status_code == 200 and again.data == first.data
    assert Membership.objects.filter(room=room, user=other_user).count() == 1
    # the owner "joining" their own room, and a member of a private room joining it: 200
    assert api.post("/api/rooms/lobby/members/", {}, format="json").status_code == 200
    assert api.post("/api/rooms/secret/members/", {}, format="json").status_code == 200
    # adding someone: 201 the first time, 200 when they already are a member (same role)
    assert api.post("/api/rooms/secret/members/", {"username": "bob"}, format="json").status_code == 201
    again = api.post("/api/rooms/secret/members/", {"username": "bob"}, format="json")
    assert again.status_code == 200 and again.data["role"] == "member"
    promoted = api.post("/api/rooms/secret/members/", {"username": "bob", "role": "moderator"}, format="json")
    assert promoted.status_code == 200 and promoted.data["role"] == "moderator"


# --- every REST 404 is one JSON body that names no model ------------------------------------------

NOT_FOUND = {"detail": "Not found.", "code": "not_found"}
MODEL_WORDS = ("room", "message", "member", "user", "token", "matches the given query", "<!doctype", "<html")


def _api_routes():
    """Every named route of the REST API, read from the URLconf (``chatsite.urls`` →
    ``rooms.api_urls``, routers included): ``(name, kwarg names, HTTP methods)``."""
    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns, namespace, inherited):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                names = inherited | set(entry.pattern.regex.groupindex)
                yield from walk(entry.url_patterns, entry.namespace or namespace, names)
            elif isinstance(entry, URLPattern) and namespace == "api" and entry.name:
                callback = entry.callback
                if hasattr(callback, "actions"):  # a viewset's route: its method → action map
                    methods = set(callback.actions)
                else:
                    view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
                    methods = {
                        m for m in ("get", "post", "patch", "put", "delete") if view and hasattr(view, m)
                    }
                yield (
                    entry.name,
                    inherited | set(entry.pattern.regex.groupindex),
                    methods - {"options", "head"},
                )

    return list(walk(get_resolver().url_patterns, None, set()))


def test_every_rest_route_answers_a_missing_id_with_one_json_404_naming_no_model(api, room, user):
    from django.urls import reverse

    routes = [r for r in _api_routes() if r[1]]
    assert {
        "room-detail",
        "message-detail",
        "member-detail",
        "member-mute",
        "member-ban",
        "message-list",
    } <= {name for name, _, _ in routes}, routes  # the walk found the routes with ids
    missing = {
        "slug": "no-such-room",
        "room_slug": "no-such-room",
        "pk": "999999999",
        "username": "nobody-here",
        "attachment_id": "999999999",
        "name": "nothing.txt",
    }
    body = {"body": "x", "client_msg_id": "y", "role": "member", "minutes": 5, "name": "n", "seq": 1}
    asked = 0
    for name, kwargs, methods in routes:
        variants = [{k: missing[k] for k in kwargs}]  # the room is missing
        for inner in kwargs - {"slug", "room_slug"}:  # the room exists; the message or user does not
            variants.append(
                {
                    k: (
                        missing[k]
                        if k == inner
                        else "lobby"
                        if k in ("slug", "room_slug")
                        else "me"
                        if k == "username"
                        else "x.txt"
                        if k == "name"
                        else str(
                            Message.objects.create(
                                room=room, author=user, seq=1000 + asked, body="b", client_msg_id=f"w{asked}"
                            ).pk
                        )
                    )
                    for k in kwargs
                }
            )
        for values in variants:
            path = reverse(f"api:{name}", kwargs=values)
            for method in sorted(methods):
                response = getattr(api, method)(path, body, format="json")
                asked += 1
                assert response.status_code == 404, (
                    method,
                    path,
                    response.status_code,
                    response.content[:200],
                )
                assert response["Content-Type"] == "application/json", (method, path)
                assert response.json() == NOT_FOUND, (method, path, response.content)
                assert not any(word in response.content.decode().lower() for word in MODEL_WORDS), (
                    method,
                    path,
                )
    assert asked >= 25
    # a huge message id (beyond bigint) is a missing message too, not a server error
    assert api.get(f"/api/rooms/lobby/messages/{2**70}/").json() == NOT_FOUND


def test_unknown_api_paths_and_a_missing_dm_partner_answer_the_same_json_404(api, db):
    for path in ("/api/nope/", "/api/rooms/lobby/messages/abc/", "/api/rooms/x/y/z/", "/api/v2/rooms/"):
        response = api.get(path)
        assert response.status_code == 404 and response.json() == NOT_FOUND, path
    response = api.post("/api/dms/", {"username": "nobody-here"}, format="json")
    assert response.status_code == 404 and response.json() == NOT_FOUND


def test_djangos_404_handler_answers_json_under_api_and_a_page_elsewhere(rf):
    from django.http import Http404

    from rooms.views import page_not_found

    response = page_not_found(rf.get("/api/whatever"), Http404("No Room matches the given query."))
    assert response.status_code == 404 and json.loads(response.content) == NOT_FOUND
    page = page_not_found(rf.get("/nowhere/"), Http404("x"))
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


# --- slugs are one regardless of case; dm- is reserved ---------------------------------------------


def test_a_slug_differing_only_in_case_or_reserved_in_any_case_is_the_one_unavailable_answer(
    bob_api, room, private_room
):
    """``lobby`` is visible to bob, ``secret`` is a private room he cannot see: the same answer
    for every case of either, for ``dm-`` in any case and ``NEW``; nothing is created."""
    count = Room.objects.count()
    answers = set()
    for slug in ("LOBBY", "Lobby", "SECRET", "sEcReT", "dm-mine", "DM-mine", "Dm-x", "NEW", "New"):
        response = bob_api.post("/api/rooms/", {"name": "Mine", "slug": slug}, format="json")
        answers.add((response.status_code, response.content))
        assert response.json()["code"] == "slug_unavailable", slug
    assert answers == {(400, UNAVAILABLE_BODY)}
    assert Room.objects.count() == count
    assert bob_api.post("/api/rooms/", {"name": "Dmitri", "slug": "dmitri"}, format="json").status_code == 201


def test_lookups_by_slug_are_exact(api, bob_api, room):
    assert api.get("/api/rooms/lobby/").status_code == 200
    for path in ("/api/rooms/LOBBY/", "/api/rooms/Lobby/messages/", "/api/rooms/LOBBY/members/"):
        response = api.get(path)
        assert response.status_code == 404 and response.json() == NOT_FOUND, path
    mixed = api.post("/api/rooms/", {"name": "Big Room", "slug": "Big-Room"}, format="json")
    assert mixed.status_code == 201 and mixed.data["slug"] == "Big-Room"  # kept as given
    assert (
        api.get("/api/rooms/Big-Room/").status_code == 200
        and api.get("/api/rooms/big-room/").status_code == 404
    )
    assert (
        bob_api.post("/api/rooms/", {"name": "Big room"}, format="json").json()["code"] == "slug_unavailable"
    )
