"""Room names in any script get a working slug on their own (rooms.models.slug_from_name:
"일반 대화방" → "일반-대화방"), and slugs that differ only in case or Unicode form (NFC and NFD
Hangul, full-width and ASCII letters) are one slug: the second answers slug_unavailable. The room
works by that slug on every route: REST, the page, the socket."""

import json
import re
import unicodedata
from urllib.parse import quote

import pytest
from django.test import Client
from rest_framework.test import APIClient

from rooms.models import Room, normalize_slug, slug_from_name
from tests import factories

pytestmark = pytest.mark.django_db


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_slug_from_name_keeps_letters_of_any_script():
    assert slug_from_name("일반 대화방") == "일반-대화방"
    assert slug_from_name("Общий чат") == "общий-чат"
    assert slug_from_name("雑談 ルーム") == "雑談-ルーム"
    assert slug_from_name("Café  Ünïcode!") == "cafe-unicode"  # accents fold to ASCII, as before
    assert slug_from_name("Team 일반") == "team-일반"  # no letter is lost
    assert slug_from_name("!!! ???") == ""
    nfd = unicodedata.normalize("NFD", "일반 대화방")
    assert nfd != "일반 대화방" and slug_from_name(nfd) == "일반-대화방"
    assert normalize_slug("Ｇｅｎｅｒａｌ") == "General"


def test_a_korean_room_is_created_over_rest_without_a_slug_and_works_by_its_slug(user, other_user):
    response = api(user).post("/api/rooms/", {"name": "일반 대화방"}, format="json")
    assert response.status_code == 201, response.data
    assert response.data["slug"] == "일반-대화방"
    path = quote("일반-대화방")
    assert api(other_user).get(f"/api/rooms/{path}/").data["name"] == "일반 대화방"
    assert api(other_user).post(f"/api/rooms/{path}/members/", {}, format="json").status_code == 201
    sent = api(other_user).post(
        f"/api/rooms/{path}/messages/", {"body": "안녕하세요", "client_msg_id": "k"}, format="json"
    )
    assert sent.status_code == 201 and sent.data["room"] == "일반-대화방"
    page = Client()
    page.force_login(other_user)
    html = page.get(f"/rooms/{path}/").content.decode()
    assert "안녕하세요" in html
    config = json.loads(
        re.search(r'<script id="room-config" type="application/json">(.*?)</script>', html, re.S)[1]
    )
    assert config["ws_path"] == "/ws/rooms/일반-대화방/" and config["slug"] == "일반-대화방"


@pytest.mark.parametrize(
    "second_name, second_slug",
    [
        (unicodedata.normalize("NFD", "일반 대화방"), None),  # the same name in decomposed jamo
        ("다른 이름", unicodedata.normalize("NFD", "일반-대화방")),
        ("다른 이름", "일반-대화방".upper()),
    ],
)
def test_names_and_slugs_that_differ_only_in_unicode_form_or_case_are_one_slug(
    user, second_name, second_slug
):
    assert api(user).post("/api/rooms/", {"name": "일반 대화방"}, format="json").status_code == 201
    body = {"name": second_name, **({"slug": second_slug} if second_slug else {})}
    response = api(user).post("/api/rooms/", body, format="json")
    assert response.status_code == 400, response.data
    assert response.data["code"] == "slug_unavailable"
    assert Room.objects.count() == 1


def test_full_width_letters_are_the_ascii_slug(user):
    factories.make_room(created_by=user, slug="general")
    response = api(user).post("/api/rooms/", {"name": "General 2", "slug": "Ｇｅｎｅｒａｌ"}, format="json")
    assert response.status_code == 400 and response.data["code"] == "slug_unavailable"


def test_the_create_page_makes_a_korean_slug_from_the_name(user):
    page = Client()
    page.force_login(user)
    response = page.post("/rooms/new/", {"name": "일반 대화방", "slug": "", "description": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == f"/rooms/{quote('일반-대화방')}/"
    assert page.get(response["Location"]).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_the_socket_of_a_korean_room_connects_by_its_slug(ws, user):
    from channels.db import database_sync_to_async

    await database_sync_to_async(factories.make_room)(created_by=user, slug="일반-대화방", name="일반 대화방")
    conn = await ws("/ws/rooms/일반-대화방/", user=user)
    assert await conn.connect()
    hello = await conn.receive_type("hello")
    assert hello["room"] == "일반-대화방"
    await conn.close()


@pytest.mark.django_db(transaction=True)
async def test_an_archived_private_room_is_no_room_for_a_non_member_socket(ws, user, other_user):
    """A socket of someone not in an archived private room closes 4404, as for a room that does
    not exist (4410 would tell them it exists); its member still gets 4410."""
    from channels.db import database_sync_to_async

    from rooms import services

    def make():
        room = factories.make_room(created_by=user, slug="vault", name="Vault", is_private=True)
        services.room_archive(room=room, actor=user)

    await database_sync_to_async(make)()
    for who, code in ((other_user, 4404), (user, 4410)):
        conn = await ws("/ws/rooms/vault/?after_seq=0", user=who)
        assert await conn.connect()
        assert await conn.close_code() == code
    nowhere = await ws("/ws/rooms/no-such-vault/", user=other_user)
    assert await nowhere.connect()
    assert await nowhere.close_code() == 4404
