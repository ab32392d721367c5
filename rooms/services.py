"""Writes. Every change to rooms, memberships and messages goes through a function here, so each
way in (WebSocket consumer, REST API, pages, Django admin, management commands) checks the same
rules and broadcasts the same way: inside one transaction, with the broadcast registered by
``transaction.on_commit`` (no row, no broadcast).

Refusals raise a ``ServiceError`` subclass; each carries a ``code`` (the WebSocket error code and
the REST ``code`` field) and an HTTP ``status``.
"""

import asyncio
import functools
import json
import math
import secrets
import string
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import Error as DjangoDatabaseError
from django.db import IntegrityError, connection, connections, router, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from psycopg_pool import PoolTimeout
from rest_framework.authtoken.models import Token

from chatsite import async_db, dbconn

from . import access, events, formatting, mentions, ratelimit, reactions, replies, search_index
from .models import (
    SLUG_MAX_LENGTH,
    SLUG_UNAVAILABLE,
    SLUG_UNAVAILABLE_CODE,
    Membership,
    Mention,
    Message,
    Room,
    SendWindow,
    normalize_slug,
    slug_from_name,
)
from .serializers import MembershipSerializer, MessageSerializer, message_data

Role = Membership.Role


class ServiceError(Exception):
    """A refused operation. ``code``: machine-readable, an English identifier in every language;
    ``status``: the HTTP status to answer.

    ``detail``: a sentence for people, marked for translation (``gettext_lazy``) with named
    ``params`` (``"%(until)s"``); ``detail`` reads it in English (sockets' error frames, whose
    ``code`` the page translates, and logs), ``localized_detail()`` in the active language
    (the API's answers, in the request's language: ``rooms.api.exception_handler``)."""

    code = "forbidden"
    status = 403

    def __init__(self, detail, *, params: dict | None = None, **extra):
        self.message = detail
        self.params = params or {}
        self.extra = extra
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        with translation.override("en"):
            return self.localized_detail()

    def localized_detail(self) -> str:
        text = str(self.message)
        return text % self.params if self.params else text


class NotFound(ServiceError):
    """The room or member does not exist *for this user* (a private room they are not in
    answers exactly like a room that does not exist)."""

    code, status = "not_found", 404


class MessageNotFound(ServiceError):
    """No message with that seq (or id) in the room: ``message_not_found`` (404; on a socket an
    error frame that keeps it open, unlike ``not_found``, which means the room is gone)."""

    code, status = "message_not_found", 404


class ReplyNotFound(ServiceError):
    """``reply_to`` names no message of the room, or a deleted one: nothing stored
    (``reply_not_found``, 400; on a socket an error frame that keeps it open)."""

    code, status = "reply_not_found", 400


class Forbidden(ServiceError):
    code, status = "forbidden", 403


class Banned(ServiceError):
    code, status = "banned", 403


class Muted(ServiceError):
    """Sends refused until ``extra["until"]`` (ISO 8601)."""

    code, status = "muted", 403


class RateLimited(ServiceError):
    """Over ``WS_SEND_RATE``: nothing stored. ``extra["retry_after"]``: seconds until the window
    ends; the detail text rounds it up to a tenth of a second (0.019 reads "wait 0.1 s", not
    "wait 0.0 s")."""

    code, status = "rate_limited", 429

    def __init__(self, retry_after: float):
        wait = math.ceil(round(retry_after * 10, 6)) / 10  # round: 0.3 * 10 is 3.0000000000000004
        super().__init__(
            _("Too many messages; wait %(wait)s s."), params={"wait": f"{wait:.1f}"}, retry_after=retry_after
        )


class Archived(ServiceError):
    code, status = "archived", 409


class Conflict(ServiceError):
    code, status = "conflict", 409


@dataclass(frozen=True)
class PostResult:
    """What ``message_post`` did: the stored ``message`` and whether this call ``created`` it
    (False: an earlier send with the same ``client_msg_id`` stored it, nothing new broadcast)."""

    message: Message
    created: bool


# --- permissions ----------------------------------------------------------------------------------


def _membership(room: Room, user: AbstractBaseUser) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(room=room, user=user).first()


MODERATOR_PERMISSIONS = ("rooms.change_message", "rooms.change_membership")


def is_site_moderator(user: AbstractBaseUser) -> bool:
    """Site moderators (Django admin): active staff with the permissions the ``Moderators``
    group grants, in every room."""
    return bool(user.is_active and user.is_staff and user.has_perms(MODERATOR_PERMISSIONS))


def _refuse_in_dm(room: Room, detail: str) -> None:
    """A direct message (``rooms.dms``) stays a private room of its two plain members: no one
    (a site moderator neither) adds, removes, mutes or bans a member, renames it, makes it
    public or archives it. Raises ``Forbidden`` with ``detail`` for a DM; checked before
    anything is changed."""
    if room.kind == Room.Kind.DM:
        raise Forbidden(detail)


def _require_moderator(room: Room, actor: AbstractBaseUser) -> Membership | None:
    membership = _membership(room, actor)
    if membership is not None and membership.can_moderate:
        return membership
    if is_site_moderator(actor):
        return membership
    raise Forbidden(_("Only the room's owner or a moderator may do this."))


def room_access(*, room: Room, user: AbstractBaseUser) -> Membership | None:
    """Check that ``user`` may read and join ``room``; returns their membership (None when a
    public room's visitor has none yet). Raises ``NotFound`` for a private room they are not a
    member of, ``Banned`` when banned (``NotFound`` in a private room, whose existence must not
    leak)."""
    membership = _membership(room, user)
    if membership is not None and membership.is_banned:
        if room.is_private:
            raise NotFound(_("No such room."))
        raise Banned(_("You are banned from this room."))
    if room.is_private and membership is None:
        raise NotFound(_("No such room."))
    return membership


# --- messages -------------------------------------------------------------------------------------


def _next_seq(room_id: int) -> int:
    """Increment and return the room's ``last_seq`` in the caller's transaction.

    The UPDATE takes the room row's lock until commit, so concurrent senders to one room, on any
    node, get consecutive numbers; a rolled-back send also rolls back its number (no gap).
    Raises ``Archived`` for an archived room and ``Room.DoesNotExist`` when the room is gone.
    """
    table = connection.ops.quote_name(Room._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + 1 WHERE id = %s AND archived_at IS NULL"
            " RETURNING last_seq",
            [room_id],
        )
        row = cursor.fetchone()
    if row is None:
        if Room.objects.filter(pk=room_id).exists():
            raise Archived(_("The room is archived: it keeps its history but takes no new messages."))
        raise Room.DoesNotExist(f"room {room_id} does not exist")
    return row[0]


def _find_sent(*, room: Room, author: AbstractBaseUser, client_msg_id: str) -> Message | None:
    """The message ``author`` already sent to ``room`` with ``client_msg_id``, loaded for its
    wire shape here (mentions, reactions and attachments too), so that ``message_data`` of it
    makes no query: ``message_post_async`` builds the broadcast of a retried send on the event
    loop, where no query may run."""
    from .attachments import attach as attach_attachments

    message = (
        Message.objects.select_related("author", "room", "reply_to__author")
        .filter(room=room, author=author, client_msg_id=client_msg_id)
        .first()
    )
    if message is not None:
        attach_attachments(reactions.attach(mentions.attach([message])))
    return message


def _check_may_send(room: Room, author: AbstractBaseUser) -> Membership | None:
    """Raises ``NotFound``, ``Banned`` or ``Muted`` when ``author`` may not send to ``room`` now;
    returns their membership (None: a public room's visitor without one yet). Reads the
    membership fresh from the database, so a ban or mute made on any node applies to the very
    next send."""
    membership = room_access(room=room, user=author)
    if membership is not None and membership.muted_now():
        until = _iso(membership.muted_until)
        raise Muted(_("You are muted in this room until %(until)s."), params={"until": until}, until=until)
    return membership


