"""Pages (server-rendered), the health endpoint and ``/metrics``."""

import hmac
import logging
import math

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth import get_user_model, login
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse, reverse_lazy
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.utils.translation import gettext as _
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import CreateView, DetailView, FormView, ListView, TemplateView
from django.views.i18n import JavaScriptCatalog
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from psycopg_pool import PoolTimeout

from chatsite import dbconn
from chatsite.proxy import parse_address

from . import dms, i18n, login_throttle, metrics, profiles, search, selectors, services  # noqa: F401 (metrics: registered before /metrics is read)
from .context_processors import show_node_names
from .forms import RoomCreateForm, SignupForm, UserSettingsForm
from .models import Membership, Room

logger = logging.getLogger(__name__)

HISTORY_ON_PAGE = 50  # messages rendered into the room page before live ones arrive


def _direct_messages(user) -> list[dict]:
    """The user's direct messages for the room list page: ``[{"room", "with"}]`` by the other
    person's name."""
    partners = dms.dm_partners(user)
    rooms = Room.objects.filter(pk__in=partners).order_by("-last_seq")
    found = [{"room": room, "with": partners[room.pk]} for room in rooms]
    return sorted(found, key=lambda d: d["with"]["username"].lower())


class RoomListView(LoginRequiredMixin, ListView):
    """``GET /``: every group room, the user's direct messages (by the other person's name),
    the create form and a "message someone" form."""

    template_name = "rooms/room_list.html"
    context_object_name = "rooms"

    def get_queryset(self):
        return selectors.rooms_visible_to(self.request.user).filter(kind=Room.Kind.ROOM)

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        ctx.setdefault("form", RoomCreateForm())
        ctx["direct_messages"] = _direct_messages(self.request.user)
        return ctx


class RoomCreateView(LoginRequiredMixin, CreateView):
    """``POST /rooms/new/``: create a room through ``services.room_create``, then open it."""

    form_class = RoomCreateForm
    template_name = "rooms/room_list.html"

    def get(self, request, *args, **kwargs):
        return redirect("rooms:list")

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        ctx["rooms"] = selectors.rooms_visible_to(self.request.user).filter(kind=Room.Kind.ROOM)
        ctx["direct_messages"] = _direct_messages(self.request.user)
        return ctx

    def form_valid(self, form):
        try:
            room = services.room_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                description=form.cleaned_data["description"],
                is_private=form.cleaned_data["is_private"],
                created_by=self.request.user,
            )
        except ValidationError as exc:  # e.g. the slug was taken a moment after the form checked
            form.add_error(None, exc)
            return self.form_invalid(form)
        return redirect("rooms:detail", slug=room.slug)


