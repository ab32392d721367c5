"""Pages and /healthz, through Django's test client against the real database."""

import re

import pytest
from django.urls import reverse

from chatsite import redis_config
from rooms import services
from rooms.models import Message, Room
from tests import factories
from tests.nodes import free_port

pytestmark = pytest.mark.django_db


def test_healthz_reports_node_database_and_layer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "server_id": "test-node",
        "database": "ok",
        "channel_layer": "redis",
        "redis": "ok",
    }


def test_healthz_is_503_when_redis_cannot_be_reached(client, settings):
    settings.REDIS = redis_config.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    settings.REDIS_URL = settings.REDIS.url
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["redis"] == "unavailable" and body["failing"] == ["redis"]
    assert body["redis_error"] == "connection refused"
    assert body["database"] == "ok"


def test_pages_need_sign_in(client, room):
    for url in (reverse("rooms:list"), reverse("rooms:detail", args=[room.slug])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_sign_up_signs_in_and_shows_the_room_list(client):
    response = client.post(
        reverse("signup"),
        {"username": "newbie", "password1": factories.PASSWORD, "password2": factories.PASSWORD},
        follow=True,
    )
    assert response.status_code == 200
    assert response.context["user"].username == "newbie"
    assert response.redirect_chain[-1][0] == reverse("rooms:list")


def test_sign_up_with_mismatched_passwords_shows_the_error(client):
    response = client.post(
        reverse("signup"), {"username": "x", "password1": "a-long-pass-1", "password2": "other"}
    )
    assert response.status_code == 200 and response.context["form"].errors


def test_log_in_and_log_out(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": factories.PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("rooms:list")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("rooms:list")).status_code == 302


def test_room_list_shows_rooms_and_the_node_to_staff_only(client, user, room):
    client.force_login(user)
    response = client.get(reverse("rooms:list"))
    content = response.content.decode()
    assert "Lobby" in content and reverse("rooms:detail", args=["lobby"]) in content
    assert "test-node" not in content and response["X-Served-By"] == "test-node"
    user.is_staff = True
    user.save()
    assert (
        'page served by <span class="node">test-node</span>'
        in client.get(reverse("rooms:list")).content.decode()
    )


def test_create_room_from_the_form_opens_it(client, user):
    client.force_login(user)
    response = client.post(
        reverse("rooms:create"), {"name": "Book Club", "slug": "", "description": "reading"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("rooms:detail", args=["book-club"])
    room = Room.objects.get(slug="book-club")
    assert room.created_by == user and room.description == "reading"


def test_create_room_with_a_taken_slug_shows_the_error(client, user, room):
    client.force_login(user)
    response = client.post(reverse("rooms:create"), {"name": "Another lobby", "slug": "lobby"})
    assert response.status_code == 200 and "slug" in response.context["form"].errors
    response = client.post(reverse("rooms:create"), {"name": "Lobby", "slug": ""})
    assert response.status_code == 200 and "slug" in response.context["form"].errors
    assert Room.objects.count() == 1


def test_room_page_shows_the_last_50_messages_escaped(client, user, room):
    for i in range(55):
        services.message_post(room=room, author=user, body=f"message number {i}", client_msg_id=f"c{i}")
    services.message_post(room=room, author=user, body="<script>alert('x')</script>", client_msg_id="xss")
    client.force_login(user)
    response = client.get(reverse("rooms:detail", args=[room.slug]))
    content = response.content.decode()
    assert response.status_code == 200
    assert [m["seq"] for m in response.context["history"]] == list(range(7, 57))
    assert "message number 5<" not in content and "message number 6" in content
    assert "<script>alert('x')</script>" not in content
    # the body as the page draws it: its body_html, sanitised (nh3 escapes < and >, not quotes)
    assert (
        "<div class=\"message__body message__body--html\"><p>&lt;script&gt;alert('x')&lt;/script&gt;</p></div>"
        in content
    )
    assert "/ws/rooms/lobby/" in content and "test-node" in content


def test_unknown_room_page_is_404(client, user):
    client.force_login(user)
    assert client.get(reverse("rooms:detail", args=["nope"])).status_code == 404


def _unmasked(content: bytes) -> bytes:
    """A page without its CSRF tokens' values (masked anew for every response)."""
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b'name="csrfmiddlewaretoken"', content)


@pytest.mark.parametrize("language", ["en", "ko"])
def test_a_missing_page_is_the_sites_own_404_page_naming_nothing(client, user, other_user, language):
    """A page 404 has the site's header and a way back to the rooms, in the reader's language;
    a private room one is not in gets the same page as a room that does not exist (its name
    appears nowhere)."""
    from django.conf import settings

    services.room_create(name="Hidden plans", slug="secret", is_private=True, created_by=user)
    client.force_login(other_user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    pages = [client.get("/rooms/secret/"), client.get("/rooms/nope/"), client.get("/no/such/page/")]
    assert [page.status_code for page in pages] == [404, 404, 404]
    # The same page but for the address itself (the language switch returns to it).
    assert _unmasked(pages[0].content.replace(b"/rooms/secret/", b"/rooms/nope/")) == _unmasked(
        pages[1].content
    )
    heading = "Page not found" if language == "en" else "페이지를 찾을 수 없습니다"
    back = "Back to the rooms" if language == "en" else "방 목록으로 돌아가기"
    for page in pages:
        content = page.content.decode()
        assert heading in content and back in content and 'class="site-header"' in content, content[:300]
        assert "Hidden plans" not in content


@pytest.mark.parametrize("username", ["alice\u3164", "\u115fbob", "car\u1160ol", "dave\uffa0"])
def test_a_username_with_an_invisible_hangul_filler_is_refused_at_sign_up_and_in_admin(client, username):
    """Django's username validator (``\\w``) admits the Hangul fillers, letters that show
    nothing ("alice" + U+3164 looks like "alice"); sign-up and the admin's add and change forms
    refuse them and create or rename nobody. A Korean username stays fine."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    answer = client.post(
        reverse("signup"),
        {"username": username, "password1": factories.PASSWORD, "password2": factories.PASSWORD},
    )
    assert answer.status_code == 200 and "invisible" in answer.context["form"].errors["username"][0]
    admin = factories.make_user("root")
    User.objects.filter(pk=admin.pk).update(is_staff=True, is_superuser=True)
    client.force_login(admin)
    added = client.post(
        "/admin/auth/user/add/",
        {
            "username": username,
            "usable_password": "true",
            "password1": factories.PASSWORD,
            "password2": factories.PASSWORD,
        },
    )
    assert added.status_code == 200 and "invisible" in str(added.context["adminform"].form.errors["username"])
    bob = factories.make_user("bob")
    changed = client.post(
        f"/admin/auth/user/{bob.pk}/change/",
        {
            "username": username,
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert changed.status_code == 200 and "invisible" in str(
        changed.context["adminform"].form.errors["username"]
    )
    assert sorted(User.objects.values_list("username", flat=True)) == ["bob", "root"]
    korean = client.post(
        "/admin/auth/user/add/",
        {
            "username": "한지민",
            "usable_password": "true",
            "password1": factories.PASSWORD,
            "password2": factories.PASSWORD,
        },
    )
    assert korean.status_code == 302 and User.objects.filter(username="한지민").exists()


def test_sign_up_with_a_name_taken_meanwhile_is_a_form_error_not_a_500(client, monkeypatch):
    from django.contrib.auth.forms import UserCreationForm

    from tests import factories as f

    original = UserCreationForm.save

    def save_after_someone_else(self, *args, **kwargs):
        f.make_user(self.cleaned_data["username"])  # the race: another node saved it first
        return original(self, *args, **kwargs)

    monkeypatch.setattr(UserCreationForm, "save", save_after_someone_else)
    response = client.post(
        reverse("signup"), {"username": "racer", "password1": f.PASSWORD, "password2": f.PASSWORD}
    )
    assert response.status_code == 200 and "username" in response.context["form"].errors


def test_the_create_form_answers_a_slug_held_by_an_invisible_private_room_as_any_unavailable_slug(
    client, user, other_user, room
):
    from rooms import services as s

    s.room_create(name="Hidden", slug="hidden", is_private=True, created_by=other_user)
    client.force_login(user)
    count = Room.objects.count()
    answers = []
    for data in (
        {"name": "Mine", "slug": "hidden"},
        {"name": "Mine", "slug": "lobby"},
        {"name": "Mine", "slug": "new"},
        {"name": "Hidden", "slug": ""},
        {"name": "Lobby", "slug": ""},
    ):
        response = client.post(reverse("rooms:create"), data)
        answers.append((response.status_code, dict(response.context["form"].errors)))
    assert answers == [(200, {"slug": ["This slug is not available; choose another."]})] * 5
    assert Room.objects.count() == count


def test_the_create_form_refuses_a_slug_differing_only_in_case_or_with_the_dm_prefix(
    client, user, other_user, room
):
    from rooms import services as s

    s.room_create(name="Hidden", slug="hidden", is_private=True, created_by=other_user)
    client.force_login(user)
    count = Room.objects.count()
    for data in (
        {"name": "Mine", "slug": "HIDDEN"},
        {"name": "Mine", "slug": "Lobby"},
        {"name": "Mine", "slug": "DM-mine"},
        {"name": "LOBBY", "slug": ""},
    ):
        response = client.post(reverse("rooms:create"), data)
        assert dict(response.context["form"].errors) == {
            "slug": ["This slug is not available; choose another."]
        }, data
    assert Room.objects.count() == count


def test_a_private_room_made_on_the_page_without_a_slug_gets_an_unguessable_one(client, user, other_user):
    import re

    from rooms import services as s

    s.room_create(
        name="Plans", slug="plans", created_by=other_user, is_private=True
    )  # the name's slug is taken
    client.force_login(user)
    response = client.post(reverse("rooms:create"), {"name": "Plans", "slug": "", "is_private": "on"})
    assert response.status_code == 302
    slug = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    assert re.fullmatch(r"plans-[a-z0-9]{12}", slug) and Room.objects.get(slug=slug).is_private


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "\u200b"}, "name"),
        ({"name": "\u3164\u3164"}, "name"),
        ({"name": "ding\x07"}, "name"),
        ({"name": "zero\u200bwidth"}, "name"),
        ({"name": "Fine", "description": "\u2800"}, "description"),
        ({"name": "Fine", "description": "x\x1b[2J"}, "description"),
    ],
)
def test_the_create_form_refuses_names_and_descriptions_with_control_or_only_invisible_characters(
    client, user, data, field
):
    client.force_login(user)
    response = client.post(reverse("rooms:create"), {"slug": "fine", **data})
    assert response.status_code == 200 and list(response.context["form"].errors) == [field]
    assert not Room.objects.exists()


def test_the_room_page_of_an_invisible_private_room_is_the_page_of_a_missing_room(client, user, other_user):
    from rooms import services as s

    s.room_create(name="Hidden", slug="hidden", is_private=True, created_by=other_user)
    client.force_login(user)
    hidden, missing = client.get("/rooms/hidden/"), client.get("/rooms/hiddem/")
    assert hidden.status_code == missing.status_code == 404
    assert _unmasked(hidden.content.replace(b"/rooms/hidden/", b"/rooms/hiddem/")) == _unmasked(
        missing.content
    )


def test_the_room_pages_edit_by_a_muted_author_is_refused_with_muted_and_until(
    client, user, other_user, room
):
    """The room page edits and deletes through the REST API with the session and its CSRF token."""
    from datetime import timedelta

    from django.test import Client
    from django.utils import timezone

    from rooms import services as s

    message = s.message_post(room=room, author=other_user, body="old", client_msg_id="o").message
    s.member_mute(room=room, actor=user, user=other_user, until=timezone.now() + timedelta(minutes=5))
    page = Client(enforce_csrf_checks=True)
    page.force_login(other_user)
    assert page.get(reverse("rooms:detail", args=["lobby"])).status_code == 200
    headers = {"X-CSRFToken": page.cookies["csrftoken"].value}
    url = f"/api/rooms/lobby/messages/{message.pk}/"
    response = page.patch(url, {"body": "new"}, content_type="application/json", headers=headers)
    assert response.status_code == 403 and response.json()["code"] == "muted" and response.json()["until"]
    assert Message.objects.get(pk=message.pk).body == "old"
    assert page.delete(url, headers=headers).status_code == 204  # deleting their own: allowed


def test_a_banned_user_still_reads_a_public_rooms_page(client, user, other_user, room):
    services.message_post(room=room, author=user, body="public words", client_msg_id="p")
    services.member_ban(room=room, actor=user, user=other_user)
    client.force_login(other_user)
    response = client.get(reverse("rooms:detail", args=["lobby"]))
    assert response.status_code == 200 and [m["body"] for m in response.context["history"]] == [
        "public words"
    ]
    assert response.context["my_role"] is None and response.context["can_moderate"] is False


def test_a_banned_user_of_a_private_room_gets_the_missing_room_page(client, user, other_user):
    secret = services.room_create(name="Secret", slug="secret", is_private=True, created_by=user)
    services.member_add(room=secret, actor=user, user=other_user)
    services.member_ban(room=secret, actor=user, user=other_user)
    client.force_login(other_user)
    assert client.get("/rooms/secret/").status_code == 404


def test_a_multi_line_description_from_the_pages_textarea_is_kept(client, user):
    client.force_login(user)
    response = client.post(
        reverse("rooms:create"), {"name": "Notes", "slug": "", "description": "one\r\ntwo\tthree"}
    )
    assert response.status_code == 302 and Room.objects.get(slug="notes").description == "one\r\ntwo\tthree"


def test_a_rooms_page_is_at_its_slug_exactly(client, user, room):
    client.force_login(user)
    assert client.get("/rooms/lobby/").status_code == 200
    assert client.get("/rooms/LOBBY/").status_code == 404
