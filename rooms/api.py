"""REST API (Django REST framework), documented by drf-spectacular at ``/api/schema/`` and
``/api/docs/``.

Authentication: session (browsers; CSRF token required on unsafe methods) or
``Authorization: Token <key>`` (``POST /api/auth/token/`` gives one). Errors answer with a JSON
body: ``{"detail": str}`` (401, 403, 404, 406, 409, 413, 415, 429 with ``Retry-After``, 503) plus
``"code"`` for refusals by the rules (``muted``, ``banned``, ``archived``, ``forbidden``,
``conflict``, ``rate_limited``, ``too_large``, ``dms_off``; 400 ``dm_self`` and 404
``not_found`` from ``POST /api/dms/``; 400 ``invalid_json`` for a body that is not JSON or nests
too deeply, 400 ``invalid_multipart`` for an upload body that cannot be parsed, 403
``csrf_failed``: ``rooms.rest``), or field errors ``{"field": [str, ...]}`` (400;
errors of the whole input under ``non_field_errors``). Every 429 carries ``"code":
"rate_limited"`` and ``retry_after`` (seconds). Every status an operation answers is in
the schema with its body (``rooms/openapi.py``); ``tests/test_schema.py`` fuzzes a real node
against it. A private room a user is not a member of answers 404 on every route, exactly as a
room that does not exist.

Lists (rooms, members) are paged by ``?limit=&offset=``, ``limit`` at most 200
(``rooms/pagination.py``); history is paged by ``seq`` (``HistoryQuery``), a user's mentions by
message id (``MentionsQuery``). Rooms carry the caller's read state (``rooms.reads``), read for
a whole page in one query.

Writes go through ``rooms.services`` (the same functions the WebSocket consumer and the admin
use), so a REST send, edit or delete reaches every live socket on every node exactly once.
"""

import logging
import math

from django.contrib.auth import get_user_model
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import ProhibitNullCharactersValidator
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
    extend_schema_view,
    inline_serializer,
)
from redis.exceptions import RedisError
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from . import (
    attachments,
    dms,
    login_throttle,
    mentions,
    metrics,
    presence,
    ratelimit,
    reactions,
    reads,
    replies,
    rest,
    search,
    selectors,
    services,
)
from .models import SLUG_UNAVAILABLE, SLUG_UNAVAILABLE_CODE, Membership, Message, Room
from .outage import RETRY_AFTER, UNAVAILABLE_DETAIL, is_database_outage, log_outage
from .serializers import (
    AttachmentSerializer,
    AuthorSerializer,
    DmOpenSerializer,
    MemberAddSerializer,
    MembershipSerializer,
    MemberUpdateSerializer,
    MentionSerializer,
    MessageCreateSerializer,
    MessageEditSerializer,
    MessageSerializer,
    MuteSerializer,
    ReactionInputSerializer,
    ReactionStateSerializer,
    ReadReportSerializer,
    ReadStateSerializer,
    RoomCreateSerializer,
    RoomSerializer,
    RoomUpdateSerializer,
    SearchResultSerializer,
    StrictCharField,
    UserSettingsSerializer,
)

logger = logging.getLogger(__name__)

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200
SEQ_MAX = 2**63 - 1  # seq is a bigint; a larger number is refused (400), never sent to the database


# The one body of every REST 404: an unknown path, room, message, member or user, or a private
# room one is not in. It names no model and no value, so it never says what exists.
NOT_FOUND_BODY = {"detail": gettext_noop("Not found."), "code": "not_found"}


def _example_message(**fields) -> dict:
    """A message shape for the schema's examples: ``fields`` over every field's plain default,
    so each example carries the whole shape (tests/test_schema.py checks examples against it)."""
    shape = {
        "id": 1234,
        "room": "lobby",
        "seq": 42,
        "author": {"id": 7, "username": "alice", "display_name": ""},
        "body": "hi all",
        "created_at": "2026-12-05T08:00:00.000000Z",
        "server_id": "node-1",
        "edited_at": None,
        "deleted": False,
        "mentions": [],
        "mentions_room": False,
        "body_html": "",
        "reactions": [],
        "reply_to": None,
        "parent": None,
        "reply_count": 0,
        "attachments": [],
    }
    shape.update(fields)
    shape["author"] = {"display_name": "", **shape["author"]}
    if not shape["body_html"] and shape["body"]:
        shape["body_html"] = f"<p>{shape['body']}</p>"
    return shape


@csrf_exempt  # an unknown path answers 404 to any method, not a CSRF page
def not_found(request, *args, **kwargs):
    """Any other path under ``/api/``: 404 with the JSON body of every other API 404
    (``NOT_FOUND_BODY``). Also Django's ``handler404`` for a path under ``/api/`` that no API
    view answers (``chatsite.urls``)."""
    from django.http import JsonResponse

    return JsonResponse({**NOT_FOUND_BODY, "detail": gettext(NOT_FOUND_BODY["detail"])}, status=404)