class RoomDetailView(LoginRequiredMixin, DetailView):
    """``GET /rooms/<slug>/``: the last 50 messages from the database, then live ones over
    ``/ws/rooms/<slug>/`` (``static/rooms/room/main.js``); older ones as the reader scrolls up.

    ``room_config`` (json_script ``#room-config``): ``slug``, ``name`` (the room's name; a DM's is
    the other person's display name, else username), ``ws_path``, ``user`` {id,
    username}, ``history`` (message shapes, oldest first), ``role``, ``can_moderate``,
    ``archived``, ``kind``, ``dm_with``, ``show_node_names``, ``is_private``, ``site_moderator``
    (bool), ``muted_until`` (ISO 8601 while the caller is muted, else null), ``urls`` {``room``,
    ``members``: the REST routes; ``rooms_page``}, and for a member with a read marker
    ``last_read_seq`` (int)."""

    template_name = "rooms/room_detail.html"
    context_object_name = "room"

    def get_object(self, queryset=None):
        room = selectors.room_visible(slug=self.kwargs["slug"], user=self.request.user)
        if room is None:
            raise Http404("No such room.")
        self.dm_with = dms.dm_with(room, self.request.user)
        if self.dm_with is not None:
            # A DM is shown by the other person's name, display name if set, else username (never
            # saved); its slug stays in the URL only.
            display_name = (
                get_user_model()
                .objects.filter(pk=self.dm_with["id"])
                .values_list("first_name", flat=True)
                .first()
            )
            room.name = display_name or self.dm_with["username"]
        return room

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        ctx["history"] = selectors.room_history_data(room=self.object, limit=HISTORY_ON_PAGE)
        membership = Membership.objects.filter(room=self.object, user_id=self.request.user.pk).first()
        # The caller's place in the room: role (None until a public room's visitor joins; they
        # join when the socket connects), and whether they may delete others' messages.
        ctx["my_role"] = membership.role if membership is not None and not membership.is_banned else None
        ctx["can_moderate"] = bool(membership is not None and membership.can_moderate)
        ctx["room_config"] = {
            "slug": self.object.slug,
            "ws_path": f"/ws/rooms/{self.object.slug}/",
            "user": {
                "id": self.request.user.pk,
                "username": self.request.user.get_username(),
                "display_name": self.request.user.first_name,
            },
            "name": self.object.name,  # what the page's texts call the room (the slug is the URL's)
            "history": ctx["history"],
            "role": ctx["my_role"],
            "can_moderate": ctx["can_moderate"],
            "archived": self.object.is_archived,
            "kind": self.object.kind,
            "dm_with": self.dm_with,
            "show_node_names": show_node_names(self.request),  # staff or SHOW_NODE_NAMES=1
            # The members panel (static/rooms/room/members.js) acts through the REST routes.
            "is_private": self.object.is_private,
            "site_moderator": services.is_site_moderator(self.request.user),
            "muted_until": (
                membership.muted_until.isoformat()
                if membership is not None and membership.muted_now()
                else None
            ),
            "urls": {
                "room": reverse("api:room-detail", args=[self.object.slug]),
                "members": reverse("api:member-list", args=[self.object.slug]),
                "rooms_page": reverse("rooms:list"),
            },
        }
        # Where the member left off (rooms.reads): the page opens at the first unread message
        # after it, with a "New messages" divider. Absent for a visitor who has not joined: the
        # page opens at the latest message (0 would load the room back to its first message).
        if ctx["my_role"] is not None:
            ctx["room_config"]["last_read_seq"] = membership.last_read_seq
        # ?seq=N (a search result's link, /rooms/<slug>/?seq=N#message-N): the page loads history
        # back to that message and scrolls to it, marked, instead of the first unread one.
        land = self.request.GET.get("seq", "")
        if land.isascii() and land.isdigit() and 1 <= int(land) <= self.object.last_seq:
            ctx["room_config"]["land_seq"] = int(land)
        return ctx


class SearchView(LoginRequiredMixin, TemplateView):
    """``GET /search/?q=&room=&before=&limit=``: the search box's results page (``rooms.search``,
    the same search as ``GET /api/search/``), server-rendered: each result names its room and
    author, shows its body escaped with the matches in ``<mark>``, and links to
    ``/rooms/<slug>/?seq=N#message-N`` (the room page opens there with the history around it).
    "Older results" follows the cursor. No ``q``: the empty form. A refused query (too short,
    too long) answers 400 with the reason on the page; ``room`` naming a room the user may not
    read answers 404. Throttled per user like the API (``THROTTLE_SEARCH_RATE``, a window of its
    own): over it, 429 with ``Retry-After`` and the wait on the page, nothing searched."""

    template_name = "rooms/search.html"

    def get(self, request, *args, **kwargs):
        from . import ratelimit

        retry_after = None
        if "q" in request.GET:
            rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["search"]
            retry_after = ratelimit.hit(f"search-page:{request.user.pk}", rate)
        if retry_after is not None:
            ctx = super().get_context_data(**kwargs)
            ctx.update(
                search_q=request.GET.get("q", ""),
                room=None,
                error=_("Too many searches. Try again %(wait)s.")
                % {"wait": login_throttle.wait_text(retry_after)},
            )
            response = self.render_to_response(ctx, status=429)
            response["Retry-After"] = str(max(1, math.ceil(retry_after)))
            return response
        ctx = self.get_context_data(**kwargs)
        return self.render_to_response(ctx, status=400 if ctx.get("error") else 200)

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        params = self.request.GET
        q = params.get("q", "")
        ctx["search_q"] = q
        ctx["room"] = None
        if params.get("room"):
            try:
                ctx["room"] = search.readable_room(user=self.request.user, slug=params["room"])
            except services.NotFound:
                raise Http404("No such room.") from None
            # Named as people read it: a room by its name, a DM by the other person (never by
            # its slug, nor a private room by its unguessable suffix).
            partner = dms.dm_with(ctx["room"], self.request.user)
            ctx["room_name"] = f"@{partner['username']}" if partner else ctx["room"].name
        if "q" not in params:
            return ctx
        before = params.get("before", "")
        before = (
            int(before) if before.isascii() and before.isdigit() and 0 < int(before) < search.ID_MAX else None
        )
        limit = params.get("limit", "")
        limit = int(limit) if limit.isascii() and limit.isdigit() and limit != "0" else search.DEFAULT_LIMIT
        try:
            page = search.search_messages(
                user=self.request.user, q=q, room=ctx["room"], before=before, limit=limit
            )
        except search.QueryError as exc:
            ctx["error"] = exc.localized_detail()
            return ctx
        ctx["results"] = [
            {"message": m, "pieces": search.marked(m.body, m.highlights), "dm_with": None}
            for m in page.results
        ]
        partners = dms.dm_partners(self.request.user) if any(m.room.is_dm for m in page.results) else {}
        for result in ctx["results"]:
            result["dm_with"] = partners.get(result["message"].room_id)
        ctx["searched"] = True
        if page.next_before is not None:
            more = {"q": q, "before": page.next_before}
            if ctx["room"] is not None:
                more["room"] = ctx["room"].slug
            if limit != search.DEFAULT_LIMIT:
                more["limit"] = limit
            from urllib.parse import urlencode

            ctx["older_query"] = urlencode(more)
        return ctx


