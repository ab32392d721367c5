"""English and Korean (issue 13): the language from Accept-Language, then the pages' switch
(Django's set_language and its cookie); templates, form and validation errors, page messages and
the API's error ``detail`` in that language with ``code`` unchanged; the page scripts' catalog
(/jsi18n/); and the catalogs themselves: every msgid that makemessages finds in the code has a
Korean translation, none fuzzy, and the committed .mo files are compiled from the .po files as
they are (a stale .mo fails)."""

import gettext as gnu_gettext
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from rooms import services
from rooms.i18n import script_catalog_version
from tests import factories

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "locale"
KO = {"HTTP_ACCEPT_LANGUAGE": "ko"}


@pytest.fixture
def minsu(client):
    user = factories.make_user("minsu")
    client.force_login(user)
    return user


@pytest.fixture
def daehwa(minsu):
    room = factories.make_room(created_by=minsu, slug="daehwa")
    return room


def page(client, url, **headers):
    response = client.get(url, **headers)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def test_every_page_renders_in_korean_with_accept_language_ko(client, minsu, daehwa):
    factories.make_user("jiwoo")
    expected = {
        reverse("rooms:list"): ["새 방", "방 만들기", "다이렉트 메시지", "메시지 0개"],
        reverse("rooms:detail", args=[daehwa.slug]): [
            "최신 메시지로 이동",
            "메시지 입력…",
            "방 나가기",
            "연결 중…",
        ],
        reverse("rooms:search") + "?q=hello": ["찾은 메시지가 없습니다.", "검색"],
        reverse("rooms:settings"): ["표시 이름", "비밀번호 변경", "(선택)"],
        reverse("rooms:profile", args=["jiwoo"]): ["함께 있는 방", "메시지 보내기"],
        reverse("password_change"): ["비밀번호 변경", "다른 세션"],
    }
    for url, texts in expected.items():
        html = page(client, url, **KO)
        assert '<html lang="ko">' in html, url
        assert f'src="/jsi18n/?lang=ko&amp;v={script_catalog_version()}"' in html, url
        for text in texts:
            assert text in html, (url, text)
        assert "Log out" not in html and "로그아웃" in html, url
    client.logout()
    for url, text in [
        (reverse("login"), "비밀번호를 잊으셨나요?"),
        (reverse("signup"), "계정 만들기"),
        (reverse("password_reset"), "링크 보내기"),
    ]:
        html = page(client, url, **KO)
        assert '<html lang="ko">' in html and text in html, url


def test_pages_are_english_without_a_header_and_for_other_languages(client, minsu):
    for headers in ({}, {"HTTP_ACCEPT_LANGUAGE": "fr-FR,fr;q=0.9"}, {"HTTP_ACCEPT_LANGUAGE": "en-US,en"}):
        html = page(client, reverse("rooms:list"), **headers)
        assert '<html lang="en">' in html and "New room" in html and "새 방" not in html


def test_the_switch_sets_the_language_cookie_and_pages_follow_it_without_the_header(client, minsu):
    html = page(client, reverse("rooms:list"))
    assert 'action="/i18n/setlang/"' in html and 'value="ko"' in html and "한국어" in html
    response = client.post("/i18n/setlang/", {"language": "ko", "next": "/settings/"})
    assert response.status_code == 302 and response["Location"] == "/settings/"
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    html = page(client, reverse("rooms:settings"))
    assert '<html lang="ko">' in html and "표시 이름" in html
    # the cookie wins over the browser's header; switching back works the same way
    assert '<html lang="ko">' in page(client, reverse("rooms:list"), HTTP_ACCEPT_LANGUAGE="en")
    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    assert '<html lang="en">' in page(client, reverse("rooms:list"), **KO)


def test_the_switch_refuses_an_unknown_language_and_changes_nothing(client, minsu):
    response = client.post("/i18n/setlang/", {"language": "xx", "next": "/"})
    assert response.status_code == 302
    assert settings.LANGUAGE_COOKIE_NAME not in client.cookies
    assert '<html lang="en">' in page(client, reverse("rooms:list"))


def test_api_error_detail_is_korean_and_the_code_stays_english(client, minsu, daehwa):
    other = factories.make_user("jiwoo")
    services.member_join(room=daehwa, user=other)
    client.force_login(other)
    url = f"/api/rooms/{daehwa.slug}/"
    response = client.delete(url, **KO)  # archiving is for the owner and moderators
    assert response.status_code == 403
    assert response.json() == {"detail": "방장이나 관리자만 할 수 있습니다.", "code": "forbidden"}
    english = client.delete(url)
    assert english.json() == {
        "detail": "Only the room's owner or a moderator may do this.",
        "code": "forbidden",
    }
    missing = client.get("/api/rooms/no-such-room/", **KO)
    assert missing.status_code == 404 and missing.json() == {
        "detail": "찾을 수 없습니다.",
        "code": "not_found",
    }
    # DRF's own strings come with its Korean catalog
    anonymous = client.__class__()
    refused = anonymous.get("/api/rooms/", **KO)
    assert (
        refused.status_code in (401, 403)
        and refused.json()["detail"] == "자격 인증 데이터가 제공되지 않았습니다."
    )