def exception_handler(exc, context):
    """DRF's handler, plus: a ``services.ServiceError`` answers with its status, ``detail`` and
    ``code`` (``NotFound`` as a plain 404), and Django's ``ValidationError`` from a service as a
    400 with field errors. Views call services directly; refusals need no code of their own.

    A request body over Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB, Django's default;
    a message body is at most 4,000 characters) answers 413 ``{"detail": str, "code":
    "too_large"}`` instead of Django's HTML "Bad Request (400)" page and a logged traceback; a
    form body with more fields or files than Django takes (``DATA_UPLOAD_MAX_NUMBER_FIELDS``,
    1,000; ``DATA_UPLOAD_MAX_NUMBER_FILES``, 100) answers 400 ``"code": "too_many_fields"``.
    A ``rate_limited`` refusal (429) carries ``Retry-After`` (whole seconds, rounded up) like
    DRF's throttles; a Django ``ValidationError`` without fields answers
    ``{"non_field_errors": [...]}``, the shape of every other 400 with field errors.

    Every 429 answers ``{"detail": str, "code": "rate_limited", "retry_after": seconds}``: DRF's
    throttles (``Throttled``; ``retry_after`` whole seconds, as ``Retry-After``) as the services'
    own. A body that is not JSON, or nests too deeply (``rooms.rest.JSONParser``), answers 400
    ``{"detail": str, "code": "invalid_json"}``, a multipart body that cannot be parsed
    (``rooms.rest.MultiPartParser``) 400 ``"code": "invalid_multipart"``; a session request
    without its CSRF token (``rooms.rest.SessionAuthentication``), 403 ``{"detail": str, "code":
    "csrf_failed"}``.

    Every 404 answers ``NOT_FOUND_BODY``, ``{"detail": "Not found.", "code": "not_found"}``,
    whatever was not found (a room, a private room one is not in, a message, a member, a user):
    the body never names a model or says which part of the path was unknown.

    A database outage (unreachable, hung past ``DATABASE_STATEMENT_TIMEOUT``, connection lost:
    ``rooms.outage.is_database_outage``) answers 503 ``{"detail": str, "code":
    "unavailable"}`` with ``Retry-After`` (seconds), not Django's HTML 500 page."""
    if is_database_outage(exc):
        log_outage(context["request"], exc)
        return Response(
            {"detail": gettext(UNAVAILABLE_DETAIL), "code": "unavailable"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER)},
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": _("The request body is too large."), "code": "too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return Response(
            {"detail": _("The request has too many fields."), "code": "too_many_fields"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, services.ServiceError) and exc.status == 404:
        exc = exceptions.NotFound()  # services.NotFound, dms.UserNotFound: the one 404 body below
    elif isinstance(exc, services.ServiceError):
        # Built here, not as an APIException, so numbers in ``extra`` (id, seq) stay numbers.
        headers = None
        if isinstance(exc.extra.get("retry_after"), (int, float)):
            headers = {"Retry-After": str(max(0, math.ceil(exc.extra["retry_after"])))}
        return Response(
            {"detail": exc.localized_detail(), "code": exc.code, **exc.extra},
            status=exc.status,
            headers=headers,
        )
    elif isinstance(exc, DjangoValidationError):
        fields = getattr(exc, "message_dict", None) or {"non_field_errors": exc.messages}
        if any(e.code == SLUG_UNAVAILABLE_CODE for e in getattr(exc, "error_dict", {}).get("slug", [])):
            # A slug that cannot be had (taken in any case, by a room one may not see; reserved):
            # the one answer, with a code, beside the field errors.
            return Response(
                {"detail": SLUG_UNAVAILABLE, "code": SLUG_UNAVAILABLE_CODE, **fields},
                status=status.HTTP_400_BAD_REQUEST,
            )
        exc = exceptions.ValidationError(fields)
    response = drf_exception_handler(exc, context)
    if response is not None and response.status_code == status.HTTP_404_NOT_FOUND:
        # Django's Http404 (get_object_or_404: "No Message matches the given query."), DRF's
        # NotFound, a service's: one body that names no model.
        response.data = {**NOT_FOUND_BODY, "detail": gettext(NOT_FOUND_BODY["detail"])}
    elif isinstance(exc, exceptions.Throttled):
        # DRF's throttles and the per-account log-in limit: the body of rooms' own rate limits.
        # No wait known (DRF's throttle after its rate was lowered): one second, header and body.
        wait = exc.wait if exc.wait is not None else 1
        response.data = {"detail": response.data["detail"], "code": "rate_limited", "retry_after": wait}
        response["Retry-After"] = str(wait)  # whole seconds
    elif isinstance(exc, rest.CODED_REFUSALS):
        response.data = {"detail": response.data["detail"], "code": exc.default_code}
    return response


class FailOpenScopedThrottle(ScopedRateThrottle):
    """DRF's scoped throttle (the view's ``throttle_scope``, its rate from
    ``DEFAULT_THROTTLE_RATES``, per user or, signed out, per client address), counted by
    ``rooms.ratelimit.hit``: a fixed window of the rate's period, one atomic ``INCR`` in the
    shared cache (Redis with ``REDIS_URL``), so the limit holds for requests that arrive
    together, on one node or several. (DRF's own reads its list of times, adds one and writes
    it back: 150 sends sent at once all passed a 120/min limit.) ``wait()``: seconds until the
    window ends. When the cache cannot be reached the request is let through and the error
    logged, so a Redis outage does not take the API down with it. Each refusal (429) is counted
    in ``chatsite_rate_limited_total{scope}``."""

    def allow_request(self, request, view):
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        key = self.get_cache_key(request, view) if self.rate else None
        if key is None:
            return True
        self.retry_after = ratelimit.hit(f"api:{key}", self.rate)
        if self.retry_after is None:
            return True
        metrics.RATE_LIMITED.labels(scope=self.scope).inc()
        return False

    def wait(self):
        return self.retry_after


def visible_room(request, slug: str) -> Room:
    """The room if the caller may see it; 404 otherwise (private rooms included)."""
    room = selectors.room_visible(slug=slug, user=request.user)
    if room is None:
        raise exceptions.NotFound()
    return room


# --- auth -----------------------------------------------------------------------------------------


class TokenView(APIView):
    """``POST /api/auth/token/``: exchange username and password for the API token (the same
    token on every call until revoked). Throttled per client address (``THROTTLE_LOGIN_RATE``) and,
    with the log-in pages, per account (``LOGIN_ACCOUNT_RATE`` failed log-ins,
    ``rooms.login_throttle``): over either, 429 with ``Retry-After`` and no password checked.
    ``DELETE``: revoke the caller's token; sockets opened with it are closed with 4401 on every
    node."""

    throttle_classes = [FailOpenScopedThrottle]
    throttle_scope = "login"

    def get_permissions(self):
        if self.request.method == "POST":
            return []
        return super().get_permissions()

    def get_authenticators(self):
        # Logging in needs no session, so no CSRF token either (the password is the proof).
        if getattr(self, "request", None) is not None and self.request.method == "POST":
            return []
        return super().get_authenticators()

    def get_throttles(self):
        return super().get_throttles() if self.request.method == "POST" else []

    @extend_schema(
        request=AuthTokenSerializer,
        responses={200: inline_serializer("TokenResponse", {"token": serializers.CharField()}), 400: None},
        auth=[],
    )
    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        username = data.get("username")
        attempt = login_throttle.AccountAttempt(username if isinstance(username, str) else "")
        if attempt.retry_after is not None:
            login_throttle.refused("login")
            raise exceptions.Throttled(
                wait=attempt.retry_after, detail=gettext("Too many failed log-ins for this account.")
            )
        serializer = AuthTokenSerializer(data=request.data, context={"request": request})
        if not serializer.is_valid():
            if not (data.get("username") and data.get("password")):
                attempt.release()  # no password was checked: not a guess
            raise exceptions.ValidationError(serializer.errors)
        attempt.release()
        token, _created = Token.objects.get_or_create(user=serializer.validated_data["user"])
        return Response({"token": token.key})

    @extend_schema(request=None, responses={204: None})
    def delete(self, request):
        services.token_revoke(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- rooms ----------------------------------------------------------------------------------------


class PresenceCursor(serializers.CharField):
    """A presence page cursor: text as the ``next`` of a page gave it, NUL included (the store's
    cursor is the username, a NUL and the id: no username holds a NUL)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]


class PresenceQuery(serializers.Serializer):
    """Query of ``GET /api/rooms/<slug>/presence/``: ``after`` (the ``next`` cursor of the page
    before; absent: from the start) and ``limit`` (1..``PRESENCE_PAGE_MAX``, 200). Out of range:
    400 with field errors."""

    after = PresenceCursor(
        required=False,
        max_length=presence.CURSOR_MAX,
        trim_whitespace=False,
        help_text="The `next` cursor of the page before.",
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=presence.page_max(),
        default=presence.page_max(),
        help_text="Page size, 1..200 (default 200).",
    )


class RoomViewSet(viewsets.GenericViewSet):
    """Rooms. Listing shows public rooms and the private rooms the caller belongs to."""

    lookup_field = "slug"
    lookup_value_regex = "[^/]+"
    serializer_class = RoomSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return reads.with_read_state(selectors.rooms_visible_to(self.request.user), self.request.user)

    def get_object(self):
        return visible_room(self.request, self.kwargs["slug"])

    def with_read_state(self, room: Room) -> Room:
        """``room`` again with the caller's read state (``reads.with_read_state``), in one query."""
        return (
            reads.with_read_state(Room.objects.filter(pk=room.pk), self.request.user)
            .select_related("created_by")
            .get()
        )

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.request.user.is_authenticated:
            context["roles"] = dict(
                Membership.objects.filter(user=self.request.user, banned_at__isnull=True).values_list(
                    "room_id", "role"
                )
            )
            context["dm_with"] = dms.dm_partners(self.request.user)
        return context

    @extend_schema(responses=RoomSerializer(many=True))
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=RoomCreateSerializer, responses={201: RoomSerializer, 400: None})
    def create(self, request):
        data = RoomCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        room = services.room_create(created_by=request.user, **data.validated_data)
        return Response(self.get_serializer(self.with_read_state(room)).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: RoomSerializer, 404: None})
    def retrieve(self, request, slug=None):
        return Response(self.get_serializer(self.with_read_state(self.get_object())).data)

    @extend_schema(
        request=ReadReportSerializer,
        responses={200: ReadStateSerializer, 400: None, 404: None},
        description="The caller has read the room up to `seq` (a page reports it debounced). Read "
        "state never moves backward, and a `seq` beyond the room's `last_seq` is clamped to it. "
        "When the marker moved, every socket of the caller on every node gets `read.updated`. "
        "Answers the read state after the report. 404 when the caller is not a member of the room "
        "(nothing is changed).",
        examples=[
            OpenApiExample("Read up to seq 42", value={"seq": 42}, request_only=True),
            OpenApiExample(
                "The read state after it",
                value={"last_read_seq": 42, "unread_count": 0, "mention_count": 0},
                response_only=True,
            ),
        ],
    )
    @action(detail=True, methods=["post"])
    def read(self, request, slug=None):
        room = self.get_object()
        data = ReadReportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        state = reads.read_report(room=room, user=request.user, seq=data.validated_data["seq"])
        return Response(ReadStateSerializer(state).data)

    @extend_schema(
        request=RoomUpdateSerializer,
        responses={200: RoomSerializer, 400: None, 403: None, 404: None, 409: None},
    )
    def partial_update(self, request, slug=None):
        room = self.get_object()
        data = RoomUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        room = services.room_update(room=room, actor=request.user, **data.validated_data)
        return Response(self.get_serializer(self.with_read_state(room)).data)

    @extend_schema(
        parameters=[PresenceQuery],
        responses={
            200: inline_serializer(
                "Presence",
                {
                    "count": serializers.IntegerField(),
                    "online": AuthorSerializer(many=True),
                    "next": serializers.CharField(allow_null=True),
                },
            ),
            400: None,
            404: None,
            503: None,
        },
        description="Who is online in the room now, across all nodes (a user with two tabs once): "
        "`count` users in all, a page of them in name order (`limit`, 1..200, default 200) and "
        "`next`, the cursor of the next page (`?after=`), null on the last. One Redis script, "
        "O(log n + limit), whatever the room's size. Redis unreachable: 503 `unavailable`.",
    )
    @action(detail=True, methods=["get"])
    def presence(self, request, slug=None):
        room = self.get_object()
        query = PresenceQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            count, online, after, _ = presence.store().page_now(
                room.pk, query.validated_data.get("after") or None, query.validated_data["limit"]
            )
        except RedisError:
            logger.warning("presence of room %s: Redis unreachable", room.pk, exc_info=True)
            return Response(
                {"detail": gettext(UNAVAILABLE_DETAIL), "code": "unavailable"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        return Response({"count": count, "online": online, "next": after})

    @extend_schema(
        description="Archive the room: its history stays readable, it takes no new messages, and "
        "open sockets get a `room.archived` frame and are closed with 4410.",
        responses={204: None, 403: None, 404: None},
    )
    def destroy(self, request, slug=None):
        services.room_archive(room=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- direct messages ------------------------------------------------------------------------------


class DirectMessageView(APIView):
    """``POST /api/dms/`` ``{"username": str}``: open the direct message with that user
    (``rooms.dms.dm_open``): 201 with the room the first time, 200 with the same room on every
    later call from either side. A DM is a private room of the two (``kind: "dm"``; ``dm_with``:
    the other person): its messages, members, presence and socket are a room's routes."""

    @extend_schema(
        request=DmOpenSerializer,
        responses={201: RoomSerializer, 200: RoomSerializer, 400: None, 403: None, 404: None},
        description="Open the 1:1 conversation with `username`: 201 when this call made it (both "
        "users' sockets get a `dm.created` frame), 200 with the same room afterwards, from either "
        "side. 400 `dm_self` (yourself) or field errors; 403 `dms_off` (they take DMs only from "
        "people who share a room with them; an existing DM is still returned); 404 `not_found` "
        "(no active user of that name).",
        examples=[
            OpenApiExample("Open a DM with bob", value={"username": "bob"}, request_only=True),
            OpenApiExample(
                "The DM, as alice sees it",
                response_only=True,
                status_codes=["201", "200"],
                value={
                    "slug": "dm-k3j9x2m4qz7p",
                    "name": "bob",
                    "description": "",
                    "is_private": True,
                    "archived": False,
                    "archived_at": None,
                    "created_by": {"id": 7, "username": "alice", "display_name": "Alice Kim"},
                    "created_at": "2026-12-04T18:30:00Z",
                    "last_seq": 0,
                    "my_role": "member",
                    "kind": "dm",
                    "dm_with": {"id": 9, "username": "bob"},
                },
            ),
            OpenApiExample(
                "Yourself",
                response_only=True,
                status_codes=["400"],
                value={"detail": "You cannot start a direct message with yourself.", "code": "dm_self"},
            ),
            OpenApiExample(
                "They take DMs from people sharing a room only",
                response_only=True,
                status_codes=["403"],
                value={
                    "detail": "bob takes direct messages only from people who share a room with them.",
                    "code": "dms_off",
                },
            ),
        ],
    )
    def post(self, request):
        data = DmOpenSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = dms.dm_open(user=request.user, username=data.validated_data["username"])
        body = RoomSerializer(
            result.room, context={"request": request, "roles": {result.room.pk: Membership.Role.MEMBER}}
        ).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


class MySettingsView(APIView):
    """``GET`` / ``PATCH /api/me/settings/``: the caller's settings, ``{"dms_from": "anyone" |
    "shared_rooms"}`` (who may start a new direct message with them)."""

    @extend_schema(responses={200: UserSettingsSerializer})
    def get(self, request):
        return Response(UserSettingsSerializer(dms.user_settings_get(request.user)).data)

    @extend_schema(
        request=UserSettingsSerializer,
        responses={200: UserSettingsSerializer, 400: None},
        examples=[OpenApiExample("Only people who share a room with me", value={"dms_from": "shared_rooms"})],
    )
    def patch(self, request):
        data = UserSettingsSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        row = dms.user_settings_update(user=request.user, **data.validated_data)
        return Response(UserSettingsSerializer(row).data)


# --- messages -------------------------------------------------------------------------------------


class HistoryQuery(serializers.Serializer):
    """Query of the history route: at most one of ``after_seq`` / ``before_seq`` (seq numbers,
    up to 2**63 - 1), and ``limit`` (1..200, default 50). Out of range: 400 with field errors.
    (Also the route's query parameters in the schema.)"""

    after_seq = serializers.IntegerField(
        required=False, min_value=0, max_value=SEQ_MAX, help_text="Messages with seq > N, oldest first."
    )
    before_seq = serializers.IntegerField(
        required=False, min_value=1, max_value=SEQ_MAX, help_text="The messages just before seq N."
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=HISTORY_MAX_LIMIT,
        default=HISTORY_DEFAULT_LIMIT,
        help_text="Page size, 1..200 (default 50).",
    )

    def validate(self, attrs):
        if "after_seq" in attrs and "before_seq" in attrs:
            raise serializers.ValidationError(_("Give after_seq or before_seq, not both."))
        return attrs


def plain_history_query(params) -> tuple[int | None, int | None, int] | None:
    """``(after_seq, before_seq, limit)`` read from the history route's query ``params`` (a
    ``QueryDict``) without ``HistoryQuery``, when the query is plain: each of the three absent,
    empty or ASCII digits (the last value of a repeated one, as DRF reads it), in range
    (``after_seq`` 0..2**63-1, ``before_seq`` 1..2**63-1, ``limit`` 1..200, default 50), and not
    both seqs; other parameters ignored. These are exactly the queries ``HistoryQuery`` accepts
    with those values. None for anything else: ``HistoryQuery`` then gives the answer (its
    400s with field errors, or the values of what it also accepts: ``+5``, `` 5``, ``5.0``)."""
    values = []
    for name, low, high in (
        ("after_seq", 0, SEQ_MAX),
        ("before_seq", 1, SEQ_MAX),
        ("limit", 1, HISTORY_MAX_LIMIT),
    ):
        text = params.get(name)
        if not text:  # absent or empty: left out, as HistoryQuery does
            values.append(None)
            continue
        if len(text) > 19 or not (text.isascii() and text.isdigit()):
            return None
        value = int(text)
        if not low <= value <= high:
            return None
        values.append(value)
    after_seq, before_seq, limit = values
    if after_seq is not None and before_seq is not None:
        return None
    return after_seq, before_seq, HISTORY_DEFAULT_LIMIT if limit is None else limit


@extend_schema_serializer(many=False)  # one page object, though answered by a list action
class HistoryPage(serializers.Serializer):
    """A page of history: ``{"results": [message, ...], "has_more": bool}`` (paged by seq, not
    by offset: no ``count``, ``next`` or ``previous``)."""

    results = MessageSerializer(many=True)
    has_more = serializers.BooleanField()


class ThreadQuery(serializers.Serializer):
    """Query of the thread route: ``after_seq`` (replies with a higher seq; default 0, the
    first ones) and ``limit`` (1..200, default 50)."""

    after_seq = serializers.IntegerField(
        required=False,
        default=0,
        min_value=0,
        max_value=SEQ_MAX,
        help_text="Replies with seq > N, oldest first (next page: the last seq).",
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=replies.THREAD_MAX_LIMIT,
        default=replies.THREAD_DEFAULT_LIMIT,
        help_text="Page size, 1..200 (default 50).",
    )


@extend_schema_serializer(many=False)
class ThreadPage(serializers.Serializer):
    """A thread: ``{"parent": message, "results": [reply, ...], "has_more": bool}``, replies
    oldest first, paged by seq."""

    parent = MessageSerializer()
    results = MessageSerializer(many=True)
    has_more = serializers.BooleanField()


class RoomScoped:
    """For viewsets under ``/api/rooms/<room_slug>/``: the room is resolved first, so an unknown
    or invisible room answers 404 before any other check (400, 403) can hint at it. Actions
    named in ``room_checked_by_action`` check it themselves, in the statement that reads their
    data, and answer 404 before anything else in the same way."""

    room_checked_by_action: tuple[str, ...] = ()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.action not in self.room_checked_by_action:
            self.room()  # 404 for an unknown or invisible room before any other answer

    def room(self) -> Room:
        if not hasattr(self, "_room"):
            self._room = visible_room(self.request, self.kwargs["room_slug"])
        return self._room


MESSAGE_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The message's id.")


@extend_schema_view(
    retrieve=extend_schema(parameters=[MESSAGE_ID]),
    partial_update=extend_schema(parameters=[MESSAGE_ID]),
    destroy=extend_schema(parameters=[MESSAGE_ID]),
)
class MessageViewSet(RoomScoped, viewsets.GenericViewSet):
    """A room's messages: history, sending, editing and deleting."""

    serializer_class = MessageSerializer
    queryset = Message.objects.none()  # for the schema's path parameter type; see get_object
    lookup_value_regex = "[0-9]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    throttle_scope = "send"
    pagination_class = None  # history pages by seq (HistoryQuery, HistoryPage), not limit/offset
    room_checked_by_action = ("list",)  # one statement for the room's visibility and the page

    def get_throttles(self):
        return [FailOpenScopedThrottle()] if self.action in ("create", "reactions") else []

    def get_object(self) -> Message:
        return get_object_or_404(
            Message.objects.select_related(*selectors.MESSAGE_RELATED), room=self.room(), pk=self.kwargs["pk"]
        )

    @extend_schema(
        parameters=[HistoryQuery],
        responses={200: HistoryPage, 400: None, 404: None},
        description="History paged by seq, never by time: with no parameter the newest `limit` "
        "messages; `has_more` says whether more lie beyond the page in the direction of travel "
        "(after the last for `after_seq`, before the first otherwise). Oldest first.",
    )
    def list(self, request, room_slug=None):
        # The room is not looked up before (room_checked_by_action): its visibility and the page
        # are one statement (selectors.room_history_page_data). A query that is not plain goes
        # through HistoryQuery, after the room's check, so its 400s come after the 404.
        query = plain_history_query(request.query_params)
        if query is None:
            self.room()
            checked = HistoryQuery(data=request.query_params)
            checked.is_valid(raise_exception=True)
            data = checked.validated_data
            query = (data.get("after_seq"), data.get("before_seq"), data["limit"])
        after_seq, before_seq, limit = query
        # The message shapes come from rooms.message_shape (MessageSerializer's output exactly,
        # without its per-field cost): the schema above still names MessageSerializer.
        page = selectors.room_history_page_data(
            slug=room_slug, user=request.user, after_seq=after_seq, before_seq=before_seq, limit=limit + 1
        )
        if page is None:
            raise exceptions.NotFound()
        has_more = len(page) > limit
        page = page[:limit] if after_seq is not None else page[-limit:]
        return Response({"results": page, "has_more": has_more})

    @extend_schema(
        request=MessageCreateSerializer,
        responses={
            201: MessageSerializer,
            200: MessageSerializer,
            400: None,
            403: None,
            404: None,
            409: None,
            429: None,
        },
        description="Store and broadcast a message, exactly as a WebSocket `message.send`. A retry "
        "with the same `client_msg_id` answers 200 with the first message and stores nothing. "
        "`reply_to`: the seq of the message of this room it answers (400 `reply_not_found` when "
        "there is none or it is deleted); its `reply_count` goes up and `thread.updated` goes live.",
        examples=[
            OpenApiExample(
                "A message",
                value={"body": "**hi** all, see https://example.com", "client_msg_id": "c-1"},
                request_only=True,
            ),
            OpenApiExample(
                "A reply to seq 41",
                value={"body": "agreed", "client_msg_id": "c-2", "reply_to": 41},
                request_only=True,
            ),
            OpenApiExample(
                "A stored reply",
                response_only=True,
                status_codes=["201"],
                value=_example_message(
                    **{
                        "id": 1235,
                        "room": "lobby",
                        "seq": 42,
                        "author": {"id": 9, "username": "bob"},
                        "body": "agreed",
                        "created_at": "2026-12-05T08:00:00.000000Z",
                        "server_id": "node-1",
                        "edited_at": None,
                        "deleted": False,
                        "mentions": [],
                        "mentions_room": False,
                        "body_html": "<p>agreed</p>",
                        "reactions": [],
                        "reply_to": 41,
                        "parent": {
                            "seq": 41,
                            "author": {"id": 7, "username": "alice"},
                            "excerpt": "hi all, see https://example.com",
                            "deleted": False,
                        },
                        "reply_count": 0,
                    }
                ),
            ),
            OpenApiExample(
                "No such message to reply to",
                response_only=True,
                status_codes=["400"],
                value={"detail": "No message 99 to reply to in this room.", "code": "reply_not_found"},
            ),
        ],
    )
    def create(self, request, room_slug=None):
        room = self.room()
        data = MessageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.message_post(room=room, author=request.user, **data.validated_data)
        return Response(
            MessageSerializer(result.message).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )

    @extend_schema(responses={200: MessageSerializer, 404: None})
    def retrieve(self, request, room_slug=None, pk=None):
        return Response(MessageSerializer(selectors.attach([self.get_object()])[0]).data)

    @extend_schema(
        request=MessageEditSerializer,
        responses={200: MessageSerializer, 400: None, 403: None, 404: None, 409: None},
    )
    def partial_update(self, request, room_slug=None, pk=None):
        message = self.get_object()
        data = MessageEditSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.message_edit(message=message, actor=request.user, body=data.validated_data["body"])
        return Response(MessageSerializer(message).data)

    @extend_schema(responses={204: None, 403: None, 404: None})
    def destroy(self, request, room_slug=None, pk=None):
        services.message_delete(message=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[MESSAGE_ID, ThreadQuery],
        responses={200: ThreadPage, 400: None, 404: None},
        description="The thread of a message: the message (`parent`) and its replies (messages whose "
        "`reply_to` is its seq), oldest first, paged by seq (`after_seq`: the last seq of the page "
        "before); deleted replies keep their place, as in history.",
        examples=[
            OpenApiExample(
                "A thread of one reply",
                response_only=True,
                value={
                    "parent": _example_message(
                        **{
                            "id": 1234,
                            "room": "lobby",
                            "seq": 41,
                            "author": {"id": 7, "username": "alice"},
                            "body": "lunch?",
                            "created_at": "2026-12-05T07:59:00.000000Z",
                            "server_id": "node-2",
                            "edited_at": None,
                            "deleted": False,
                            "mentions": [],
                            "mentions_room": False,
                            "body_html": "<p>lunch?</p>",
                            "reactions": [],
                            "reply_to": None,
                            "parent": None,
                            "reply_count": 1,
                        }
                    ),
                    "results": [
                        _example_message(
                            **{
                                "id": 1235,
                                "room": "lobby",
                                "seq": 42,
                                "author": {"id": 9, "username": "bob"},
                                "body": "yes!",
                                "created_at": "2026-12-05T08:00:00.000000Z",
                                "server_id": "node-1",
                                "edited_at": None,
                                "deleted": False,
                                "mentions": [],
                                "mentions_room": False,
                                "body_html": "<p>yes!</p>",
                                "reactions": [
                                    {"emoji": "👍", "count": 1, "users": [{"id": 7, "username": "alice"}]}
                                ],
                                "reply_to": 41,
                                "parent": {
                                    "seq": 41,
                                    "author": {"id": 7, "username": "alice"},
                                    "excerpt": "lunch?",
                                    "deleted": False,
                                },
                                "reply_count": 0,
                            }
                        )
                    ],
                    "has_more": False,
                },
            )
        ],
    )
    @action(detail=True, methods=["get"], url_path="replies")
    def replies(self, request, room_slug=None, pk=None):
        """``GET /api/rooms/<slug>/messages/<id>/replies/`` (``rooms.replies.thread_replies``)."""
        parent = self.get_object()
        query = ThreadQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        page, has_more = replies.thread_replies_data(
            parent=parent, after_seq=query.validated_data["after_seq"], limit=query.validated_data["limit"]
        )
        selectors.attach([parent])
        return Response({"parent": MessageSerializer(parent).data, "results": page, "has_more": has_more})

    @extend_schema(
        methods=["POST"],
        parameters=[MESSAGE_ID],
        request=ReactionInputSerializer,
        responses={
            201: ReactionStateSerializer,
            200: ReactionStateSerializer,
            400: None,
            403: None,
            404: None,
            409: None,
            429: None,
        },
        description="Add your reaction (one emoji) to the message: 201 with the message's reactions "
        "after it, and `reaction.updated` to the room's sockets on every node; 200 when you had it "
        "already (counted once, nothing broadcast). 400 `invalid_emoji` for anything but one emoji; "
        "403 `muted` (with `until`) or `banned`; 409 `archived` or `conflict` (a deleted message). "
        "A public room's visitor becomes a member. Throttled with sends (`THROTTLE_SEND_RATE`).",
        examples=[
            OpenApiExample("React with a thumbs up", value={"emoji": "👍"}, request_only=True),
            OpenApiExample(
                "The message's reactions after it",
                response_only=True,
                status_codes=["201", "200"],
                value={
                    "room": "lobby",
                    "seq": 42,
                    "reactions": [
                        {
                            "emoji": "👍",
                            "count": 2,
                            "users": [{"id": 7, "username": "alice"}, {"id": 9, "username": "bob"}],
                        }
                    ],
                },
            ),
            OpenApiExample(
                "Not one emoji",
                response_only=True,
                status_codes=["400"],
                value={"detail": 'emoji must be a single emoji, e.g. "👍".', "code": "invalid_emoji"},
            ),
        ],
    )
    @extend_schema(
        methods=["DELETE"],
        parameters=[
            MESSAGE_ID,
            OpenApiParameter(
                "emoji",
                str,
                OpenApiParameter.QUERY,
                required=True,
                description="The emoji to take back, e.g. `%F0%9F%91%8D` (👍).",
            ),
        ],
        request=None,
        responses={200: ReactionStateSerializer, 400: None, 403: None, 404: None, 409: None, 429: None},
        description="Remove your reaction: 200 with the message's reactions after it (`reaction.updated` "
        "live when you had it; removing one you do not have changes nothing). Allowed while muted.",
    )
    @action(detail=True, methods=["post", "delete"], url_path="reactions")
    def reactions(self, request, room_slug=None, pk=None):
        """``POST`` / ``DELETE /api/rooms/<slug>/messages/<id>/reactions/`` (``rooms.reactions``)."""
        message = self.get_object()
        if request.method == "POST":
            data = ReactionInputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            raw = data.validated_data["emoji"]
        else:
            raw = request.query_params.get("emoji")
        try:
            emoji = reactions.normalize_emoji(raw)
        except reactions.InvalidEmoji as exc:
            return Response({"detail": str(exc), "code": exc.code}, status=status.HTTP_400_BAD_REQUEST)
        if request.method == "POST":
            result = reactions.reaction_add(message=message, user=request.user, emoji=emoji)
            answer = status.HTTP_201_CREATED if result.changed else status.HTTP_200_OK
        else:
            result = reactions.reaction_remove(message=message, user=request.user, emoji=emoji)
            answer = status.HTTP_200_OK
        return Response(
            {"room": result.message.room.slug, "seq": result.message.seq, "reactions": result.reactions},
            status=answer,
        )


# --- members --------------------------------------------------------------------------------------


class MemberViewSet(RoomScoped, viewsets.GenericViewSet):
    """A room's members. ``me`` stands for the caller's own username."""

    serializer_class = MembershipSerializer
    lookup_field = "username"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def target_user(self):
        username = self.kwargs["username"]
        if username == "me":
            return self.request.user
        return get_object_or_404(get_user_model(), username=username)

    def run(self, fn, **kwargs):
        return fn(room=self.room(), **kwargs)

    @extend_schema(responses=MembershipSerializer(many=True))
    def list(self, request, room_slug=None):
        page = self.paginate_queryset(selectors.room_members(room=self.room()))
        return self.get_paginated_response(MembershipSerializer(page, many=True).data)

    @extend_schema(
        request=MemberAddSerializer,
        responses={
            201: OpenApiResponse(
                MembershipSerializer, description="A membership was made: you joined, or the user was added."
            ),
            200: OpenApiResponse(
                MembershipSerializer,
                description="Already a member: the membership as it is "
                "(for `username`: with the `role` asked for, when that changed it).",
            ),
            403: None,
            404: None,
            409: None,
        },
        description="Without `username`: join the (public) room yourself. With `username`: add "
        "that user (owner or moderator; the way into a private room); only the owner adds moderators. "
        "201 when this call made the membership; 200 with the membership when the user already was "
        "a member (joining again changes nothing).",
    )
    def create(self, request, room_slug=None):
        data = MemberAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data.get("username")
        if not username:
            membership = self.run(services.member_join, user=request.user)
        else:
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                raise exceptions.ValidationError({"username": [_("No such user.")]})
            membership = self.run(
                services.member_add, actor=request.user, user=user, role=data.validated_data["role"]
            )
        created = getattr(membership, "created", True)
        return Response(
            MembershipSerializer(membership).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(responses={200: MembershipSerializer, 404: None})
    def retrieve(self, request, room_slug=None, username=None):
        membership = (
            Membership.objects.select_related("user")
            .filter(room=self.room(), user=self.target_user())
            .first()
        )
        if membership is None:
            raise exceptions.NotFound()
        return Response(MembershipSerializer(membership).data)

    @extend_schema(
        request=MemberUpdateSerializer, responses={200: MembershipSerializer, 403: None, 404: None}
    )
    def partial_update(self, request, room_slug=None, username=None):
        user = self.target_user()  # an unknown user: 404 before the body's 400
        data = MemberUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        membership = self.run(
            services.member_set_role, actor=request.user, user=user, role=data.validated_data["role"]
        )
        return Response(MembershipSerializer(membership).data)

    @extend_schema(
        responses={204: None, 403: None, 404: None, 409: None},
        description="Leave the room (`me` or your username; idempotent; your open sockets in the "
        "room are closed with 4000), or, as the owner or a moderator, remove a member (not the "
        "owner; only the owner removes a moderator): their sockets in the room close on every node "
        "(4404 in a private room, 4000 in a public one, which they may join again; a ban keeps "
        "them out). Everyone else in the room gets `member.removed`.",
    )
    def destroy(self, request, room_slug=None, username=None):
        target = self.target_user()
        if target.pk != request.user.pk:
            self.run(services.member_remove, actor=request.user, user=target)
        else:
            self.run(services.member_leave, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["POST"], request=MuteSerializer, responses={200: MembershipSerializer, 403: None, 404: None}
    )
    @extend_schema(
        methods=["DELETE"], request=None, responses={200: MembershipSerializer, 403: None, 404: None}
    )
    @action(detail=True, methods=["post", "delete"])
    def mute(self, request, room_slug=None, username=None):
        """POST ``{"until": ISO 8601}`` or ``{"minutes": int}`` mutes; DELETE unmutes."""
        user = self.target_user()  # an unknown user: 404 before the body's 400
        until = None
        if request.method == "POST":
            data = MuteSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            until = data.validated_data["until"]
        membership = self.run(services.member_mute, actor=request.user, user=user, until=until)
        return Response(MembershipSerializer(membership).data)

    @extend_schema(
        methods=["POST"], request=None, responses={200: MembershipSerializer, 403: None, 404: None}
    )
    @extend_schema(methods=["DELETE"], request=None, responses={204: None, 403: None, 404: None})
    @action(detail=True, methods=["post", "delete"])
    def ban(self, request, room_slug=None, username=None):
        """POST bans (sockets closed with 4403 on every node); DELETE lifts the ban."""
        if request.method == "POST":
            membership = self.run(services.member_ban, actor=request.user, user=self.target_user())
            return Response(MembershipSerializer(membership).data)
        self.run(services.member_unban, actor=request.user, user=self.target_user())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- mentions -------------------------------------------------------------------------------------


class MentionsQuery(serializers.Serializer):
    """Query of ``GET /api/mentions/``: ``before_id`` (a message id: the mentions in older
    messages; the next page is ``?before_id=`` the last result's ``message.id``) and ``limit``
    (1..200, default 50). Out of range: 400 with field errors."""

    before_id = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=SEQ_MAX,
        help_text="Mentions in messages with an id below N (the last result's `message.id`).",
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=mentions.MENTIONS_MAX_LIMIT,
        default=mentions.MENTIONS_DEFAULT_LIMIT,
        help_text="Page size, 1..200 (default 50).",
    )


@extend_schema_serializer(many=False)
class MentionsPage(serializers.Serializer):
    """A page of mentions, newest first: ``{"results": [{"room": slug, "message": {...}}, ...],
    "has_more": bool}``."""

    results = MentionSerializer(many=True)
    has_more = serializers.BooleanField()


class MentionsView(APIView):
    """``GET /api/mentions/``: the messages that mention the caller by ``@username``."""

    @extend_schema(
        parameters=[MentionsQuery],
        responses={200: MentionsPage, 400: None},
        description="The caller's mentions by `@username`, newest first, paged by message id "
        "(`?before_id=` the last result's `message.id`; `has_more`: older ones remain). Only in "
        "rooms the caller can read now (a private room they were removed from no longer shows its "
        "mentions); deleted messages are left out. `@room` is not listed here (it is the "
        "message's `mentions_room`).",
        examples=[
            OpenApiExample(
                "A page of one mention",
                response_only=True,
                value={
                    "results": [
                        {
                            "room": "lobby",
                            "message": _example_message(
                                **{
                                    "id": 1234,
                                    "room": "lobby",
                                    "seq": 42,
                                    "author": {"id": 7, "username": "alice", "display_name": "Alice Kim"},
                                    "body": "@bob have a look",
                                    "created_at": "2026-12-04T15:07:37.123456Z",
                                    "server_id": "node-1",
                                    "edited_at": None,
                                    "deleted": False,
                                    "mentions": [{"id": 9, "username": "bob"}],
                                    "mentions_room": False,
                                    "attachments": [],
                                }
                            ),
                        }
                    ],
                    "has_more": True,
                },
            )
        ],
    )
    def get(self, request):
        query = MentionsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        # MentionSerializer's output exactly, built in a fixed number of queries by
        # rooms.message_shape (mentions_for_data); the schema above still names the serializer.
        results, has_more = mentions.mentions_for_data(
            user=request.user,
            before_id=query.validated_data.get("before_id"),
            limit=query.validated_data["limit"],
        )
        return Response({"results": results, "has_more": has_more})


# --- search ---------------------------------------------------------------------------------------


class SearchQuery(serializers.Serializer):
    """Query of ``GET /api/search/``. ``q`` is checked by ``rooms.search.parse_query`` (its
    refusals are 400 ``{"detail", "code"}``); the others answer 400 with field errors."""

    q = StrictCharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text=f"The search: whitespace-separated terms, every one a case-insensitive substring "
        f"of the body. At most {search.QUERY_MAX_LENGTH} characters; some term of "
        f"{search.QUERY_MIN_LENGTH}+ characters, or one Hangul, kana or CJK character.",
    )
    room = serializers.CharField(required=False, help_text="A room's slug: search only that room.")
    before = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=SEQ_MAX,
        help_text="Cursor: results older than this message id (the previous page's `next_before`).",
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=search.MAX_LIMIT,
        default=search.DEFAULT_LIMIT,
        help_text=f"Page size, 1..{search.MAX_LIMIT} (default {search.DEFAULT_LIMIT}).",
    )


@extend_schema_serializer(many=False)
class SearchPage(serializers.Serializer):
    """A page of search results, newest first: ``{"results": [...], "has_more": bool,
    "next_before": int | null}`` (``next_before``: the ``before`` of the next page)."""

    results = SearchResultSerializer(many=True)
    has_more = serializers.BooleanField()
    next_before = serializers.IntegerField(allow_null=True)


_SEARCH_EXAMPLE_MESSAGE = _example_message(
    **{
        "id": 5120,
        "room": "general",
        "seq": 311,
        "author": {"id": 7, "username": "alice"},
        "body": "일반대화방입니다: 대화 is open",
        "created_at": "2026-12-04T15:07:37.123456Z",
        "server_id": "node-1",
        "edited_at": None,
        "deleted": False,
        "mentions": [],
        "mentions_room": False,
        "attachments": [],
    }
)


class SearchView(APIView):
    """``GET /api/search/``: full-text search over the messages of the caller's rooms
    (``rooms.search``)."""

    throttle_classes = [FailOpenScopedThrottle]
    throttle_scope = "search"

    @extend_schema(
        parameters=[SearchQuery],
        responses={200: SearchPage, 400: None, 404: None, 429: None},
        description="Messages whose current body contains every whitespace-separated term of `q` "
        "(case-insensitive substrings, so Korean and Japanese words are found inside longer "
        "words), newest first, in the rooms the caller is a member of (not banned), or in the "
        "one room `room` names (a public room need not be joined; a private room one is not in, "
        "or a room one is banned from, answers 404). Deleted messages and text an edit removed "
        "are never found. Paged by message id: the next page is `?before=` the answer's "
        "`next_before`. `highlights`: where the terms occur in the body, as `[start, end)` "
        "ranges of Unicode code points: escape the body and mark those ranges. 400 "
        '`{"detail", "code"}` with code `query_empty`, `query_too_short` (no term '
        "of 2+ characters, and none a single Hangul, kana or CJK character), `query_too_long` (over 200 characters) or `invalid_text`; 400 field errors "
        "for `before` or `limit` out of range. Throttled per user (`THROTTLE_SEARCH_RATE`).",
        examples=[
            OpenApiExample("Search for 대화", request_only=True, value={"q": "대화"}),
            OpenApiExample(
                "A page of one result",
                response_only=True,
                value={
                    "results": [
                        {
                            "room": "general",
                            "message": _SEARCH_EXAMPLE_MESSAGE,
                            "highlights": [[2, 4], [11, 13]],
                        }
                    ],
                    "has_more": True,
                    "next_before": 5120,
                },
            ),
        ],
    )
    def get(self, request):
        query = SearchQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        room = search.readable_room(user=request.user, slug=data["room"]) if "room" in data else None
        # SearchResultSerializer's output exactly, built in a fixed number of queries by
        # rooms.message_shape (search_results_data); the schema above still names the serializer.
        results, next_before = search.search_results_data(
            user=request.user, q=data.get("q"), room=room, before=data.get("before"), limit=data["limit"]
        )
        return Response({"results": results, "has_more": next_before is not None, "next_before": next_before})


# --- attachments ----------------------------------------------------------------------------------


class AttachmentUploadView(APIView):
    """``POST /api/rooms/<slug>/attachments/`` (multipart, field ``file``): upload a file into the
    room (``rooms.attachments.attachment_upload``); send it with a message's ``attachments``."""

    parser_classes = [rest.MultiPartParser]
    throttle_classes = [FailOpenScopedThrottle]
    throttle_scope = "upload"

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer("AttachmentUpload", {"file": serializers.FileField()})
        },
        responses={
            201: AttachmentSerializer,
            400: None,
            403: None,
            404: None,
            409: None,
            413: None,
            415: None,
            429: None,
        },
        description="Upload one file (multipart field `file`) into the room, under the rules of "
        "sending (403 `muted` / `banned`, 409 `archived`). Answers the attachment; it is shown to "
        "nobody until a message carries it (`attachments: [id]` in `message.send` or the REST "
        "post). 413 `too_large` over `ATTACHMENT_MAX_BYTES` (10 MB); 400 `empty_file` for an empty "
        "file; 415 `unsupported_type` unless the *content* is PNG, JPEG, GIF, WebP, PDF, ZIP or "
        "plain text and the name (as kept: without control or format characters) ends in an "
        "extension of that type (never HTML or SVG). Images are stored without EXIF and get a "
        "thumbnail. Throttled per user (`THROTTLE_UPLOAD_RATE`).",
        examples=[
            OpenApiExample(
                "An uploaded photo",
                response_only=True,
                status_codes=["201"],
                value={
                    "id": 31,
                    "name": "beach.jpg",
                    "size": 482113,
                    "content_type": "image/jpeg",
                    "url": "/api/attachments/31/beach.jpg",
                    "thumbnail_url": "/api/attachments/31/thumbnail/",
                    "width": 1600,
                    "height": 1200,
                },
            )
        ],
    )
    def post(self, request, room_slug=None):
        room = visible_room(request, room_slug)
        limit = attachments.max_bytes()
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > limit + 64 * 1024:  # before reading the body
            raise attachments.TooLarge(f"A file is at most {limit // (1024 * 1024)} MB.", max_bytes=limit)
        upload = request.FILES.get("file")
        if upload is None:
            raise exceptions.ValidationError({"file": [_("Send the file in the multipart field `file`.")]})
        attachment = attachments.attachment_upload(room=room, user=request.user, upload=upload)
        return Response(AttachmentSerializer(attachment).data, status=status.HTTP_201_CREATED)