def check_may_upload(*, room: Room, user: AbstractBaseUser) -> None:
    """The rules of sending, for an upload into ``room`` (``rooms.attachments``): ``NotFound``,
    ``Banned``, ``Muted`` as ``message_post``, ``Archived`` for an archived room."""
    _check_may_send(room, user)
    if room.is_archived:
        raise Archived(_("The room is archived: it keeps its history but takes no new messages."))


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _check_same_send(sent: Message, body: str) -> None:
    """A retry must carry the same body as the stored send (unless it was edited or deleted
    since); a different body under a used ``client_msg_id`` is a client bug, refused with
    ``Conflict`` rather than silently answered with the other message."""
    if sent.body != body and sent.edited_at is None and sent.deleted_at is None:
        raise Conflict(
            _("This client_msg_id was already used for a different message; use a new id."),
            id=sent.pk,
            seq=sent.seq,
        )


def _columns(*, limited: bool, mentioning: bool, replying: bool) -> list[str]:
    """The names of ``_post_sql``'s answer columns, in order."""
    return (
        ["id", "seq"]
        + (["count"] if limited else [])
        + (["mentions"] if mentioning else [])
        + (["reply_count", "parent"] if replying else [])
    )


@functools.cache
def _post_sql(
    credentials: str = "", limited: bool = False, mentioning: bool = False, replying: bool = False
) -> str:
    """One statement that checks the author may send, takes the room's next ``seq``, stores the
    message, moves the author's read marker to it (``rooms.reads``: your own message is read)
    and makes a public room's visitor a member (marker at the message): PostgreSQL's
    data-modifying CTEs. No row
    back means "not this way" (refused, archived, no such room, and with ``credentials`` also
    an inactive user or a revoked token): the callers then take the step-by-step path, which
    says why.

    ``credentials``: ``""`` (no check: the caller checked), ``"user"`` (the author is still
    active) or ``"token"`` (that, and the API token ``%(token)s`` is still the author's).

    ``limited``: also count the send in the author's ``SendWindow`` (window ``%(period)s``
    seconds long, number ``%(bucket)s``) and store nothing past ``%(limit)s`` sends in it. The
    statement then always answers one row, ``(id, seq, count)``, with id and seq NULL when
    nothing was stored. The user's window row is locked before the room's row, in every send.

    ``mentioning`` (the body has ``@``: ``rooms.mentions.parse``): also store ``Message.
    mentions_room`` (``%(mentions_room)s``) and a ``Mention`` row per (not banned) member other
    than the author whose lower-cased username is in ``%(names)s``; the last column answered is
    then those members as JSON text, ``[{"id", "username"}]`` by id, or NULL for none. Without
    ``@`` none of this is in the statement.

    ``replying`` (``reply_to`` given, ``rooms.replies``): the parent, the room's message
    ``%(reply_to)s`` not deleted, is locked and must exist (else no row: the step-by-step path
    says ``reply_not_found``); the message stores it as ``reply_to_id``, the parent's
    ``reply_count`` goes up by one, and two more columns answer its new ``reply_count`` and the
    ``parent`` preview as JSON text, with the parent's ``body_html`` for its excerpt
    (``replies.from_statement``). The answer's columns: ``_columns``."""
    quote = connections["default"].ops.quote_name
    room_t, member_t, message_t = (quote(m._meta.db_table) for m in (Room, Membership, Message))
    who, may, mentioned, answer, replied = "", "", "", "", ""
    if limited:
        window_t = quote(SendWindow._meta.db_table)
        who = f"""rl AS (
            INSERT INTO {window_t} AS w (user_id, period, bucket, count)
            VALUES (%(user)s, %(period)s, %(bucket)s, 1)
            ON CONFLICT (user_id) DO UPDATE SET
                count = CASE WHEN w.period = EXCLUDED.period AND w.bucket = EXCLUDED.bucket
                             THEN w.count + 1 ELSE 1 END,
                period = EXCLUDED.period, bucket = EXCLUDED.bucket
            RETURNING count
        ), """
        may = "AND (SELECT count FROM rl) <= %(limit)s"
    if credentials:
        user_t = quote(get_user_model()._meta.db_table)
        token_check = ""
        if credentials == "token":
            token_t = quote(Token._meta.db_table)
            token_check = f"AND EXISTS (SELECT 1 FROM {token_t} WHERE key = %(token)s AND user_id = %(user)s)"
        who += f"who AS (SELECT 1 FROM {user_t} WHERE id = %(user)s AND is_active {token_check}), "
        may += " AND EXISTS (SELECT 1 FROM who)"
    if replying:
        user_t = quote(get_user_model()._meta.db_table)
        who += f"""p AS (
            SELECT pm.id, pm.seq, pm.author_id, pm.body_html
            FROM {message_t} pm
            WHERE pm.room_id = %(room)s AND pm.seq = %(reply_to)s AND pm.deleted_at IS NULL FOR UPDATE
        ), """
        may += " AND EXISTS (SELECT 1 FROM p)"
        replied = f""", replied AS (
            UPDATE {message_t} SET reply_count = reply_count + 1
            WHERE id = (SELECT id FROM p) AND EXISTS (SELECT 1 FROM msg)
            RETURNING reply_count
        )"""
    if mentioning:
        user_t, mention_t = quote(get_user_model()._meta.db_table), quote(Mention._meta.db_table)
        mentioned = f""", targets AS (
            SELECT u.id, u.username FROM {member_t} mm JOIN {user_t} u ON u.id = mm.user_id
            WHERE mm.room_id = %(room)s AND mm.banned_at IS NULL AND mm.user_id <> %(user)s
              AND lower(u.username) = ANY(%(names)s)
        ), mi AS (
            INSERT INTO {mention_t} (message_id, user_id, room_id) SELECT msg.id, targets.id, %(room)s
            FROM msg, targets
        )"""
        answer = """, (SELECT json_agg(json_build_object('id', t.id, 'username', t.username) ORDER BY t.id)::text
                      FROM targets t WHERE EXISTS (SELECT 1 FROM msg))"""
    if replying:
        answer += f""", (SELECT reply_count FROM replied), (SELECT json_build_object(
                'seq', p.seq, 'author', json_build_object('id', u.id, 'username', u.username,
                                                          'display_name', u.first_name),
                'body_html', p.body_html, 'deleted', false)::text
            FROM p JOIN {user_t} u ON u.id = p.author_id WHERE EXISTS (SELECT 1 FROM msg))"""
    return f"""
        WITH {who}m AS (
            SELECT banned_at, muted_until FROM {member_t} WHERE room_id = %(room)s AND user_id = %(user)s
        ), s AS (
            UPDATE {room_t} SET last_seq = last_seq + 1
            WHERE id = %(room)s AND archived_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM m WHERE banned_at IS NOT NULL OR muted_until > %(now)s)
              AND (NOT is_private OR EXISTS (SELECT 1 FROM m)) {may}
            RETURNING last_seq
        ), msg AS (
            INSERT INTO {message_t}
                (room_id, seq, author_id, body, client_msg_id, server_id, created_at,
                 edited_at, deleted_at, deleted_by_id, mentions_room, body_html, reply_to_id)
            SELECT %(room)s, last_seq, %(user)s, %(body)s, %(client_msg_id)s, %(server_id)s, %(now)s,
                   NULL, NULL, NULL, {"%(mentions_room)s" if mentioning else "FALSE"}, %(body_html)s,
                   {"(SELECT id FROM p)" if replying else "NULL"}
            FROM s
            RETURNING id, seq
        ), seen AS (
            UPDATE {member_t} SET last_read_seq = msg.seq FROM msg
            WHERE room_id = %(room)s AND user_id = %(user)s AND last_read_seq < msg.seq
        ), joined AS (
            INSERT INTO {member_t} (room_id, user_id, role, joined_at, muted_until, banned_at, last_read_seq)
            SELECT %(room)s, %(user)s, %(role)s, %(now)s, NULL, NULL, seq FROM msg
            WHERE NOT EXISTS (SELECT 1 FROM m)
            ON CONFLICT (room_id, user_id) DO NOTHING
        ){mentioned}{replied}
        {
        "SELECT (SELECT id FROM msg), (SELECT seq FROM msg), (SELECT count FROM rl)"
        if limited
        else "SELECT (SELECT id FROM msg), (SELECT seq FROM msg)"
        if mentioning or replying
        else "SELECT id, seq FROM msg"
    }{answer}
    """


