"""Log-in and sign-up throttles (rooms/login_throttle.py): the pages through Django's test client,
then guesses spread over two real daphne nodes sharing one Redis count, from an address that
forges ``X-Forwarded-For``.

Counters live in Redis for the whole run (this run's own key prefix), so each test uses usernames
and client addresses of its own. Windows are fixed (an hour here): ``clear_of_window_end`` waits
out the last seconds of one so a count never straddles two windows.
"""

import http.client
import os
import re
import time
import urllib.parse
import uuid

import pytest
from django.contrib.auth import SESSION_KEY, get_user_model
from django.test import Client
from django.urls import reverse
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from rooms.login_throttle import parse_window_rate
from tests import factories
from tests.nodes import cluster, database_url_for_tests
from tests.test_settings import KEY, run

WRONG = "not-the-password"


def clear_of_window_end(seconds: int = 3600, margin: float = 20.0) -> None:
    """Sleep past the end of the current fixed window when fewer than ``margin`` seconds are left."""
    left = seconds - time.time() % seconds
    if left < margin:
        time.sleep(left + 0.1)


def fresh_address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def rate_limited(scope: str) -> float:
    return REGISTRY.get_sample_value("chatsite_rate_limited_total", {"scope": scope}) or 0.0


def login(client: Client, username: str, password: str, *, path: str | None = None, address: str):
    path = path or reverse("login")
    return client.post(path, {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.fixture
def rates(settings):
    settings.LOGIN_ADDRESS_RATE = "100/h"
    settings.LOGIN_ACCOUNT_RATE = "3/h"
    settings.SIGNUP_RATE = "2/h"
    clear_of_window_end()
    return settings


def test_rates_take_a_count_a_period_and_an_optional_multiple():
    assert parse_window_rate("20/min") == (20, 60)
    assert parse_window_rate("10/15m") == (10, 900)
    assert parse_window_rate("5/h") == (5, 3600) and parse_window_rate("1/2d") == (1, 172800)
    assert (
        parse_window_rate("0") is None and parse_window_rate("") is None and parse_window_rate("off") is None
    )
    for bad in ("ten/min", "10", "10/0m", "10/fortnight"):
        with pytest.raises(ValueError):
            parse_window_rate(bad)


def test_a_mistyped_rate_stops_start_up():
    proc = run("import django; django.setup()", SECRET_KEY=KEY, LOGIN_ACCOUNT_RATE="ten per minute")
    assert (
        proc.returncode != 0 and "ImproperlyConfigured: LOGIN_ACCOUNT_RATE: 'ten per minute'" in proc.stderr
    )
    assert run("import django; django.setup()", SECRET_KEY=KEY, SIGNUP_RATE="0").returncode == 0


@pytest.mark.django_db
def test_wrong_passwords_over_the_account_limit_refuse_even_the_right_one_without_a_session(rates):
    user = factories.make_user("guessed-1")
    client, address = Client(), fresh_address()
    for spelling in ("guessed-1", " guessed-1", "guessed-1\t"):  # the forms strip whitespace
        response = login(client, spelling, WRONG, address=address)
        assert response.status_code == 200 and response.context["form"].errors
    before = rate_limited("login")
    for password in (WRONG, factories.PASSWORD):
        response = login(client, "guessed-1", password, address=fresh_address())  # any address
        assert response.status_code == 429
        assert 0 < int(response["Retry-After"]) <= 3600
        page = response.content.decode()
        assert "Too many failed log-ins for this account. Try again in" in page
        assert 'value="guessed-1"' in page and "password was not checked" in page
        assert SESSION_KEY not in client.session and "sessionid" not in response.cookies
    assert rate_limited("login") == before + 2
    user.refresh_from_db()
    assert user.last_login is None
    # Another account on the same address is not affected.
    factories.make_user("bystander-1")
    assert login(client, "bystander-1", factories.PASSWORD, address=address).status_code == 302


@pytest.mark.django_db
def test_successful_logins_and_forms_that_checked_no_password_do_not_count_toward_the_account_limit(rates):
    factories.make_user("regular-1")
    client, address = Client(), fresh_address()
    for _ in range(5):
        assert login(client, "regular-1", factories.PASSWORD, address=address).status_code == 302
        client.post(reverse("logout"))
        assert login(client, "regular-1", "", address=address).status_code == 200  # password missing
    for _ in range(3):
        assert login(client, "regular-1", WRONG, address=address).status_code == 200
    assert login(client, "regular-1", WRONG, address=address).status_code == 429


@pytest.mark.django_db
def test_every_attempt_counts_per_client_address_and_ipv6_by_its_64(rates):
    rates.LOGIN_ADDRESS_RATE = "3/h"
    client = Client()
    address = fresh_address()
    for _ in range(3):
        assert login(client, f"nobody-{uuid.uuid4().hex}", WRONG, address=address).status_code == 200
    response = login(client, f"nobody-{uuid.uuid4().hex}", WRONG, address=address)
    assert (
        response.status_code == 429
        and "Too many log-in attempts from your network" in response.content.decode()
    )
    assert response.has_header("Retry-After")
    network = f"2001:db8:{uuid.uuid4().int % 65000:x}:1"
    for host in ("::1", "::2", "::3"):
        assert login(client, "nobody", WRONG, address=f"{network}{host}").status_code == 200
    assert login(client, "nobody", WRONG, address=f"{network}:ffff:1:2:3").status_code == 429


@pytest.mark.django_db
def test_admin_login_shares_the_account_count_and_shows_the_refusal_on_its_own_page(rates):
    factories.make_user("admin-guessed", is_staff=True, is_superuser=True)
    client = Client()
    login(client, "admin-guessed", WRONG, address=fresh_address())
    login(client, "admin-guessed", WRONG, path="/admin/login/", address=fresh_address())
    login(client, "admin-guessed", WRONG, address=fresh_address())
    response = login(
        client,
        "admin-guessed",
        factories.PASSWORD,
        path="/admin/login/?next=/admin/",
        address=fresh_address(),
    )
    assert response.status_code == 429 and response.has_header("Retry-After")
    page = response.content.decode()
    assert 'class="errornote"' in page and "Too many failed log-ins for this account" in page
    assert "Django administration" in page or "site administration" in page.lower()
    assert SESSION_KEY not in client.session


@pytest.mark.django_db
def test_the_token_route_shares_the_account_count(rates):
    factories.make_user("token-guessed")
    for _ in range(3):
        assert login(Client(), "token-guessed", WRONG, address=fresh_address()).status_code == 200
    response = APIClient().post(
        reverse("api:token"),
        {"username": "token-guessed", "password": factories.PASSWORD},
        format="json",
        REMOTE_ADDR=fresh_address(),
    )
    assert response.status_code == 429 and response.has_header("Retry-After")
    assert "Too many failed log-ins for this account" in response.json()["detail"]


@pytest.mark.django_db
def test_sign_ups_over_the_address_limit_are_refused_and_create_nobody(rates):
    client, address = Client(), fresh_address()
    for name in ("signer-1", "signer-2"):
        response = client.post(
            reverse("signup"),
            {"username": name, "password1": factories.PASSWORD, "password2": factories.PASSWORD},
            REMOTE_ADDR=address,
        )
        assert response.status_code == 302
        client.post(reverse("logout"))
    before = rate_limited("signup")
    response = client.post(
        reverse("signup"),
        {"username": "signer-3", "password1": factories.PASSWORD, "password2": factories.PASSWORD},
        REMOTE_ADDR=address,
    )
    assert response.status_code == 429 and response.has_header("Retry-After")
    assert "Too many sign-ups from your network" in response.content.decode()
    assert not get_user_model().objects.filter(username="signer-3").exists()
    assert SESSION_KEY not in client.session
    assert rate_limited("signup") == before + 1


# --- real nodes ------------------------------------------------------------------------------------

NODE_RATES = {"LOGIN_ADDRESS_RATE": "6/h", "LOGIN_ACCOUNT_RATE": "3/h", "SIGNUP_RATE": "2/h"}


class Browser:
    """Cookies and CSRF like a browser, over plain HTTP from ``source`` (a loopback address of
    its own) to whichever node a request names."""

    def __init__(self, source: str):
        self.source = source
        self.cookies: dict[str, str] = {}

    def request(self, node, method: str, path: str, form: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=20, source_address=(self.source, 0))
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode({**form, "csrfmiddlewaretoken": self.cookies.get("csrftoken", "")})
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
            for value in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = value.partition("=")
                self.cookies[name.strip()] = rest.split(";", 1)[0]
            return response.status, response.headers, text
        finally:
            conn.close()

    def login(
        self, node, username: str, password: str, path: str = "/accounts/login/", headers: dict | None = None
    ):
        self.request(node, "GET", path)
        return self.request(node, "POST", path, {"username": username, "password": password}, headers)


def node_rate_limited(node, scope: str) -> float:
    status, _, text = Browser("127.0.0.1").request(node, "GET", "/metrics")
    assert status == 200
    match = re.search(rf'^chatsite_rate_limited_total{{scope="{scope}"}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


@pytest.fixture(scope="module")
def two_nodes(django_db_setup, django_db_blocker):
    """Two nodes on one Redis that trust only 127.0.0.1 as a balancer (tests' clients talk from
    other loopback addresses, so their own X-Forwarded-For is not believed)."""
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    extra = {**NODE_RATES, "TRUSTED_PROXIES": "127.0.0.1", "METRICS_ALLOW": "127.0.0.1"}
    with cluster(
        2,
        redis_url=os.environ["REDIS_URL"],
        database_url=database_url,
        prefix=f"login-throttle-{uuid.uuid4().hex[:8]}",
        extra_env=extra,
    ) as nodes:
        yield nodes
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()


def make_user_with_quick_hash(username: str, **extra):
    """A user whose stored PBKDF2 hash has few iterations (nodes verify with the production
    hashers; this keeps each check cheap)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = factories.make_user(username, **extra)
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(factories.PASSWORD, hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])
    return user


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_password_guesses_spread_over_two_nodes_and_both_log_in_pages_hit_one_account_limit(two_nodes):
    node1, node2 = two_nodes
    make_user_with_quick_hash("target", is_staff=True)
    make_user_with_quick_hash("neighbour")
    clear_of_window_end()
    before = node_rate_limited(node1, "login") + node_rate_limited(node2, "login")
    guesser = Browser("127.0.0.21")
    for node, path in ((node1, "/accounts/login/"), (node2, "/admin/login/"), (node2, "/accounts/login/")):
        status, _, page = guesser.login(node, "target", WRONG, path)
        assert status == 200 and "correct username and password" in page, (node.server_id, path, status)
    owner = Browser("127.0.0.22")  # the account's owner, elsewhere, with the right password
    for node, path in ((node1, "/accounts/login/"), (node2, "/admin/login/?next=/admin/")):
        status, headers, page = owner.login(node, "target", factories.PASSWORD, path)
        assert status == 429, (node.server_id, path, status)
        assert 0 < int(headers["Retry-After"]) <= 3600
        assert "Too many failed log-ins for this account" in page
        assert "sessionid" not in owner.cookies
    assert node_rate_limited(node1, "login") + node_rate_limited(node2, "login") == before + 2
    # Someone else from the guesser's address logs in: the lock is the account's.
    status, headers, _ = Browser("127.0.0.21").login(node2, "neighbour", factories.PASSWORD)
    assert status == 302 and headers["Location"] == "/"


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_a_forged_x_forwarded_for_bypasses_neither_the_address_nor_the_sign_up_limit(two_nodes):
    node1, node2 = two_nodes
    clear_of_window_end()
    forger = Browser("127.0.0.31")
    for i in range(6):  # LOGIN_ADDRESS_RATE: 6 attempts per address, a new forged address each time
        status, _, _ = forger.login(
            two_nodes[i % 2], f"nobody-{i}", WRONG, headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}
        )
        assert status == 200, i
    status, headers, page = forger.login(
        node1, "nobody-7", WRONG, headers={"X-Forwarded-For": "198.51.100.99"}
    )
    assert status == 429 and "Too many log-in attempts from your network" in page and headers["Retry-After"]
    # Another address is not refused: the count was the forger's real one.
    assert Browser("127.0.0.32").login(node2, "nobody-8", WRONG)[0] == 200

    signer = Browser("127.0.0.33")
    for i, node in enumerate((node1, node2, node1)):
        signer.cookies.pop("sessionid", None)
        signer.request(node, "GET", "/accounts/signup/")
        status, _, page = signer.request(
            node,
            "POST",
            "/accounts/signup/",
            {
                "username": f"signer-node-{i}",
                "password1": factories.PASSWORD,
                "password2": factories.PASSWORD,
            },
            headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
        )
        assert status == (302 if i < 2 else 429), (i, status)
    assert "Too many sign-ups from your network" in page
    assert list(
        get_user_model()
        .objects.filter(username__startswith="signer-node-")
        .order_by("username")
        .values_list("username", flat=True)
    ) == ["signer-node-0", "signer-node-1"]


def test_wrong_old_passwords_on_the_password_change_page_count_as_failed_log_ins(client, rates, db):
    """Guessing the old password on ``/accounts/password/`` (from a session left open, say) is a
    password guess: counted per account with the log-ins; over the limit, 429, nothing checked."""
    user = factories.make_user("victim")
    client.force_login(user)
    new = "a new Passphrase 42!"
    for _ in range(3):
        response = client.post(
            "/accounts/password/", {"old_password": WRONG, "new_password1": new, "new_password2": new}
        )
        assert response.status_code == 200 and "old_password" in response.context["form"].errors
    before = rate_limited("login")
    response = client.post(
        "/accounts/password/",
        {"old_password": factories.PASSWORD, "new_password1": new, "new_password2": new},
    )
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert "Too many wrong passwords" in response.content.decode()
    user.refresh_from_db()
    assert user.check_password(factories.PASSWORD)  # unchanged: the right one was not even checked
    assert rate_limited("login") == before + 1
    # the log-in page shares the count
    assert login(Client(), "victim", factories.PASSWORD, address=fresh_address()).status_code == 429
