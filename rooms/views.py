"""Pages (server-rendered), the health endpoint and ``/metrics``."""

import hmac
import logging

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import CreateView, DetailView, FormView, ListView
from prometheus_client import REGISTRY
from psycopg_pool import PoolTimeout
from prometheus_client.exposition import choose_encoder

from chatsite.proxy import parse_address

from . import metrics, selectors, services  # noqa: F401 (metrics: registered before /metrics is read)
from .context_processors import show_node_names
from .forms import RoomCreateForm, SignupForm
from .models import Membership
from .serializers import MessageSerializer

logger = logging.getLogger(__name__)

HISTORY_ON_PAGE = 50  # messages rendered into the room page before live ones arrive


class RoomListView(LoginRequiredMixin, ListView):
    """``GET /``: every room, with the create form."""

    template_name = "rooms/room_list.html"
    context_object_name = "rooms"

    def get_queryset(self):
        return selectors.rooms_visible_to(self.request.user)

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        ctx.setdefault("form", RoomCreateForm())
        return ctx


class RoomCreateView(LoginRequiredMixin, CreateView):
    """``POST /rooms/new/``: create a room through ``services.room_create``, then open it."""

    form_class = RoomCreateForm
    template_name = "rooms/room_list.html"

    def get(self, request, *args, **kwargs):
        return redirect("rooms:list")

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        ctx["rooms"] = selectors.rooms_visible_to(self.request.user)
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
    ``/ws/rooms/<slug>/`` (``static/rooms/room.js``)."""

    template_name = "rooms/room_detail.html"
    context_object_name = "room"

    def get_object(self, queryset=None):
        room = selectors.room_visible(slug=self.kwargs["slug"], user=self.request.user)
        if room is None:
            raise Http404("No such room.")
        return room

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        history = selectors.room_history(room=self.object, limit=HISTORY_ON_PAGE)
        ctx["history"] = MessageSerializer(history, many=True).data
        membership = Membership.objects.filter(room=self.object, user_id=self.request.user.pk).first()
        # The caller's place in the room: role (None until a public room's visitor joins; they
        # join when the socket connects), and whether they may delete others' messages.
        ctx["my_role"] = membership.role if membership is not None and not membership.is_banned else None
        ctx["can_moderate"] = bool(membership is not None and membership.can_moderate)
        ctx["room_config"] = {
            "slug": self.object.slug,
            "ws_path": f"/ws/rooms/{self.object.slug}/",
            "user": {"id": self.request.user.pk, "username": self.request.user.get_username()},
            "history": ctx["history"],
            "role": ctx["my_role"],
            "can_moderate": ctx["can_moderate"],
            "archived": self.object.is_archived,
            "show_node_names": show_node_names(self.request),  # staff or SHOW_NODE_NAMES=1
        }
        return ctx


class SignupView(FormView):
    """``/accounts/signup/``: create an account and sign in."""

    template_name = "registration/signup.html"
    form_class = SignupForm
    success_url = reverse_lazy("rooms:list")

    def form_valid(self, form):
        try:
            with transaction.atomic():
                user = form.save()
        except IntegrityError:  # the same username taken a moment after the form checked
            form.add_error("username", "A user with that username already exists.")
            return self.form_invalid(form)
        login(self.request, user, backend="django.contrib.auth.backends.ModelBackend")
        return super().form_valid(form)


def _check_database() -> str:
    """``"ok"`` when ``SELECT 1`` answers, else ``"unavailable"`` (the reason goes to the log).
    A pooled connection broken by an outage that has since ended fails once and is discarded;
    the check then tries once more on a fresh connection (not after a pool timeout, which
    already waited ``DATABASE_POOL_TIMEOUT`` seconds)."""
    for attempt in (1, 2):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            return "ok"
        except Exception as exc:  # any failure means "not ok"
            failure = exc
            if isinstance(exc, PoolTimeout) or isinstance(exc.__cause__, PoolTimeout):
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
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
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