def _post_in_one_statement(
    *, room: Room, author: AbstractBaseUser, body: str, client_msg_id: str, reply_to: int | None = None
) -> Message | None:
    """The usual send in one database round trip (PostgreSQL): the stored message, with its
    broadcast registered on commit, or None when the send is not plainly allowed. Outside a
    transaction the statement is its own; inside one (a test, a caller's ``atomic``) it runs in
    a savepoint, so a duplicate ``client_msg_id`` (``IntegrityError``) leaves the caller's
    transaction usable."""
    now = timezone.now()
    params = {
        "room": room.pk,
        "user": author.pk,
        "body": body,
        "client_msg_id": client_msg_id,
        "server_id": settings.SERVER_ID,
        "now": now,
        "role": Role.MEMBER,
    }
    parsed = mentions.parse(body)
    mentioning = _mention_params(parsed, params)
    params["body_html"] = formatting.render(body, parsed)
    replying = reply_to is not None
    params["reply_to"] = reply_to
    with transaction.atomic() if connection.in_atomic_block else _no_transaction():
        with connection.cursor() as cursor:
            cursor.execute(_post_sql(mentioning=mentioning, replying=replying), params)
            row = cursor.fetchone()
        if row is None or row[0] is None:
            return None
        message = _posted(
            dict(zip(_columns(limited=False, mentioning=mentioning, replying=replying), row)),
            room=room,
            author=author,
            body=body,
            client_msg_id=client_msg_id,
            now=now,
            parsed=parsed,
            body_html=params["body_html"],
        )
        message._state.db = connection.alias
        data = message_data(message)
        transaction.on_commit(
            partial(events.broadcast_message, room_id=room.pk, seq=message.seq, message_data=data)
        )
        _notify_mentioned(message, data)
        _notify_thread(message)
    return message


def _notify_thread(message: Message, *, now: bool = False) -> None:
    """``thread.updated`` for the parent of a reply stored by ``_post_sql`` (after commit, or
    at once from the event loop's send)."""
    parent = getattr(message, "parent_preview", None)
    if parent is None:
        return
    send = partial(
        events.broadcast_thread_updated,
        room_id=message.room.pk,
        room_slug=message.room.slug,
        seq=parent["seq"],
        reply_count=message.parent_reply_count,
    )
    send() if now else transaction.on_commit(send)


def _mention_params(parsed: "mentions.Parsed", params: dict) -> bool:
    """Add the mention parameters of ``_post_sql`` for a body with ``@``; returns whether the
    statement is the mentioning one (a body without ``@`` keeps the plain statement)."""
    if parsed is mentions.NOTHING:
        return False
    params.update(mentions_room=parsed.room, names=list(parsed.names))
    return True


_MESSAGE_FIELDS = [field.attname for field in Message._meta.concrete_fields]
_MESSAGE_ROOM = Message._meta.get_field("room")
_MESSAGE_AUTHOR = Message._meta.get_field("author")
# What a stored send's Message holds besides its answer: each field's own default, as the
# keyword form gave it (a field whose default is computed per instance is left out: ``_posted``
# must give it, else its first send is a KeyError).
_MESSAGE_DEFAULTS = {
    field.attname: field.get_default()
    for field in Message._meta.concrete_fields
    if not (field.has_default() and callable(field.default))
}


def _posted(
    row: dict,
    *,
    room: Room,
    author: AbstractBaseUser,
    body: str,
    client_msg_id: str,
    now: datetime,
    parsed: "mentions.Parsed",
    body_html: str,
) -> Message:
    """The ``Message`` stored by ``_post_sql``, from its answer ``row`` by column name
    (``_columns``): its mentions, and for a reply its parent's preview and new reply count."""
    values = {
        **_MESSAGE_DEFAULTS,
        "id": row["id"],
        "room_id": room.pk,
        "seq": row["seq"],
        "author_id": author.pk,
        "body": body,
        "client_msg_id": client_msg_id,
        "server_id": settings.SERVER_ID,
        "created_at": now,
        "mentions_room": parsed.room,
        "body_html": body_html,
    }
    # Positional, in the model's field order: Django's __init__ takes 7 µs that way against
    # 20-24 µs by keyword.
    message = Message(*[values[name] for name in _MESSAGE_FIELDS])
    _MESSAGE_ROOM.set_cached_value(message, room)
    _MESSAGE_AUTHOR.set_cached_value(message, author)
    message._state.adding = False
    message._state.db = room._state.db or router.db_for_write(Message, instance=room)  # as ``room=`` did
    message.mention_list = json.loads(row["mentions"]) if row.get("mentions") else []
    if row.get("parent"):
        message.parent_preview = replies.from_statement(json.loads(row["parent"]))
        message.parent_reply_count = row["reply_count"]
    message.reaction_list = []  # a new message has none (no query for its shape)
    message.attachment_list = []  # a send with attachments never takes the one statement
    return message


def _notify_mentioned(message: Message, data: dict) -> None:
    """After commit: ``mention`` to each member ``message`` mentions by ``@username``."""
    user_ids = [m["id"] for m in message.mention_list]
    if user_ids:
        transaction.on_commit(
            partial(
                events.broadcast_mention, user_ids=user_ids, room_slug=message.room.slug, message_data=data
            )
        )


@contextmanager
def _no_transaction():
    yield