def _active_user_or_404(username: str):
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise Http404("No such user.")
    return user


class ProfileView(LoginRequiredMixin, TemplateView):
    """``GET /u/<username>/``: a user's page: the group rooms you share, and a "Send a message"
    button (``POST /u/<username>/message/``) that opens your direct message with them. 404 for
    an unknown or inactive user."""

    template_name = "rooms/profile.html"

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        person = _active_user_or_404(self.kwargs["username"])
        me = self.request.user
        ctx["person"] = person
        ctx["is_me"] = person.pk == me.pk
        ctx["shared_rooms"] = (
            []
            if ctx["is_me"]
            else list(
                Room.objects.filter(
                    kind=Room.Kind.ROOM, memberships__user_id=me.pk, memberships__banned_at__isnull=True
                )
                .filter(
                    pk__in=Membership.objects.filter(user_id=person.pk, banned_at__isnull=True).values(
                        "room_id"
                    )
                )
                .order_by("name")
            )
        )
        ctx["dm"] = None if ctx["is_me"] else Room.objects.filter(dm_key=dms.dm_key(me.pk, person.pk)).first()
        # No button where opening would answer dms_off (the POST checks again regardless).
        ctx["dms_closed"] = (
            not ctx["is_me"]
            and ctx["dm"] is None
            and dms.dms_from(person.pk) == dms.DmsFrom.SHARED_ROOMS
            and not dms.share_a_room(me.pk, person.pk)
        )
        return ctx


class DmOpenView(LoginRequiredMixin, View):
    """``POST /u/<username>/message/`` (the profile's button) or ``POST /dms/new/`` with a
    ``username`` field (the room list's form): open the direct message (``dms.dm_open``) and go
    to its room page. A refusal (yourself, unknown user, ``dms_off``) goes back with the reason
    shown, and creates nothing. GET goes to the profile (or the room list)."""

    def get(self, request, username=None):
        return redirect("rooms:profile", username=username) if username else redirect("rooms:list")

    def post(self, request, username=None):
        name = username if username is not None else request.POST.get("username", "").strip()
        try:
            result = dms.dm_open(user=request.user, username=name)
        except services.ServiceError as exc:
            flash.error(request, exc.localized_detail())
            if username is not None and not isinstance(exc, dms.UserNotFound):
                return redirect("rooms:profile", username=username)
            return redirect("rooms:list")
        return redirect("rooms:detail", slug=result.room.slug)


