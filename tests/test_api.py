"""The history route the room page uses to fill gaps (the full REST API comes with issue 3)."""

import pytest
from rest_framework.test import APIClient

from rooms import services
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def history(room, user):
    for i in range(1, 121):
        services.message_post(room=room, author=user, body=f"m{i}", client_msg_id=f"c{i}")
    return room


def seqs(response):
    return [m["seq"] for m in response.data["results"]]


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


def test_messages_have_the_one_message_shape(api, history, user):
    message = api.get("/api/rooms/lobby/messages/", {"limit": 1}).data["results"][0]
    assert message["author"] == {"id": user.pk, "username": "alice"}
    assert set(message) == {"id", "room", "seq", "author", "body", "created_at", "server_id"}


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 201}, {"after_seq": -1}, {"after_seq": "x"}, {"after_seq": 1, "before_seq": 5}]
)
def test_bad_query_is_400_with_errors(api, room, query):
    response = api.get("/api/rooms/lobby/messages/", query)
    assert response.status_code == 400 and response.data


def test_unknown_room_is_404(api, db):
    response = api.get("/api/rooms/nope/messages/")
    assert response.status_code == 404 and "detail" in response.data


def test_anonymous_is_refused(room):
    assert APIClient().get("/api/rooms/lobby/messages/").status_code in (401, 403)


def test_token_authenticates(room, user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
    assert client.get("/api/rooms/lobby/messages/").status_code == 200