def _file_response(request, attachment_id: int, *, thumbnail: bool):
    from django.core.files.storage import default_storage
    from django.http import FileResponse

    attachment = attachments.attachment_readable(user=request.user, attachment_id=attachment_id)
    if thumbnail and not attachment.thumbnail:
        raise services.NotFound("No such attachment.")
    image = attachment.content_type in attachments.IMAGE_TYPES
    if thumbnail:
        content_type = "image/png" if attachment.thumbnail.endswith(".png") else "image/jpeg"
        response = FileResponse(default_storage.open(attachment.thumbnail), content_type=content_type)
    else:
        content_type = attachment.content_type + (
            "; charset=utf-8" if attachment.content_type == "text/plain" else ""
        )
        response = FileResponse(
            default_storage.open(attachment.file),
            content_type=content_type,
            as_attachment=not image,
            filename=attachment.name,
        )
        if image:  # shown inline in the page; saved under its name
            response.headers["Content-Disposition"] = (
                response.headers.get("Content-Disposition", "").replace("attachment", "inline") or "inline"
            )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


_BINARY = OpenApiResponse(response=OpenApiTypes.BINARY, description="The file.")


class AttachmentDownloadView(APIView):
    """``GET /api/attachments/<id>/<name>``: the file, if the caller may read its room now
    (``rooms.attachments.attachment_readable``; else 404). ``<name>`` is the attachment's name
    (any other text answers the same file: it only names the download)."""

    @extend_schema(
        responses={(200, "*/*"): _BINARY, 404: None},
        description="The file: images inline with their type, anything else with "
        "`Content-Disposition: attachment`; always `X-Content-Type-Options: nosniff` and a "
        "sandboxing `Content-Security-Policy`. 404 unless the caller may read the room "
        "now (private: a member; banned: never), the message is not deleted, and an "
        "unsent upload is the caller's own.",
    )
    def get(self, request, attachment_id=None, name=None):
        return _file_response(request, attachment_id, thumbnail=False)


class AttachmentThumbnailView(APIView):
    """``GET /api/attachments/<id>/thumbnail/``: an image attachment's thumbnail (JPEG or PNG,
    at most 400 pixels a side), under the download's rule."""

    @extend_schema(responses={(200, "image/*"): _BINARY, 404: None})
    def get(self, request, attachment_id=None):
        return _file_response(request, attachment_id, thumbnail=True)