class SettingsView(LoginRequiredMixin, FormView):
    """``/settings/``: the user's profile (display name, e-mail address: ``rooms.profiles``) and
    settings (``UserSettings``: who may start a direct message with them)."""

    template_name = "rooms/settings.html"
    form_class = UserSettingsForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "user": self.request.user}

    def get_initial(self):
        row = dms.user_settings_get(self.request.user)
        user = self.request.user
        return {
            "only_shared_rooms": row.dms_from == dms.DmsFrom.SHARED_ROOMS,
            "display_name": user.first_name,
            "email": user.email,
        }

    def form_valid(self, form):
        data = form.cleaned_data
        with transaction.atomic():
            profiles.profile_update(
                user=self.request.user, display_name=data["display_name"], email=data["email"]
            )
            choice = dms.DmsFrom.SHARED_ROOMS if data["only_shared_rooms"] else dms.DmsFrom.ANYONE
            dms.user_settings_update(user=self.request.user, dms_from=choice)
        flash.success(self.request, _("Settings saved."))
        return redirect("rooms:settings")


class SignupView(FormView):
    """``/accounts/signup/``: create an account and sign in. Every POST counts against
    ``SIGNUP_RATE`` per client address (``rooms.login_throttle``); over it, 429 with
    ``Retry-After`` and the form showing the wait, and no account is made."""

    template_name = "registration/signup.html"
    form_class = SignupForm
    success_url = reverse_lazy("rooms:list")

    def post(self, request, *args, **kwargs):
        retry_after = login_throttle.address_hit("signup", request, settings.SIGNUP_RATE)
        if retry_after is None:
            return super().post(request, *args, **kwargs)
        login_throttle.refused("signup")
        form = self.get_form_class()(initial={"username": request.POST.get("username", "")})
        message = _("Too many sign-ups from your network. Try again %(wait)s.") % {
            "wait": login_throttle.wait_text(retry_after)
        }
        return login_throttle.refuse_with_form(
            self.render_to_response(self.get_context_data(form=form)), form, message, retry_after
        )

    def form_valid(self, form):
        try:
            with transaction.atomic():
                user = form.save()
        except IntegrityError:  # the same username taken a moment after the form checked
            form.add_error("username", _("A user with that username already exists."))
            return self.form_invalid(form)
        login(self.request, user, backend="django.contrib.auth.backends.ModelBackend")
        return super().form_valid(form)


class PasswordResetView(auth_views.PasswordResetView):
    """``/accounts/password/reset/``: Django's reset by mail (a link valid for
    ``PASSWORD_RESET_TIMEOUT``, 3 days, and only until the password changes). The answer is the
    same whether or not the address belongs to an account (no enumeration); only active users
    with a usable password get a mail. Every POST counts against ``PASSWORD_RESET_RATE`` per
    client address (``rooms.login_throttle``): over it, 429 with ``Retry-After``, no mail."""

    def post(self, request, *args, **kwargs):
        retry_after = login_throttle.address_hit("password_reset", request, settings.PASSWORD_RESET_RATE)
        if retry_after is None:
            return super().post(request, *args, **kwargs)
        login_throttle.refused("password_reset")
        form = self.get_form_class()(initial={"email": request.POST.get("email", "")})
        message = _("Too many reset requests from your network. Try again %(wait)s.") % {
            "wait": login_throttle.wait_text(retry_after)
        }
        return login_throttle.refuse_with_form(
            self.render_to_response(self.get_context_data(form=form)), form, message, retry_after
        )


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """``/accounts/password/reset/<uidb64>/<token>/``: the new password, typed twice (Django's
    validators apply). Every session of the user ends with the old password (Django's session
    auth hash), and their sockets close with 4401 on every node at once
    (``services.user_sessions_changed``, as for a password change); their API token is revoked
    too (``services.token_revoke``: token sockets close with 4401), since whoever knew the old
    password may have made it."""

    def form_valid(self, form):
        response = super().form_valid(form)
        services.user_sessions_changed(user=form.user)
        # The password may have been known to someone else: their API token ends too.
        services.token_revoke(user=form.user)
        return response