def message_post(
    *,
    room: Room,
    author: AbstractBaseUser,
    body: str,
    client_msg_id: str,
    reply_to: int | None = None,
    attachments: list[int] | tuple = (),
) -> PostResult:
    """Store a message in ``room`` and broadcast it to every member on every node after commit.

    ``body`` and ``client_msg_id`` must already be validated (``MessageSendFrame``). The message
    gets the room's next ``seq`` and this node's ``SERVER_ID``. Idempotent: when ``author`` already
    sent ``client_msg_id`` to ``room``, returns that message with ``created=False`` and stores and
    broadcasts nothing (also when the author has been muted since). ``reply_to``: the seq of the
    message of ``room`` this one answers (``rooms.replies``; ``ReplyNotFound`` when there is none
    or it is deleted). Raises ``Archived``, ``NotFound``, ``Banned`` or ``Muted`` when the
    author may not send; database errors
    (``django.db.DatabaseError``, ``psycopg_pool.PoolTimeout``) propagate: then nothing was
    stored and nothing is broadcast.

    ``attachments``: ids of the author's unsent uploads in ``room`` (``rooms.attachments``), given
    to the message in its transaction; one that is not raises ``InvalidAttachment`` and nothing is
    stored (a retry of a stored ``client_msg_id`` answers the stored message, as always).
    """
    try:
        if connection.vendor == "postgresql" and author.is_authenticated and not attachments:
            message = _post_in_one_statement(
                room=room, author=author, body=body, client_msg_id=client_msg_id, reply_to=reply_to
            )
            if message is not None:
                return PostResult(message=message, created=True)
        with transaction.atomic():
            membership = _check_may_send(room, author)
            parent = None
            if reply_to is not None:
                parent = replies.find_parent(room_id=room.pk, seq=reply_to)
                if parent is None or parent.deleted_at is not None:
                    raise ReplyNotFound(
                        _("No message %(seq)s to reply to in this room (it was deleted).")
                        if parent is not None
                        else _("No message %(seq)s to reply to in this room."),
                        params={"seq": reply_to},
                    )
            seq = _next_seq(room.pk)
            parsed = mentions.parse(body)
            message = Message.objects.create(
                room=room,
                author=author,
                body=body,
                client_msg_id=client_msg_id,
                seq=seq,
                server_id=settings.SERVER_ID,
                mentions_room=parsed.room,
                body_html=formatting.render(body, parsed),
                reply_to=parent,
            )
            mentions.store(message=message, parsed=parsed)
            message.reaction_list = []
            if parent is not None:
                replies.count_reply(parent=parent, room_slug=room.slug)
            if attachments:
                from .attachments import attachments_claim

                attachments_claim(message=message, user=author, ids=list(attachments))
            else:
                message.attachment_list = []
            if membership is None:  # a public room's visitor becomes a member by speaking
                _membership, joined = Membership.objects.get_or_create(
                    room=room, user=author, defaults={"last_read_seq": seq}
                )
                if joined:
                    transaction.on_commit(partial(events.broadcast_rooms_changed, user_ids=[author.pk]))
            # Your own message is read (rooms.reads).
            Membership.objects.filter(room=room, user=author, last_read_seq__lt=seq).update(last_read_seq=seq)
            data = message_data(message)
            transaction.on_commit(
                partial(events.broadcast_message, room_id=room.pk, seq=seq, message_data=data)
            )
            _notify_mentioned(message, data)
    except (IntegrityError, ServiceError):
        # IntegrityError: the same client_msg_id was stored before (a retry), or by a concurrent
        # send that committed first: the unique constraint refused the row and the rollback took
        # back the seq. (Trying the insert first saves a query per send.) ServiceError: a refusal
        # (muted since, say) that does not apply to a retry of a send already stored. Either way
        # the stored message is the answer; with none, the error stands.
        sent = _find_sent(room=room, author=author, client_msg_id=client_msg_id)
        if sent is None:
            raise
        _check_same_send(sent, body)
        return PostResult(message=sent, created=False)
    return PostResult(message=message, created=True)


class Unauthenticated(ServiceError):
    """The sender's account was deactivated or the API token of their socket revoked."""

    code, status = "unauthenticated", 401


def credentials_valid(*, user: AbstractBaseUser, token_key: str | None) -> bool:
    """Whether ``user`` is still active and, for a token-authenticated socket, ``token_key`` is
    still theirs (one query)."""
    if token_key is not None:
        return Token.objects.filter(key=token_key, user_id=user.pk, user__is_active=True).exists()
    return get_user_model().objects.filter(pk=user.pk, is_active=True).exists()


def _message_post_checked(
    *,
    room: Room,
    author: AbstractBaseUser,
    token_key: str | None,
    body: str,
    client_msg_id: str,
    reply_to: int | None = None,
    attachments: list[int] | tuple = (),
) -> PostResult:
    if not credentials_valid(user=author, token_key=token_key):
        raise Unauthenticated(_("The credentials of this socket are no longer valid."))
    try:
        return message_post(
            room=room,
            author=author,
            body=body,
            client_msg_id=client_msg_id,
            reply_to=reply_to,
            attachments=attachments,
        )
    except Room.DoesNotExist:
        raise NotFound(_("The room no longer exists.")) from None


# Sends of one room on this node go through the statement one at a time (the room's row lock in
# PostgreSQL orders them anyway), so their broadcasts are queued in seq order.
_room_locks: "weakref.WeakValueDictionary[tuple, asyncio.Lock]" = weakref.WeakValueDictionary()


async def message_post_async(
    *,
    room: Room,
    author: AbstractBaseUser,
    token_key: str | None,
    body: str,
    client_msg_id: str,
    send_rate: str | None = None,
    reply_to: int | None = None,
    attachments: list[int] | tuple = (),
) -> PostResult:
    """``message_post`` for a member's socket, from the event loop: re-checks the socket's
    credentials (``token_key``: the API token it was opened with, or None for a session) and
    stores the message in one PostgreSQL statement sent from the loop's own pool
    (``chatsite.async_db``), with no hop to the database thread; the broadcast is queued on the
    loop right after the statement commits, in ``seq`` order for this node.

    Anything that is not a plain allowed send (a retry of a stored ``client_msg_id``, a refusal,
    SQLite) takes ``message_post`` on the database thread, which answers it: the same
    ``PostResult`` and the same errors, plus ``Unauthenticated`` when the account was
    deactivated or the token revoked, and ``NotFound`` when the room was deleted. Database
    errors propagate (``psycopg.Error``, ``psycopg_pool.PoolTimeout``, or Django's
    ``DatabaseError`` from the fallback): then nothing was broadcast, and the message may or may
    not be stored; the client sends it again with the same ``client_msg_id``, which stores it
    once (and broadcasts it then if an attempt that failed here had stored it).

    Time limit: the whole step (waiting behind this room's earlier sends, the pool, the
    statement, and one retry on a fresh connection when the first turned out dead after a
    PostgreSQL restart) ends within ``DATABASE_STATEMENT_TIMEOUT`` + 0.25 s
    (``async_db.deadline``); past it a ``psycopg`` error or ``PoolTimeout`` is raised.

    ``send_rate`` (``WS_SEND_RATE``, e.g. ``"20/s"``; None or ``"0"``: no limit) limits the
    author's sends over every node and socket: counted in the same statement (``SendWindow``),
    or with SQLite in the Django cache (``ratelimit.ahit``). Over it: ``RateLimited``, nothing
    stored. Attempts count, refused ones included; a retry of a stored ``client_msg_id`` is not
    added (its statement rolls back), though the consumer's per-socket window counts it.

    A send with ``attachments`` takes ``message_post`` on the database thread (the attachments are
    claimed in its transaction), its rate counted in the Django cache as with SQLite."""
    from channels.db import database_sync_to_async

    async def fallback() -> PostResult:
        call = database_sync_to_async(_message_post_checked)
        kwargs = {
            "room": room,
            "author": author,
            "token_key": token_key,
            "body": body,
            "client_msg_id": client_msg_id,
            "reply_to": reply_to,
            "attachments": attachments,
        }
        try:
            return await call(**kwargs)
        except DjangoDatabaseError as exc:  # idempotent: once more when its connection was dead
            if not dbconn.connection_lost(exc):
                raise
        return await call(**kwargs)

    limit = ratelimit.parse_rate(send_rate) if send_rate else None
    if not async_db.available() or attachments:
        if limit is not None:
            retry_after = await ratelimit.ahit(f"ws-send:{author.pk}", send_rate)
            if retry_after is not None:
                raise RateLimited(retry_after)
        return await fallback()
    now = timezone.now()
    params = {
        "room": room.pk,
        "user": author.pk,
        "token": token_key,
        "body": body,
        "client_msg_id": client_msg_id,
        "server_id": settings.SERVER_ID,
        "now": now,
        "role": Role.MEMBER,
    }
    window = None
    if limit is not None:
        window = ratelimit.Window(f"ws-send:{author.pk}", *limit)
        params.update(period=window.seconds, bucket=window.bucket, limit=window.limit)
    parsed = mentions.parse(body)
    mentioning = _mention_params(parsed, params)
    params["body_html"] = formatting.render(body, parsed)
    replying = reply_to is not None
    params["reply_to"] = reply_to
    sql = _post_sql(
        "token" if token_key is not None else "user",
        limited=window is not None,
        mentioning=mentioning,
        replying=replying,
    )
    key = (id(asyncio.get_running_loop()), room.pk)
    lock = _room_locks.get(key)
    if lock is None:
        lock = _room_locks[key] = asyncio.Lock()
    unsure_key = (room.pk, author.pk, client_msg_id)
    with async_db.deadline():
        if lock.locked():  # the budget covers the wait behind this room's other sends too
            try:
                await asyncio.wait_for(lock.acquire(), async_db.remaining())
            except TimeoutError:
                raise PoolTimeout("this room's earlier sends are still waiting for the database") from None
        else:
            await lock.acquire()
        try:
            try:
                row = await _store(sql, params, room=room.pk, unsure_key=unsure_key)
            except (
                psycopg.IntegrityError
            ) as exc:  # a retry of a stored client_msg_id: the fallback answers it
                row = None
                if getattr(exc, "chatsite_retried", False):  # stored by this call's first attempt?
                    _unsure_sends.add(unsure_key)
            except PoolTimeout:
                raise  # never sent
            except psycopg.Error:
                _unsure_sends.add(unsure_key)  # it may have committed after we gave up on it
                raise
            if window is not None and row is not None and row[0] is None:  # counted, not stored
                retry_after = window.retry_after(row[2])
                if retry_after is not None:
                    raise RateLimited(retry_after)
                row = None
            if row is not None and row[0] is None:  # (mentioning) not stored
                row = None
            if row is None:
                result = await fallback()
                if not result.created and _unsure_sends.pop(unsure_key):
                    # Stored by an attempt whose answer was lost (the connection died or went
                    # silent after the statement was sent): it was never broadcast.
                    events.broadcast_message(
                        room_id=room.pk, seq=result.message.seq, message_data=message_data(result.message)
                    )
                return result
            _unsure_sends.pop(unsure_key)
            columns = _columns(limited=window is not None, mentioning=mentioning, replying=replying)
            message = _posted(
                dict(zip(columns, row)),
                room=room,
                author=author,
                body=body,
                client_msg_id=client_msg_id,
                now=now,
                parsed=parsed,
                body_html=params["body_html"],
            )
            data = message_data(message)
            events.broadcast_message(room_id=room.pk, seq=message.seq, message_data=data)
            search_index.note_stored(len(body))  # its keys wait in the GIN pending lists
            _notify_thread(message, now=True)
            if message.mention_list:
                events.broadcast_mention(
                    user_ids=[m["id"] for m in message.mention_list], room_slug=room.slug, message_data=data
                )
        finally:
            lock.release()
    return PostResult(message=message, created=True)


