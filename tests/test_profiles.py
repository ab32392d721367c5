"""Profiles (rooms.profiles): a display name and an e-mail address set on the settings page; the
display name is in the user shape beside every message (REST history, live frames) and member;
bad input is refused with the field's error and changes nothing."""

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from rooms import profiles, services

pytestmark = pytest.mark.django_db


def settings_post(user, **data):
    client = Client()
    client.force_login(user)
    return client.post("/settings/", {"display_name": "", "email": "", **data})


def test_the_settings_page_sets_display_name_and_email(user):
    response = settings_post(user, display_name="  Alice Kim ", email="alice@example.org")
    assert response.status_code == 302
    user.refresh_from_db()
    assert (user.first_name, user.email) == ("Alice Kim", "alice@example.org")
    page = Client()
    page.force_login(user)
    html = page.get("/settings/").content.decode()
    assert 'value="Alice Kim"' in html and 'value="alice@example.org"' in html


@pytest.mark.parametrize(
    "bad, why",
    [
        ("\u200b\u200b", "nothing visible"),
        ("Ali\x07ce", "control characters"),
        ("x" * (profiles.DISPLAY_NAME_MAX_LENGTH + 1), "at most"),
    ],
)
def test_a_bad_display_name_is_refused_and_nothing_changes(user, bad, why):
    user.first_name = "Before"
    user.save()
    response = settings_post(user, display_name=bad, email="new@example.org")
    assert response.status_code == 200
    assert why in response.content.decode().lower()
    user.refresh_from_db()
    assert (user.first_name, user.email) == ("Before", "")


def test_an_email_address_belongs_to_one_account(user, other_user):
    other_user.email = "Shared@Example.org"
    other_user.save()
    response = settings_post(user, email="shared@example.org")
    assert response.status_code == 200
    assert "another account uses" in response.content.decode().lower()
    user.refresh_from_db()
    assert user.email == ""
    with pytest.raises(ValidationError):
        profiles.clean_email("not an address")


def test_the_display_name_is_in_the_message_and_member_shapes(room, user, other_user):
    profiles.profile_update(user=user, display_name="Alice Kim")
    services.member_join(room=room, user=other_user)
    services.message_post(room=room, author=user, body="hello", client_msg_id="p1")
    client = APIClient()
    client.force_authenticate(other_user)
    history = client.get("/api/rooms/lobby/messages/").data["results"]
    assert history[-1]["author"] == {"id": user.pk, "username": user.username, "display_name": "Alice Kim"}
    members = {
        m["user"]["username"]: m["user"] for m in client.get("/api/rooms/lobby/members/").data["results"]
    }
    assert members[user.username]["display_name"] == "Alice Kim"
    assert members[other_user.username]["display_name"] == ""
    assert client.get("/api/rooms/lobby/").data["created_by"]["display_name"] == "Alice Kim"


@pytest.mark.django_db(transaction=True)
async def test_a_live_message_carries_its_authors_display_name(ws, room, user, other_user):
    from channels.db import database_sync_to_async

    await database_sync_to_async(profiles.profile_update)(user=user, display_name="김민수")
    fresh = await database_sync_to_async(get_user_model().objects.get)(pk=user.pk)
    watcher = await ws("/ws/rooms/lobby/", user=other_user)
    assert await watcher.connect()
    await watcher.receive_type("hello")
    sender = await ws("/ws/rooms/lobby/", user=fresh)
    assert await sender.connect()
    await sender.receive_type("hello")
    await sender.send({"type": "message.send", "body": "안녕", "client_msg_id": "k1"})
    frame = await watcher.receive_type("message")
    assert frame["message"]["author"] == {"id": user.pk, "username": user.username, "display_name": "김민수"}
    await watcher.close()
    await sender.close()


def test_a_display_name_may_not_be_another_users_username_nor_turn_text_around(user, other_user):
    for bad, why in (
        (other_user.username.upper(), "choose a name that is yours"),
        ("\u202eecila", "text-direction"),
        ("Ali\u200bce", "invisible characters"),
    ):
        response = settings_post(user, display_name=bad)
        assert response.status_code == 200 and why in response.content.decode(), bad
    user.refresh_from_db()
    assert user.first_name == ""
    assert settings_post(user, display_name=user.username).status_code == 302  # one's own is fine


def test_an_overlong_email_address_is_a_form_error_not_a_server_error(user):
    response = settings_post(user, email="a" * 300 + "@example.com")
    assert response.status_code == 200 and "254" in response.content.decode()