def _check_database() -> str:
    """``"ok"`` when ``SELECT 1`` answers, else ``"unavailable"`` (the reason goes to the log).
    A pooled connection broken by an outage that has since ended fails once and is discarded;
    the check then tries once more on a fresh connection (not after a pool timeout, which
    already waited ``DATABASE_POOL_TIMEOUT`` seconds, nor after a statement given up on a silent
    connection, which waited ``DATABASE_STATEMENT_TIMEOUT`` + 0.25 s)."""
    for _attempt in (1, 2):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            return "ok"
        except Exception as exc:  # any failure means "not ok"
            failure = exc
            if (
                isinstance(exc, PoolTimeout)
                or isinstance(exc.__cause__, PoolTimeout)
                or dbconn.timed_out(exc)
            ):
                break
            connection.close()  # a broken connection leaves the pool
    logger.warning("health: database check failed: %s", failure)
    return "unavailable"


_redis_clients: tuple | None = None  # (the settings.REDIS they were made for, [(label, client)])


def _check_redis() -> tuple[str, str | None]:
    """``("ok", None)``, or ``("unavailable", short reason)`` when a Redis the channel layer uses
    (each shard, or the Sentinel master found through the sentinels, over TLS when configured)
    does not answer PING within 1 s."""
    global _redis_clients
    from chatsite import redis_config

    config = settings.REDIS
    clients = []
    try:
        if _redis_clients is None or _redis_clients[0] is not config:
            _redis_clients = (config, config.sync_clients(timeout=1.0))
        clients = _redis_clients[1]
        failures = redis_config.check(config, clients)
    except Exception as exc:  # e.g. building the clients failed
        failures = [("redis", exc)]
    if not failures:
        return "ok", None
    reasons = []
    for label, exc in failures:
        reason = redis_config.describe_error(exc, config)[0]
        logger.warning("health: redis check failed: %s: %s (%s)", label, reason, str(exc)[:300])
        reasons.append(f"{label}: {reason}" if len(clients) > 1 else reason)
    return "unavailable", "; ".join(reasons)


@never_cache
def healthz(request):
    """``GET /healthz``, for the load balancer's health check; no sign-in needed.

    200 ``{"status": "ok", "server_id": str, "database": "ok", "channel_layer": "redis" |
    "in-memory", "redis": "ok"}`` (``redis`` only with ``REDIS_URL``). 503 with
    ``"status": "unavailable"``, the failing part set to ``"unavailable"`` and ``"failing"``
    listing them when the database or Redis cannot be reached (1 s Redis timeouts; the database
    check waits at most the pool timeout), and for Redis ``"redis_error"``: a short reason such
    as ``"certificate verify failed: …"``, ``"connection refused"`` or ``"unknown master name"``.
    """
    body = {
        "status": "ok",
        "server_id": settings.SERVER_ID,
        "database": _check_database(),
        "channel_layer": "redis" if settings.REDIS_URL else "in-memory",
    }
    if settings.REDIS_URL:
        body["redis"], redis_error = _check_redis()
        if redis_error:
            body["redis_error"] = redis_error
    failing = [part for part in ("database", "redis") if body.get(part, "ok") != "ok"]
    if failing:
        body["status"] = "unavailable"
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)