async def _store(sql: str, params: dict, *, room: int, unsure_key: tuple):
    """The send's statement, grouped with the other sends of this node in flight at the same time
    (``async_db.fetchone_grouped``: one transaction, in room order); a group that did not
    commit is followed by this send's statement alone (``async_db.fetchone``), marked unsure
    first when the group may have committed. Raises as ``async_db.fetchone`` does; the caller's
    wait past its deadline is a ``psycopg.OperationalError`` (its statement may have been sent)."""
    try:
        return await async_db.fetchone_grouped(sql, params, order=room, timeout=async_db.remaining())
    except async_db.GroupFailed as failed:
        if failed.unsure:
            _unsure_sends.add(unsure_key)
        left = async_db.remaining()
        if not failed.unsure and left is not None and left < _ALONE_MIN_TIME:
            raise PoolTimeout("no time left to store the send alone after its group failed") from None
    except TimeoutError:
        raise psycopg.OperationalError("the send's grouped statement did not finish in time") from None
    except asyncio.CancelledError:  # the socket's task ended: its statement may commit unseen
        _unsure_sends.add(unsure_key)
        raise
    return await async_db.fetchone(sql, params)


# Seconds a send needs at least to run alone after its group failed: with less, a round trip
# would be cut short, and the connection taken for dead (the pool drained); it is answered
# ``unavailable`` (nothing stored) instead, and the client sends it again.
_ALONE_MIN_TIME = 0.1


class _UnsureSends:
    """Sends of this node whose statement failed after it was sent (``(room, author,
    client_msg_id)``, the latest 10,000): when the client's retry finds one stored, it was
    stored but never broadcast, and the retry broadcasts it."""

    def __init__(self, size: int = 10_000):
        from collections import OrderedDict

        self.size = size
        self.keys: OrderedDict[tuple, None] = OrderedDict()

    def add(self, key: tuple) -> None:
        self.keys[key] = None
        self.keys.move_to_end(key)
        while len(self.keys) > self.size:
            self.keys.popitem(last=False)

    def pop(self, key: tuple) -> bool:
        return self.keys.pop(key, 0) is None


_unsure_sends = _UnsureSends()


def check_may_edit(message: Message, actor: AbstractBaseUser) -> None:
    """The checks of ``message_edit`` on a locked (or freshly read) ``message`` with its room:
    raises ``Forbidden``, ``Conflict``, ``Archived``, ``NotFound``, ``Banned`` or ``Muted``.
    Only its author edits a message, everywhere (REST, the room page, Django admin shows bodies
    read-only), and only while they may send to the room (an edit puts new text in front of the
    room, as a send does). Moderators, of the room or the site, delete; they never rewrite what
    someone else wrote (``Forbidden``)."""
    if message.author_id != actor.pk:
        raise Forbidden(_("Only the author may edit a message; moderators delete instead."))
    if message.deleted_at is not None:
        raise Conflict(_("The message was deleted."))
    if message.room.is_archived:
        raise Archived(_("The room is archived."))
    _check_may_send(message.room, actor)


def message_edit(*, message: Message, actor: AbstractBaseUser, body: str) -> Message:
    """Replace a message's body (its author only; ``edited_at`` set) and broadcast
    ``message.updated`` to the room after commit. Raises ``Forbidden`` for anyone else, room and
    site moderators included (they delete: ``message_delete``), ``Conflict`` for a deleted
    message, ``Archived`` in an archived room. The author edits under the rule of sending:
    ``Muted`` (with ``until``) while muted, ``Banned`` when banned from a public room,
    ``NotFound`` for a private room they are no longer in (or are banned from). A refused edit
    changes and broadcasts nothing.

    Edits of one message are serialised by its row lock, and each gets an ``edited_at`` later
    than the one before (by 1 µs if this node's clock is behind the last editor's), so a client
    that keeps the ``message.updated`` with the latest ``edited_at`` ends with the stored body,
    whatever order the frames of racing edits on several nodes arrive in."""
    with transaction.atomic():
        message = Message.objects.select_for_update().select_related("room").get(pk=message.pk)
        check_may_edit(message, actor)
        message.body = body
        edited_at = timezone.now()
        if message.edited_at is not None and edited_at <= message.edited_at:
            edited_at = message.edited_at + timedelta(microseconds=1)
        message.edited_at = edited_at
        newly_mentioned = mentions.store_edit(message=message)  # sets message.mentions_room
        message.body_html = formatting.render(body)
        message.save(update_fields=["body", "edited_at", "mentions_room", "body_html"])
        message = Message.objects.select_related("author", "room", "reply_to__author").get(pk=message.pk)
        data = MessageSerializer(message).data
        transaction.on_commit(
            partial(events.broadcast_message_updated, room_id=message.room_id, message_data=data)
        )
        if newly_mentioned:
            transaction.on_commit(
                partial(
                    events.broadcast_mention,
                    user_ids=newly_mentioned,
                    room_slug=message.room.slug,
                    message_data=data,
                )
            )
    return message


