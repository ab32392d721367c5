"""Password guessing and sign-up floods, throttled for every node at once: the log-in pages
(``/accounts/login/``, ``/admin/login/``), the token route's accounts (``POST /api/auth/token/``,
which DRF's ``login`` throttle also counts per address) and the sign-up page.

Counted in the Django cache (Redis with ``REDIS_URL``, so one count for all nodes; per process
without it) in fixed windows (``rooms.ratelimit.Window``). Rates are ``"<n>/<period>"``, the period
``s``, ``min``, ``h`` or ``d`` with an optional multiple (``"10/15m"``: 10 per 15 minutes); ``"0"``
turns a limit off. From the environment (README, Configuration):

- ``LOGIN_ADDRESS_RATE`` (default ``20/min``): log-in attempts (every POST to a log-in page) per
  client address.
- ``LOGIN_ACCOUNT_RATE`` (default ``10/15m``): failed log-ins per account (the username tried,
  stripped and NFKC-normalised as the log-in forms read it), on the pages and the token route
  together, and wrong old passwords on the password-change page (``views.PasswordChangeView``). Once an account is over it, its log-ins are refused from every address until the
  window ends, without checking the password (a guess then learns nothing). Only wrong
  passwords count, so others' failures lock the owner out for at most one window, never for
  good. Unknown usernames count the same way, so a refusal says nothing about who exists.
- ``SIGNUP_RATE`` (default ``20/h``): sign-up attempts (every POST) per client address.

The client address is ``REMOTE_ADDR``: behind a balancer listed in ``TRUSTED_PROXIES`` the address
it forwarded (``chatsite.proxy``), otherwise the peer; a client's own ``X-Forwarded-For`` is never
believed. IPv6 addresses count by their /64 network (one host usually holds a whole /64).

A refused attempt answers 429 with ``Retry-After`` (whole seconds) and the page's own form showing
why and for how long; it checks no password, starts no session and creates nothing, and is
counted in ``chatsite_rate_limited_total{scope="login"|"signup"}``. The token route answers its
usual throttled 429 JSON. When the cache cannot be reached, attempts are allowed and the error is
logged, as for the other throttles: a Redis outage must not lock everyone out.
"""

import functools
import hashlib
import logging
import math
import unicodedata

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext, ngettext

from chatsite.proxy import address_key

from .ratelimit import Window, parse_rate

logger = logging.getLogger(__name__)


def parse_window_rate(rate: str) -> tuple[int, int] | None:
    """``"20/min"`` → ``(20, 60)``; ``"10/15m"`` → ``(10, 900)``; ``""``, ``"0"`` or ``"off"`` →
    None (no limit). ``ValueError`` for anything else (settings check it at start-up). The
    rates of ``rooms.ratelimit.parse_rate``."""
    return parse_rate(rate)


def client_key(request) -> str:
    """The client address throttles count by: ``REMOTE_ADDR``, an IPv6 one as its /64."""
    return address_key(request.META.get("REMOTE_ADDR") or "") or "unknown"