def metrics_allowed(request) -> bool:
    """Whether ``request`` may read ``/metrics``: it sends ``Authorization: Bearer <token>``
    equal to ``METRICS_TOKEN`` (compared in constant time), or its client address is in
    ``METRICS_ALLOW``. The client address is ``REMOTE_ADDR``: behind a balancer listed in
    ``TRUSTED_PROXIES`` that is the address it forwarded (``chatsite.proxy``), otherwise the peer."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _space, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    if settings.METRICS_ALLOW:
        address = parse_address(request.META.get("REMOTE_ADDR") or "")
        if address is not None and any(address in network for network in settings.METRICS_ALLOW):
            return True
    return False


@csrf_exempt  # the access check below decides, so any method gets 404 when refused
@never_cache
def metrics_view(request):
    """``GET /metrics``: this node's Prometheus metrics (``rooms.metrics``) in the text
    exposition format (OpenMetrics when the ``Accept`` header asks for it, as Prometheus does).
    404, exactly like a path that does not exist, unless ``metrics_allowed(request)``; 405 for
    another method then."""
    if not metrics_allowed(request):
        raise Http404("No such page.")
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(REGISTRY), content_type=content_type)


class LogoutView(auth_views.LogoutView):
    """``POST /accounts/logout/``: Django's log-out (the session is deleted), then the sockets
    opened with that session close with 4401 on every node at once
    (``services.user_sessions_changed``); the user's other sessions keep theirs."""

    def post(self, request, *args, **kwargs):
        user = request.user if request.user.is_authenticated else None
        response = super().post(request, *args, **kwargs)
        if user is not None:
            services.user_sessions_changed(user=user)
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    """``/accounts/password/``: Django's password change (old password, new one twice, the
    password validators). The session making the change stays signed in
    (``update_session_auth_hash``, which gives it a new key: its sockets close with 4001 and
    reconnect); every other session of the user is signed out, and their sockets close
    with 4401 on every node at once (``services.user_sessions_changed``)."""

    success_url = reverse_lazy("password_change_done")

    def post(self, request, *args, **kwargs):
        """A wrong old password is a password guess: counted with the account's failed log-ins
        (``LOGIN_ACCOUNT_RATE``, ``rooms.login_throttle``); over it, 429 with ``Retry-After`` and
        the form saying why, no password checked, nothing changed."""
        attempt = login_throttle.AccountAttempt(request.user.get_username())
        if attempt.retry_after is not None:
            login_throttle.refused("login")
            form = self.get_form_class()(request.user)
            message = _(
                "Too many wrong passwords for this account. Try again %(wait)s (the password was not checked)."
            ) % {"wait": login_throttle.wait_text(attempt.retry_after)}
            return login_throttle.refuse_with_form(
                self.render_to_response(self.get_context_data(form=form)), form, message, attempt.retry_after
            )
        response = super().post(request, *args, **kwargs)
        form = (getattr(response, "context_data", None) or {}).get("form")
        if form is None or not form.has_error("old_password", "password_incorrect"):
            attempt.release()  # changed, or refused for another reason: not a guess
        return response

    def form_valid(self, form):
        renewed = self.request.session.session_key
        response = super().form_valid(form)
        services.user_sessions_changed(user=form.user, renewed_session_key=renewed)
        return response


def favicon(request):
    """``GET /favicon.ico``: a temporary redirect (302) to the site's icon, ``static/favicon.svg``
    (hashed name under the manifest storage), for clients that ask the conventional path instead
    of reading the pages' ``<link rel="icon">``."""
    from django.templatetags.static import static

    response = redirect(static("favicon.svg"))
    patch_cache_control(response, max_age=3600, public=True)  # an hour: the hashed name may change per deploy
    return response


def page_not_found(request, exception=None):
    """Django's ``handler404`` (``chatsite.urls``): under ``/api/`` the API's one JSON 404 body
    (``rooms.api.NOT_FOUND_BODY``), elsewhere Django's own 404 page."""
    if request.path.startswith("/api/"):
        from .api import not_found

        return not_found(request)
    from django.views import defaults

    return defaults.page_not_found(request, exception)


class ScriptCatalogView(JavaScriptCatalog):
    """``GET /jsi18n/?lang=<code>&v=<version>``: the page scripts' strings (the ``djangojs``
    catalogs of ``LOCALE_PATHS``, none of the installed apps') as Django's JavaScriptCatalog
    script, in the language ``lang`` names (one of ``LANGUAGES``; otherwise the request's).
    ``base.html`` builds the URL from the page's own language and ``i18n.script_catalog_version``
    (a hash of the compiled catalogs), so one URL always answers the same text: with the current
    version it may be cached for a year (``immutable``), and a deploy with other strings has
    another URL. Any other ``v`` is answered uncached."""

    packages = ["rooms"]  # an app without a locale/ of its own: LOCALE_PATHS only

    def get(self, request, *args, **kwargs):
        lang = request.GET.get("lang", "")
        if lang in dict(settings.LANGUAGES):
            with translation.override(lang):
                response = super().get(request, *args, **kwargs)
        else:
            response = super().get(request, *args, **kwargs)
        if request.GET.get("v") == i18n.script_catalog_version():
            patch_cache_control(response, public=True, max_age=365 * 86400, immutable=True)
        else:
            patch_cache_control(response, no_cache=True)
        return response