def _check_may_delete(message: Message, actor: AbstractBaseUser) -> None:
    """Who may delete ``message`` (the moderation hierarchy, ``_check_may_act_on``'s rule on
    the author's role in the room):

    - a site moderator: any message (content moderation site-wide, the owner's included);
    - its author: while they may read the room (muted authors may: deleting adds no text;
      ``Banned`` in a public room, ``NotFound`` in a private room they are not in);
    - the room's owner: any message in it; a room moderator: members' messages, not a fellow
      moderator's or the owner's (``Forbidden``)."""
    if is_site_moderator(actor):
        return
    if message.author_id == actor.pk:
        room_access(room=message.room, user=actor)
        return
    acting = _require_moderator(message.room, actor)
    author = Membership.objects.filter(room=message.room, user_id=message.author_id).first()
    if author is not None and author.role == Role.OWNER:
        raise Forbidden(_("Only the owner or a site moderator may delete the owner's messages."))
    if author is not None and author.role == Role.MODERATOR and not _is_owner_or_site(acting, actor):
        raise Forbidden(_("Only the owner may delete a moderator's messages."))


def message_delete(*, message: Message, actor: AbstractBaseUser) -> Message:
    """Soft-delete a message: the row and its ``seq`` stay, the body is shown to no one (site
    moderators still read it in Django admin). Allowed to its author (muted included; not when
    banned), the room's owner, room moderators for members' messages, and site moderators
    (``_check_may_delete``). Broadcasts ``message.deleted`` after commit; deleting a deleted
    message changes and broadcasts nothing. Raises ``Forbidden`` for anyone else, ``Banned`` /
    ``NotFound`` for a banned or removed author; a refusal changes nothing."""
    with transaction.atomic():
        message = Message.objects.select_for_update().select_related("room").get(pk=message.pk)
        _check_may_delete(message, actor)
        if message.deleted_at is None:
            message.deleted_at = timezone.now()
            message.deleted_by = actor if actor.is_authenticated else None
            message.save(update_fields=["deleted_at", "deleted_by"])
            replies.uncount_reply(reply=message, room_slug=message.room.slug)
            transaction.on_commit(
                partial(
                    events.broadcast_message_deleted,
                    room_id=message.room_id,
                    room_slug=message.room.slug,
                    message_id=message.pk,
                    seq=message.seq,
                    author_id=message.author_id,
                )
            )
    return message


# --- rooms ----------------------------------------------------------------------------------------


PRIVATE_SLUG_TOKEN_LENGTH = 12  # [a-z0-9]: 36**12, about 2**62 slugs to try per name


def _private_slug(name: str) -> str:
    """An unguessable slug for a private room made without one: the name's slug (if any) and
    12 random lower-case letters and digits, e.g. ``book-club-k3j9x2m4qz7p``."""
    token = "".join(
        secrets.choice(string.ascii_lowercase + string.digits) for _ in range(PRIVATE_SLUG_TOKEN_LENGTH)
    )
    base = slug_from_name(name)[: SLUG_MAX_LENGTH - PRIVATE_SLUG_TOKEN_LENGTH - 1].strip("-_")
    return f"{base}-{token}" if base else token


def room_create(
    *,
    name: str,
    created_by: AbstractBaseUser,
    slug: str = "",
    description: str = "",
    is_private: bool = False,
) -> Room:
    """Create a room, its creator as ``owner``. Without ``slug``: a public room's is
    ``slug_from_name(name)`` (letters of any script kept: "일반 대화방" → "일반-대화방"), a given slug
    NFKC-normalised (``normalize_slug``); a private room's is unguessable (``_private_slug``), so nobody can learn
    that a private room exists by trying to create one with the same slug. Raises
    ``django.core.exceptions.ValidationError`` with field errors when a field is invalid
    (``Room.clean``: the text rules of names and descriptions), and the one ``slug`` error
    ``SLUG_UNAVAILABLE`` (code ``slug_unavailable``) whenever the slug is taken by any room in
    any case (``General`` and ``general`` are one slug), visible to the caller or not, or
    reserved (``new``, a ``dm-`` prefix, in any case): the answer never says whether, or which,
    room holds it. The slug is kept as given (lookups by slug are exact)."""
    slug = normalize_slug(slug)
    if not slug and is_private:
        slug = _private_slug(name)
    slug = slug or slug_from_name(name)
    room = Room(
        name=name,
        slug=slug,
        description=description,
        created_by=created_by,
        is_private=is_private,
    )
    try:
        room.full_clean(exclude=["created_by"] if slug else ["created_by", "slug"])
        errors = {}
    except ValidationError as exc:
        errors = exc.error_dict  # ValidationErrors, with their codes (``slug_unavailable``)
    if not slug and "name" not in errors:  # a wrong name is the error to fix first
        errors["slug"] = [_("Choose a slug: one cannot be made from this name (it has no letter or digit).")]
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            room.save()
            Membership.objects.create(room=room, user=created_by, role=Role.OWNER)
            transaction.on_commit(partial(events.broadcast_rooms_changed, user_ids=[created_by.pk]))
    except IntegrityError:  # the same slug (in any case) saved by a concurrent create after the check
        if Room.objects.filter(slug__iexact=slug).exists():
            raise ValidationError(
                {"slug": [ValidationError(SLUG_UNAVAILABLE, code=SLUG_UNAVAILABLE_CODE)]}
            ) from None
        raise
    return room


ROOM_EDITABLE_FIELDS = ("name", "description", "is_private")


