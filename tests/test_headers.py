"""Browser hardening on every page type (chatsite.settings' CONTENT_SECURITY_POLICY and the
security headers, rooms.middleware): the Content-Security-Policy allows no inline script
anywhere, connect-src names the page's own WebSocket origin, and no page carries an inline
script or event handler for it to block. tests/test_browser.py checks the same pages in Chromium.
"""

import json
import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.urls import reverse

from tests import factories

pytestmark = pytest.mark.django_db


def policy(response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as ``{directive: [source, ...]}``."""
    header = response["Content-Security-Policy"]
    parsed = {}
    for part in header.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


class InlineCode(HTMLParser):
    """Collects inline scripts (``<script>`` without ``src`` that a browser would run) and
    ``on…=`` event-handler attributes; ``json_script`` blocks (``type="application/json"``)
    are data and not collected."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.found += [f"<{tag} {name}=…>" for name in attrs if name.lower().startswith("on")]
        if any(
            (v or "").strip().lower().startswith("javascript:")
            for k, v in attrs.items()
            if k in ("href", "src", "action")
        ):
            self.found.append(f"<{tag}> with a javascript: URL")
        if tag == "script" and not attrs.get("src"):
            kind = (attrs.get("type") or "text/javascript").lower()
            if kind not in ("application/json", "application/ld+json"):
                self.found.append(f"<script> inline ({kind})")

    @classmethod
    def of(cls, html: str) -> list[str]:
        parser = cls()
        parser.feed(html)
        return parser.found


@pytest.fixture
def pages(user, room):
    """``{page type: (client, path)}``: every kind of page the site serves."""
    signed_in = Client()
    signed_in.force_login(user)
    superuser = Client()
    superuser.force_login(factories.make_user("root", is_staff=True, is_superuser=True))
    return {
        "admin change form": (superuser, f"/admin/rooms/room/{room.pk}/change/"),
        "admin list": (superuser, "/admin/rooms/message/"),
        "room list": (signed_in, reverse("rooms:list")),
        "room page": (signed_in, reverse("rooms:detail", args=[room.slug])),
        "log in": (Client(), reverse("login")),
        "sign up": (Client(), reverse("signup")),
        "admin log in": (Client(), "/admin/login/"),
        "API docs": (Client(), reverse("api:docs")),
    }


def test_every_page_type_has_a_csp_without_inline_script_and_the_usual_headers(pages):
    for kind, (client, path) in pages.items():
        response = client.get(path)
        assert response.status_code == 200, (kind, response.status_code)
        csp = policy(response)
        assert csp["default-src"] == ["'self'"], kind
        assert csp["script-src"] == ["'self'"], (kind, csp["script-src"])  # no inline, no eval
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"], kind
        assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'self'"], kind
        assert csp["connect-src"] == ["'self'", "ws://testserver"], (kind, csp["connect-src"])
        assert response["X-Frame-Options"] == "DENY", kind
        assert response["X-Content-Type-Options"] == "nosniff", kind
        assert response["Referrer-Policy"] == "same-origin", kind
        assert response["Cross-Origin-Opener-Policy"] == "same-origin", kind
        assert "camera=()" in response["Permissions-Policy"], kind
        assert not response.has_header("Strict-Transport-Security"), kind  # HTTPS off
        # Only the API's HTML pages may use inline styles (Swagger UI is built with them).
        assert ("'unsafe-inline'" in csp["style-src"]) == (kind == "API docs"), (kind, csp["style-src"])


def test_no_page_carries_an_inline_script_or_event_handler(pages):
    for kind, (client, path) in pages.items():
        html = client.get(path).content.decode()
        assert InlineCode.of(html) == [], kind
    # The room page's data is a json_script block, read by static/rooms/room/context.js.
    html = pages["room page"][0].get(pages["room page"][1]).content.decode()
    assert re.search(r'<script id="room-config" type="application/json">', html)
    # its code is ES modules from a file (static/rooms/room/main.js, hashed or not)
    assert re.search(r'<script type="module" src="[^"]*rooms/room/main(\.[0-9a-f]+)?\.js"></script>', html)


def test_drf_browsable_pages_keep_scripts_to_files_and_may_use_inline_styles(user, room, monkeypatch):
    """DRF's browsable API (served with DEBUG) under the same policy: its scripts are static
    files, its inline styles allowed under /api/ only."""
    from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer

    from rooms import api

    monkeypatch.setattr(api.RoomViewSet, "renderer_classes", [JSONRenderer, BrowsableAPIRenderer])
    client = Client()
    client.force_login(user)
    response = client.get(reverse("api:room-list"), HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    csp = policy(response)
    assert csp["script-src"] == ["'self'"] and "'unsafe-inline'" in csp["style-src"]
    assert [f for f in InlineCode.of(response.content.decode()) if "<script>" in f] == []


def test_the_templates_have_no_inline_script_or_event_handler():
    from django.conf import settings

    for path in sorted(settings.BASE_DIR.joinpath("templates").rglob("*.html")):
        assert InlineCode.of(path.read_text()) == [], path


def test_api_docs_load_their_start_up_script_as_a_file_from_this_origin(client):
    page = client.get(reverse("api:docs")).content.decode()
    sources = re.findall(r'<script src="([^"]+)"', page)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources), sources
    script = client.get(sources[-1])
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode()
    for asset in sources[:-1]:  # the Swagger UI bundle itself, from drf-spectacular-sidecar
        assert "drf_spectacular_sidecar" in asset


def test_other_answers_carry_the_headers_too(user, room):
    client = Client()
    client.force_login(user)
    for path, status in (("/no-such-page/", 404), (reverse("api:room-list"), 200), ("/healthz", 200)):
        response = client.get(path)
        assert response.status_code == status, path
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"], path
        assert response["X-Content-Type-Options"] == "nosniff", path


def test_https_pages_name_the_wss_origin_and_send_hsts(settings, user, room):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    client = Client()
    client.force_login(user)
    response = client.get(reverse("rooms:detail", args=[room.slug]), secure=True)
    assert response.status_code == 200
    assert policy(response)["connect-src"] == ["'self'", "wss://testserver"]
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_https_setting_turns_on_hsts_secure_cookies_and_the_redirect():
    from tests.test_settings import KEY, run

    code = (
        "import django, json; from django.conf import settings; django.setup(); "
        "print(json.dumps([settings.SECURE_HSTS_SECONDS, settings.SESSION_COOKIE_SECURE, "
        "settings.SECURE_SSL_REDIRECT, settings.SECURE_REDIRECT_EXEMPT]))"
    )
    on = run(code, SECRET_KEY=KEY, HTTPS="1")
    assert on.returncode == 0, on.stderr
    hsts, secure_cookie, redirect, exempt = json.loads(on.stdout.strip().splitlines()[-1])
    assert hsts >= 31536000 and secure_cookie and redirect
    assert any(re.match(p, "metrics") for p in exempt) and any(re.match(p, "healthz") for p in exempt)