def account_key(username: str) -> str:
    """The cache key part for an account: a digest of the username as the log-in forms read it
    (surrounding whitespace stripped, NFKC-normalised), so `` alice`` counts as ``alice``; user
    text never goes into a key as it is."""
    normal = unicodedata.normalize("NFKC", username.strip())
    return hashlib.sha256(normal.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _count(key: str, rate: str) -> tuple[float | None, Window | None]:
    """Count one event for ``key``: ``(None, window)`` within ``rate``, ``(seconds until the
    window ends, window)`` over it, ``(None, None)`` when off or the cache failed (logged)."""
    parsed = parse_window_rate(rate)
    if parsed is None:
        return None, None
    window = Window(key, *parsed)
    try:
        count = 1 if cache.add(window.key, 1, timeout=window.seconds + 1) else cache.incr(window.key)
    except Exception:
        logger.warning("throttle cache unavailable; %s allowed", key.split(":")[0], exc_info=True)
        return None, None
    return window.retry_after(count), window


def refused(scope: str) -> None:
    """Count one refusal in ``chatsite_rate_limited_total{scope}``."""
    from . import metrics

    metrics.RATE_LIMITED.labels(scope=scope).inc()


def address_hit(scope: str, request, rate: str) -> float | None:
    """Count one ``scope`` attempt (``login``, ``signup``) from ``request``'s client address;
    None when within ``rate``, else seconds until the window ends."""
    return _count(f"{scope}:addr:{client_key(request)}", rate)[0]


class AccountAttempt:
    """One log-in attempt on an account, counted before its password is checked, so parallel
    guesses cannot overtake the limit. ``release()`` takes it back when it turned out not to be a
    wrong password (a success, or a form that checked nothing)."""

    def __init__(self, username: str):
        self.window: Window | None = None
        self.retry_after: float | None = None
        if username.strip():
            self.retry_after, self.window = _count(
                f"login:acct:{account_key(username)}", settings.LOGIN_ACCOUNT_RATE
            )

    def release(self) -> None:
        if self.window is None:
            return
        window, self.window = self.window, None
        try:
            cache.decr(window.key)
        except Exception:  # the window ended meanwhile (key gone) or the cache failed: nothing to undo
            pass


def wait_text(seconds: float) -> str:
    """``"in 42 seconds"``, ``"in 14 minutes"``: the wait a refusal names (rounded up)."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 120:
        return ngettext("in %(count)s second", "in %(count)s seconds", seconds) % {"count": seconds}
    minutes = math.ceil(seconds / 60)
    return ngettext("in %(count)s minute", "in %(count)s minutes", minutes) % {"count": minutes}


def refuse_with_form(response, form, message: str, retry_after: float):
    """``response`` (the page rendering ``form``) as a 429 whose form shows ``message`` as its
    error; returns it."""
    from django.forms.utils import ErrorDict

    form._errors = ErrorDict({"__all__": form.error_class([message], error_class="nonfield")})
    response.status_code = 429
    response["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def _wrong_password(response) -> bool:
    """Whether a log-in view's answer to a POST is a form whose username and password were both
    given and matched no account that may log in here."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is None or not form.is_bound:
        return False
    return bool(form.data.get("username") and form.data.get("password")) and form.get_user() is None


def throttled_login(view):
    """A log-in view (Django's ``LoginView``, the admin's ``login``) with the throttles above.
    GET passes through. A refused POST is answered with the view's own page as for a GET, the
    username kept, the reason as the form's error, status 429 and ``Retry-After``."""

    @functools.wraps(view)
    def login_view(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username", "")
        retry_after = address_hit("login", request, settings.LOGIN_ADDRESS_RATE)
        if retry_after is not None:
            message = gettext("Too many log-in attempts from your network. Try again %(wait)s.") % {
                "wait": wait_text(retry_after)
            }
            return _refused_login(view, request, args, kwargs, username, message, retry_after)
        attempt = AccountAttempt(username)
        if attempt.retry_after is not None:
            message = gettext(
                "Too many failed log-ins for this account. Try again %(wait)s (the password was not checked)."
            ) % {"wait": wait_text(attempt.retry_after)}
            return _refused_login(view, request, args, kwargs, username, message, attempt.retry_after)
        response = view(request, *args, **kwargs)
        if not _wrong_password(response):
            attempt.release()
        return response

    return login_view


def _refused_login(view, request, args, kwargs, username: str, message: str, retry_after: float):
    from django.http import HttpResponse

    refused("login")
    request.method = "GET"  # the page as for a first visit: no form data, no password checked
    try:
        response = view(request, *args, **kwargs)
    finally:
        request.method = "POST"
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is None:  # e.g. the admin sends a signed-in staff member on to its index
        response = HttpResponse(message, status=429, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return response
    if "username" in form.fields:
        form.fields["username"].initial = username
    return refuse_with_form(response, form, message, retry_after)