def room_update(*, room: Room, actor: AbstractBaseUser, **fields) -> Room:
    """Change ``name`` or ``description`` (owner or moderator) or ``is_private`` (the owner or a
    site moderator: making a private room public would show its history to everyone, and a
    moderator may not overrule the owner). Raises ``Forbidden`` otherwise and ``Archived`` for
    an archived room. Made private, the room's sockets of non-members close with 4404 on every
    node (``room_save``). A direct message cannot be changed (``Forbidden``)."""
    _refuse_in_dm(room, _("A direct message cannot be renamed, described or made public."))
    acting = _require_moderator(room, actor)
    if (
        "is_private" in fields
        and fields["is_private"] != room.is_private
        and not _is_owner_or_site(acting, actor)
    ):
        raise Forbidden(_("Only the owner may make the room private or public."))
    if room.is_archived:
        raise Archived(_("The room is archived."))
    unknown = set(fields) - set(ROOM_EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    for name, value in fields.items():
        setattr(room, name, value)
    room.full_clean(exclude=["created_by"])
    return room_save(room=room, update_fields=list(fields) or None)


def room_archive(*, room: Room, actor: AbstractBaseUser) -> Room:
    """Archive a room (the owner or a site moderator; there is no way back, so not a room
    moderator): history kept, no new messages; every open socket in it gets
    ``{"type": "room.archived"}`` and is closed with 4410 on every node. Idempotent. Not a
    direct message (``Forbidden``)."""
    _refuse_in_dm(room, _("A direct message cannot be archived."))
    if not _is_owner_or_site(_require_moderator(room, actor), actor):
        raise Forbidden(_("Only the owner may archive the room."))
    with transaction.atomic():
        updated = Room.objects.filter(pk=room.pk, archived_at__isnull=True).update(archived_at=timezone.now())
        if updated:
            transaction.on_commit(
                partial(events.broadcast_room_archived, room_id=room.pk, room_slug=room.slug)
            )
    room.refresh_from_db()
    return room


# --- members --------------------------------------------------------------------------------------


def _announce_member(
    room: Room, membership: Membership, user: AbstractBaseUser, joined: bool = False
) -> None:
    """On commit, the member's new state to everyone in the room, on every node
    (``member.updated``, ``events.broadcast_member_updated``; ``joined``: this write made the
    membership); serialised now, inside the caller's transaction, so the frame is the state
    this write made."""
    membership.user = user  # the caller's user object: no query for the member shape
    data = MembershipSerializer(membership).data
    transaction.on_commit(
        partial(
            events.broadcast_member_updated, room_id=room.pk, room_slug=room.slug, member=data, joined=joined
        )
    )


def _user_ref(user: AbstractBaseUser) -> dict:
    return {"id": user.pk, "username": user.get_username()}


def member_join(*, room: Room, user: AbstractBaseUser) -> Membership:
    """Join a public room (idempotent). Raises ``NotFound`` for a private room (members are added
    by its owner or moderators), ``Banned`` when banned, ``Archived`` for an archived room.
    The membership's ``created`` attribute says whether this call made it (False: already a
    member; REST answers 201 or 200 on it)."""
    if room.is_private:
        membership = room_access(room=room, user=user)  # a private room's non-member: NotFound
        membership.created = False
        return membership
    if room.is_archived:
        raise Archived(_("The room is archived."))
    # Every room socket's connect comes here (a join storm: once per socket), almost always for
    # a member already: one SELECT, outside a transaction. Only a new member costs more.
    try:
        membership, created = Membership.objects.get(room=room, user=user), False
    except Membership.DoesNotExist:
        # A new member has read what came before (rooms.reads): the backlog is not shown as
        # unread (the default is read only when the row is made).
        with transaction.atomic():
            membership, created = Membership.objects.get_or_create(
                room=room, user=user, defaults={"last_read_seq": lambda: _last_seq(room)}
            )
            if created:
                _announce_member(room, membership, user, joined=True)
                # their user sockets list the room (rooms.user_consumer)
                transaction.on_commit(partial(events.broadcast_rooms_changed, user_ids=[user.pk]))
    if membership.is_banned:
        raise Banned(_("You are banned from this room."))
    membership.created = created
    return membership


def _last_seq(room: Room) -> int:
    return Room.objects.filter(pk=room.pk).values_list("last_seq", flat=True).first() or 0


def member_leave(*, room: Room, user: AbstractBaseUser) -> None:
    """Leave a room (idempotent: leaving twice is fine). The user's open sockets in the room are
    closed with 4000 on every node. A banned member's row stays (so the ban holds). Raises
    ``Conflict`` for the owner (a room keeps its owner), and ``Muted`` (with ``until``) for a
    muted member of a public room: they could join again at once, and the mute, kept on the
    membership, would be gone (a private room's member is only let back in by a moderator).
    Nobody leaves a direct message (``Forbidden``: a left DM could never be joined again)."""
    _refuse_in_dm(room, _("You cannot leave a direct message."))
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(room=room, user=user).first()
        if membership is None or membership.is_banned:
            return
        if membership.role == Role.OWNER:
            raise Conflict(_("The owner cannot leave the room."))
        if not room.is_private and membership.muted_now():
            until = _iso(membership.muted_until)
            raise Muted(
                _("You are muted in this room until %(until)s; you can leave once it ends."),
                params={"until": until},
                until=until,
            )
        membership.delete()
        transaction.on_commit(
            partial(
                events.broadcast_member_removed,
                room_id=room.pk,
                user_id=user.pk,
                reason="left",
                room_slug=room.slug,
                user=_user_ref(user),
            )
        )


def member_add(
    *, room: Room, actor: AbstractBaseUser, user: AbstractBaseUser, role: str = Role.MEMBER
) -> Membership:
    """Add ``user`` to ``room`` as ``role`` (owner or moderator; the way into a private room).
    Only the owner (or a site moderator) adds moderators. For someone already a member, a
    different ``role`` is a role change, under ``member_set_role``'s rule: the owner's or a site
    moderator's, never on the owner (``Forbidden``); the same role changes nothing. Raises
    ``Conflict`` when ``user`` is banned (unban first), ``Archived`` for an archived room (no one
    joins it any more). A refusal changes nothing. A direct
    message takes no third member (``Forbidden``). The membership's ``created`` attribute says
    whether this call made it (REST: 201, else 200)."""
    _refuse_in_dm(room, _("A direct message has exactly two members; start a group room to add more."))
    acting = _require_moderator(room, actor)
    if room.is_archived:
        raise Archived(_("The room is archived: no one joins it any more."))
    if role not in (Role.MEMBER, Role.MODERATOR):
        raise Forbidden(_("Members can be added as member or moderator."))
    if role == Role.MODERATOR and not _is_owner_or_site(acting, actor):
        raise Forbidden(_("Only the owner may add moderators."))
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            room=room, user=user, defaults={"role": role, "last_read_seq": _last_seq(room)}
        )
        membership.created = created
        if created:
            _announce_member(room, membership, user, joined=True)
            transaction.on_commit(partial(events.broadcast_rooms_changed, user_ids=[user.pk]))
            return membership
        if membership.is_banned:
            raise Conflict(_("The user is banned from this room; unban them first."))
        if membership.role == role:
            return membership
        _check_may_act_on(acting, actor, membership)
        if not _is_owner_or_site(acting, actor):
            raise Forbidden(_("Only the owner may change roles."))
        membership.role = role
        membership.save(update_fields=["role"])
        _announce_member(room, membership, user)
    return membership


def _is_owner_or_site(acting: Membership | None, actor: AbstractBaseUser) -> bool:
    return (acting is not None and acting.role == Role.OWNER) or is_site_moderator(actor)


def _target(room: Room, user: AbstractBaseUser) -> Membership:
    """``user``'s membership of ``room``, locked until the caller's transaction ends (a role
    change racing the action cannot slip between its check and its write)."""
    membership = Membership.objects.select_for_update().filter(room=room, user=user).first()
    if membership is None:
        raise NotFound(_("No such member."))
    return membership


def _check_may_act_on(acting: Membership | None, actor: AbstractBaseUser, target: Membership) -> None:
    """The moderation hierarchy, for every action on a member (role change, mute, unmute, ban,
    unban; ``_check_may_delete`` applies it to their messages): nobody acts on the owner, not
    even a site moderator (site staff archive the room instead); only the owner or a site
    moderator acts on a moderator; nobody acts on themselves. Raises ``Forbidden``."""
    if target.role == Role.OWNER:
        raise Forbidden(_("The owner cannot be muted, banned, removed or have their role changed."))
    if target.role == Role.MODERATOR and not _is_owner_or_site(acting, actor):
        raise Forbidden(_("Only the owner may act on a moderator."))
    if target.user_id == actor.pk:
        raise Forbidden(_("You cannot act on yourself."))


def member_set_role(*, room: Room, actor: AbstractBaseUser, user: AbstractBaseUser, role: str) -> Membership:
    """Make a member a ``moderator`` or a ``member`` again (the owner only; not in a DM)."""
    _refuse_in_dm(room, _("Members of a direct message have no roles to change."))
    acting = _require_moderator(room, actor)
    if not _is_owner_or_site(acting, actor):
        raise Forbidden(_("Only the owner may change roles."))
    if role not in (Role.MEMBER, Role.MODERATOR):
        raise Forbidden(_("The role must be member or moderator."))
    with transaction.atomic():
        target = _target(room, user)
        _check_may_act_on(acting, actor, target)
        target.role = role
        target.save(update_fields=["role"])
        _announce_member(room, target, user)
    return target


def member_mute(
    *, room: Room, actor: AbstractBaseUser, user: AbstractBaseUser, until: datetime | None
) -> Membership:
    """Mute a member until ``until`` (None: unmute). Their sends are refused with ``muted`` on
    every node from the next send on. Owner or moderator; only the owner may mute a moderator.
    Not in a direct message (``Forbidden``)."""
    _refuse_in_dm(room, _("No one is muted in a direct message."))
    acting = _require_moderator(room, actor)
    with transaction.atomic():
        target = _target(room, user)
        _check_may_act_on(acting, actor, target)
        target.muted_until = until
        target.save(update_fields=["muted_until"])
        _announce_member(room, target, user)
    return target