def test_a_dm_refusal_and_a_params_detail_are_translated_whole(client, minsu):
    response = client.post("/api/dms/", {"username": "minsu"}, content_type="application/json", **KO)
    assert response.status_code == 400 or response.status_code == 403, response.content
    assert response.json()["detail"] == "나 자신과는 다이렉트 메시지를 시작할 수 없습니다."
    # a socket's error frame keeps the English sentence (the page maps its code)
    error = services.Muted(services._("You are muted in this room until %(until)s."), params={"until": "T"})
    assert error.detail == "You are muted in this room until T." and error.code == "muted"


def test_form_errors_are_korean_ours_and_djangos(client, minsu):
    response = client.post(reverse("rooms:create"), {"name": "!!!", "slug": ""}, **KO)
    html = response.content.decode()
    assert "주소 이름을 정해 주세요." in html, html[:2000]
    client.logout()
    response = client.post(
        reverse("signup"), {"username": "새사용자", "password1": "abc", "password2": "abd"}, **KO
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "비밀번호" in html and "일치하지 않습니다" in html  # Django's own catalog


def test_a_page_message_is_korean(client, minsu):
    response = client.post(
        reverse("rooms:settings"), {"display_name": "민수", "email": ""}, follow=True, **KO
    )
    assert "설정을 저장했습니다." in response.content.decode()


def test_the_password_reset_mail_is_in_the_requests_language(client, mailoutbox):
    factories.make_user("minsu", email="minsu@example.com")
    client.post(reverse("password_reset"), {"email": "minsu@example.com"}, **KO)
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.subject == "chatsite 비밀번호 재설정"
    assert mail.body.startswith("minsu 님, 안녕하세요.") and "3일 동안 한 번만" in mail.body


def test_the_script_catalog_follows_the_language_of_its_url_and_caches_by_version(client, minsu):
    """/jsi18n/ (Django's JavaScriptCatalog, JSON with ASCII escapes) holds the page scripts'
    strings (djangojs) in the language its URL names, whatever the request's, so one URL is one
    text: cached for a year with the current version, not cached with another."""
    version = script_catalog_version()
    response = client.get(f"/jsi18n/?lang=ko&v={version}", HTTP_ACCEPT_LANGUAGE="en")
    korean = response.content.decode()
    for msgid, msgstr in [("Today", "오늘"), ("connected", "연결됨"), ("Write a message…", "메시지 입력…")]:
        assert f"{json.dumps(msgid)}: {json.dumps(msgstr)}" in korean, msgid
    assert json.dumps("Jump to latest") not in korean  # a template's string, not the scripts'
    assert "max-age=31536000" in response["Cache-Control"] and "immutable" in response["Cache-Control"]
    english = client.get(f"/jsi18n/?lang=en&v={version}", **KO).content.decode()
    assert json.dumps("오늘") not in english and json.dumps("Today") not in english  # English: no entries
    stale = client.get("/jsi18n/?lang=ko&v=old", HTTP_ACCEPT_LANGUAGE="en")
    assert "no-cache" in stale["Cache-Control"] and json.dumps("오늘") in stale.content.decode()
    assert json.dumps("오늘") in client.get("/jsi18n/", **KO).content.decode()  # no lang: the request's


# --- the catalogs ------------------------------------------------------------------------------


def _catalog(mo: Path) -> dict:
    with mo.open("rb") as f:
        return dict(gnu_gettext.GNUTranslations(f)._catalog)


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext (msgfmt) is not installed")
@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_the_committed_mo_file_is_compiled_from_the_po_file(domain, tmp_path):
    po = LOCALE / "ko" / "LC_MESSAGES" / f"{domain}.po"
    fresh = tmp_path / f"{domain}.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(fresh), str(po)], check=True)
    assert _catalog(po.with_suffix(".mo")) == _catalog(fresh), (
        f"{po.with_suffix('.mo')} is stale: run `make messages`"
    )


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="GNU gettext (xgettext) is not installed")
def test_every_string_in_the_code_has_a_korean_translation(tmp_path):
    """makemessages over a copy of the code (templates, Python, the page scripts): every msgid
    it finds is in ko's catalog with a non-empty msgstr that is not fuzzy."""
    copy = tmp_path / "tree"
    copy.mkdir()
    for part in ("manage.py", "chatsite", "rooms", "templates", "static", "locale"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, copy / part)
    env = {"PATH": "/usr/bin:/bin", "DEBUG": "1", "DATABASE_URL": "sqlite:///:memory:"}
    for domain in ("django", "djangojs"):
        subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "python"),
                "manage.py",
                "makemessages",
                "-l",
                "ko",
                "-d",
                domain,
                "--no-location",
                "--no-obsolete",
            ],
            cwd=copy,
            env=env,
            check=True,
            capture_output=True,
        )
        po = copy / "locale" / "ko" / "LC_MESSAGES" / f"{domain}.po"
        untranslated = subprocess.run(
            ["msgattrib", "--untranslated", "--no-obsolete", str(po)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        fuzzy = subprocess.run(
            ["msgattrib", "--only-fuzzy", "--no-obsolete", str(po)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "msgid" not in _without_header(untranslated), f"{domain}: untranslated:\n{untranslated}"
        assert "msgid" not in _without_header(fuzzy), f"{domain}: fuzzy:\n{fuzzy}"


def _without_header(po_text: str) -> str:
    return po_text.split("\n\n", 1)[1] if 'msgid ""' in po_text.split("\n\n", 1)[0] else po_text
