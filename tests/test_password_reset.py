"""Password reset by a mailed link (rooms.views.PasswordResetView, Django's auth views): the link
sets a new password once and ends the user's other sessions; an unknown address gets the same
answer and no mail; requests are throttled per client address (PASSWORD_RESET_RATE). In process
with Django's test mail outbox; tests/test_browser_accounts.py does it end to end on a real node
with the console mail backend (EMAIL_URL's default)."""

import re
import uuid

import pytest
from django.core import mail
from django.test import Client

from tests import factories

pytestmark = pytest.mark.django_db

LINK = re.compile(r"https?://[^/\s]+(/accounts/password/reset/[^/\s]+/[^/\s]+/)")


def address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def ask(email: str, remote: str | None = None):
    return Client().post("/accounts/password/reset/", {"email": email}, REMOTE_ADDR=remote or address())


def test_the_mailed_link_sets_a_new_password_once_and_ends_other_sessions(user):
    user.email = "alice@example.org"
    user.save()
    elsewhere = Client()
    elsewhere.force_login(user)
    assert elsewhere.get("/settings/").status_code == 200
    token = factories.token_for(user)

    response = ask("ALICE@example.org")  # Django matches the address without regard to case
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/sent/"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.org"]
    path = LINK.search(mail.outbox[0].body).group(1)

    browser = Client()
    form = browser.get(path, follow=True)  # Django swaps the token for a session and redirects
    assert form.status_code == 200 and b"Choose a new password" in form.content
    done = browser.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a fresh Passw0rd!", "new_password2": "a fresh Passw0rd!"},
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/password/reset/complete/"

    user.refresh_from_db()
    assert user.check_password("a fresh Passw0rd!")
    # the old session is signed out (its session auth hash no longer matches)
    assert elsewhere.get("/settings/").status_code == 302
    # the API token made with the old password is revoked
    from rest_framework.authtoken.models import Token

    assert not Token.objects.filter(key=token).exists()
    # the link works once
    again = Client().get(path, follow=True)
    assert b"This link does not work" in again.content


def test_an_unknown_address_gets_the_same_answer_and_no_mail(user):
    response = ask("nobody@example.org")
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/sent/"
    assert mail.outbox == []


def test_reset_requests_are_throttled_per_client_address(user, settings):
    settings.PASSWORD_RESET_RATE = "2/h"
    user.email = "alice@example.org"
    user.save()
    remote = address()
    assert ask("alice@example.org", remote).status_code == 302
    assert ask("alice@example.org", remote).status_code == 302
    refused = ask("alice@example.org", remote)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert b"Too many reset requests" in refused.content
    assert len(mail.outbox) == 2  # the refused request sent nothing
    assert ask("alice@example.org").status_code == 302  # another address is not held back