def member_ban(*, room: Room, actor: AbstractBaseUser, user: AbstractBaseUser) -> Membership:
    """Ban a user from a room: their sends are refused and their open sockets in it are closed
    with 4403 on every node at once. Works on non-members of a public room too (the ban row
    keeps them out). Owner or moderator; only the owner may ban a moderator. Idempotent. Not in
    a direct message (``Forbidden``)."""
    _refuse_in_dm(room, _("No one is banned from a direct message."))
    acting = _require_moderator(room, actor)
    with transaction.atomic():
        target, _created = Membership.objects.select_for_update().get_or_create(room=room, user=user)
        _check_may_act_on(acting, actor, target)
        if target.banned_at is None:
            target.banned_at = timezone.now()
            target.save(update_fields=["banned_at"])
            _announce_member(room, target, user)
            transaction.on_commit(
                partial(events.broadcast_member_removed, room_id=room.pk, user_id=user.pk, reason="banned")
            )
    return target


def member_unban(*, room: Room, actor: AbstractBaseUser, user: AbstractBaseUser) -> None:
    """Lift a ban: the user is no longer a member (they join a public room again, or are added
    to a private one). Owner or moderator. Not in a direct message (``Forbidden``)."""
    _refuse_in_dm(room, _("No one is banned from a direct message."))
    acting = _require_moderator(room, actor)
    with transaction.atomic():
        target = _target(room, user)
        _check_may_act_on(acting, actor, target)
        if target.is_banned:
            target.delete()
            transaction.on_commit(
                partial(
                    events.broadcast_member_removed,
                    room_id=room.pk,
                    user_id=user.pk,
                    reason="unbanned",
                    room_slug=room.slug,
                    user=_user_ref(user),
                )
            )


# --- tokens ---------------------------------------------------------------------------------------


def token_revoke(*, user: AbstractBaseUser) -> bool:
    """Delete ``user``'s API token. Sockets opened with it are closed with 4401 on every node
    (a ``user.token_revoked`` event, and each send re-checks the token). Returns whether a token
    existed."""
    from rest_framework.authtoken.models import Token

    with transaction.atomic():
        deleted, _by_model = Token.objects.filter(user=user).delete()
        if deleted:
            transaction.on_commit(partial(events.broadcast_token_revoked, user_id=user.pk))
    return bool(deleted)


# --- ends of access -------------------------------------------------------------------------------
# Every change that can end someone's access to a room broadcasts, on commit, an event on which
# the affected sockets check their access again (``rooms.access``) and close: 4401, 4403, 4404.


def room_save(*, room: Room, update_fields: list[str] | None = None) -> Room:
    """Save ``room`` (validated by the caller: ``room_update``, Django admin). When this makes a
    public room private, ``room.access_changed`` is broadcast after commit: on every node the
    sockets of users who are not members close with 4404, and their reads are refused. A direct
    message stays private (``Forbidden``). Every save of an existing room sends ``room.updated``
    (its slug, name, description and privacy) to the room's sockets on every node."""
    if room.kind == Room.Kind.DM and not room.is_private:
        raise Forbidden(_("A direct message cannot be made public."))
    with transaction.atomic():
        was_private = None
        if room.pk is not None:
            was_private = (
                Room.objects.select_for_update()
                .filter(pk=room.pk)
                .values_list("is_private", flat=True)
                .first()
            )
        room.save(update_fields=update_fields)
        if room.is_private and was_private is False:
            transaction.on_commit(partial(events.broadcast_room_access_changed, room_id=room.pk))
        if was_private is not None:  # an existing room: pages on every node show the new state
            shape = {
                "slug": room.slug,
                "name": room.name,
                "description": room.description,
                "is_private": room.is_private,
            }
            transaction.on_commit(partial(events.broadcast_room_updated, room_id=room.pk, room=shape))
    return room


def room_delete(*, room: Room, actor: AbstractBaseUser) -> None:
    """Delete a room with its history and memberships (Django admin: its owner or a site
    moderator). Every open socket in it closes with 4404 on every node."""
    acting = _membership(room, actor)
    if not _is_owner_or_site(acting, actor):
        raise Forbidden(_("Only the owner or a site moderator may delete a room."))
    room_id = room.pk
    with transaction.atomic():
        room.delete()
        transaction.on_commit(partial(events.broadcast_room_access_changed, room_id=room_id))


def member_remove(*, room: Room, actor: AbstractBaseUser, user: AbstractBaseUser) -> None:
    """Delete ``user``'s membership of ``room`` (Django admin; owner, moderator or site moderator,
    with the same rules as a ban: never the owner). Their open sockets in the room close on every
    node: 4404 in a private room, 4000 in a public one (which they may join again). Deleting a
    banned member's row lifts the ban, as ``member_unban`` does. Idempotent. Not in a direct
    message (``Forbidden``; delete the whole conversation instead)."""
    _refuse_in_dm(room, _("A member of a direct message cannot be removed; delete the conversation instead."))
    acting = _require_moderator(room, actor)
    with transaction.atomic():
        target = Membership.objects.select_for_update().filter(room=room, user=user).first()
        if target is None:
            return
        _check_may_act_on(acting, actor, target)
        target.delete()
        transaction.on_commit(
            partial(
                events.broadcast_member_removed,
                room_id=room.pk,
                user_id=user.pk,
                reason="removed",
                room_slug=room.slug,
                user=_user_ref(user),
            )
        )


def user_sessions_changed(*, user: AbstractBaseUser, renewed_session_key: str | None = None) -> None:
    """Called after one of ``user``'s sessions ended (log-out: ``views.LogoutView``) or their
    password changed (``views.PasswordChangeView``, admin's set-password form: ``admin.UserAdmin``),
    once the change is committed: on every node, each of their session sockets checks its session
    again and closes with 4401 if it ended or no longer matches the password (Django's session
    auth hash), at once (``user.sessions_changed``). ``renewed_session_key``: the key, before
    Django renewed it (``update_session_auth_hash``), of the session that changed the password:
    it stays signed in, and its sockets close with 4001 to reconnect with the new cookie. A
    change made another way (``manage.py changepassword``, a shell) is caught by the periodic
    check within ``ACCESS_RECHECK`` seconds (``rooms.access``)."""
    transaction.on_commit(
        partial(
            events.broadcast_user_sessions_changed,
            user_id=user.pk,
            renewed=access.session_digest(renewed_session_key),
        )
    )


def user_save(*, user: AbstractBaseUser, update_fields: list[str] | None = None) -> AbstractBaseUser:
    """Save ``user`` (Django admin's user form). When this deactivates them, every socket of
    theirs closes with 4401 on every node and their reads are refused (``user.access_changed``
    after commit)."""
    with transaction.atomic():
        was_active = None
        if user.pk is not None:
            was_active = (
                type(user)
                .objects.select_for_update()
                .filter(pk=user.pk)
                .values_list("is_active", flat=True)
                .first()
            )
        user.save(update_fields=update_fields)
        if was_active and not user.is_active:
            transaction.on_commit(partial(events.broadcast_user_access_changed, user_id=user.pk))
    return user


def user_set_active(*, user: AbstractBaseUser, active: bool) -> AbstractBaseUser:
    """Activate or deactivate ``user`` (``user_save``: deactivated, their sockets close with
    4401 on every node)."""
    user.is_active = active
    return user_save(user=user, update_fields=["is_active"])


def user_delete(*, user: AbstractBaseUser) -> None:
    """Delete ``user`` (Django admin); every socket of theirs closes with 4401 on every node.
    Raises ``django.db.models.ProtectedError`` when they have sent messages (deactivate them
    instead: history keeps its authors)."""
    user_id = user.pk
    with transaction.atomic():
        user.delete()
        transaction.on_commit(partial(events.broadcast_user_access_changed, user_id=user_id))
