"""Mentions: ``@username`` and ``@room`` in a message body, recognised when the message is stored
(Zulip's ``zerver/lib/mention.py`` idea: parsed once on the server, stored, and notifications
decided from what was stored, never by the client).

Parsing (``parse``): a mention is ``@`` followed by username characters (Django's: letters,
digits and ``@ . + - _``), where the ``@`` does not follow a username character. So ``@alice``,
``@alice,``, ``(@alice)``, ``hi @alice.`` and ``@ALICE`` mention alice; ``a@alice.com`` (an
address) does not, nor ``@alice.com`` (that names a user "alice.com"). A trailing ``.``, ``+``,
``-`` or ``@`` is tried with and without (``@alice.`` at the end of a sentence). Matching is
case-insensitive on the username. ``@room`` (any case) mentions every member of the room: it is
stored as ``Message.mentions_room``, not as a row per member, and notifies nobody one by one
(the ``message`` frame itself carries ``"mentions_room": true``); ``room`` is therefore never
matched as a username.

Storing: a ``Mention`` row per mentioned *member* of the room (not banned), never for a
non-member or for the author, in the same transaction as the message (``rooms.services``: in
the one-statement send itself, ``rooms.services._post_sql``). An edit parses the new body again
(``store_edit``): mentions no longer there are removed, new ones are stored and notified once.

Each newly mentioned member gets ``{"type": "mention", "room": slug, "message": {...}}`` on
their user group after commit (``events.broadcast_mention``: one layer event per mentioned
user, never one per room member).

Reading: ``mentions_for_data`` (``GET /api/mentions/``; ``mentions_for`` as instances), newest first, paged by message id, only in
rooms the user may still read, deleted messages left out.
"""

import re
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Lower

from .models import Membership, Mention, Message
from .sqlutil import with_ids

USERNAME_MAX_LENGTH = 150
ROOM_MENTION = "room"
_USERNAME_CHARS = r"\w.@+-"
MENTION_RE = re.compile(rf"(?<![{_USERNAME_CHARS}])@([{_USERNAME_CHARS}]{{1,{USERNAME_MAX_LENGTH}}})")
_TRAILING = ".@+-"


@dataclass(frozen=True)
class Parsed:
    """What a body mentions: ``names``, lower-cased usernames to look for among the room's
    members, and ``room``: whether it has ``@room``."""

    names: tuple[str, ...] = ()
    room: bool = False


NOTHING = Parsed()


def parse(body: str) -> Parsed:
    """The mentions in ``body`` (no database access). A body without ``@`` costs one ``in``."""
    if "@" not in body:
        return NOTHING
    names: set[str] = set()
    room = False
    for match in MENTION_RE.finditer(body):
        token = match.group(1).lower()
        stripped = token.rstrip(_TRAILING)
        if stripped == ROOM_MENTION or token == ROOM_MENTION:
            room = True
            continue
        names.add(token)
        if stripped and stripped != token:
            names.add(stripped)
    if not names and not room:  # e.g. only an address: the send keeps the plain statement
        return NOTHING
    return Parsed(names=tuple(sorted(names)), room=room)


def mentioned_members(*, room_id: int, author_id: int, names: tuple[str, ...]) -> list[dict]:
    """``[{"id", "username"}]`` of the room's (not banned) members other than the author whose
    username is one of ``names`` (compared lower-cased), by id."""
    if not names:
        return []
    rows = (
        Membership.objects.filter(room_id=room_id, banned_at__isnull=True)
        .exclude(user_id=author_id)
        .annotate(name=Lower("user__username"))
        .filter(name__in=names)
        .order_by("user_id")
        .values_list("user_id", "user__username")
    )
    return [{"id": user_id, "username": username} for user_id, username in rows]


def store(*, message: Message, parsed: Parsed) -> list[dict]:
    """Store the ``Mention`` rows of a new ``message`` (the caller's transaction); returns the
    mentioned members ``[{"id", "username"}]``, also kept on ``message.mention_list``."""
    members = mentioned_members(room_id=message.room_id, author_id=message.author_id, names=parsed.names)
    Mention.objects.bulk_create(
        [Mention(message=message, user_id=m["id"], room_id=message.room_id) for m in members]
    )
    message.mention_list = members
    return members


def store_edit(*, message: Message) -> list[int]:
    """After an edit (the caller's transaction, ``message`` locked): parse the new body, remove
    the mentions it no longer has, store the new ones, set ``mentions_room`` on the instance
    (the caller saves it). Returns the ids of users newly mentioned (to be notified once)."""
    parsed = parse(message.body)
    message.mentions_room = parsed.room
    members = mentioned_members(room_id=message.room_id, author_id=message.author_id, names=parsed.names)
    wanted = {m["id"] for m in members}
    had = set(Mention.objects.filter(message=message).values_list("user_id", flat=True))
    if had - wanted:
        Mention.objects.filter(message=message, user_id__in=had - wanted).delete()
    new = sorted(wanted - had)
    Mention.objects.bulk_create(
        [Mention(message=message, user_id=uid, room_id=message.room_id) for uid in new]
    )
    message.mention_list = members
    return new


def by_message(ids: list[int]) -> dict[int, list[dict]]:
    """``{message id: [{"id", "username"}, ...]}`` (by user id) for the messages ``ids`` that
    mention someone, in one query (none for an empty ``ids``); a message without mentions is
    absent. The caller leaves out deleted messages and bodies without ``@``."""
    found: dict[int, list[dict]] = {}
    if ids:
        rows = (
            with_ids(Mention.objects.all(), "message", ids)
            .order_by("message_id", "user_id")
            .values_list("message_id", "user_id", "user__username")
        )
        for message_id, user_id, username in rows:
            found.setdefault(message_id, []).append({"id": user_id, "username": username})
    return found


def attach(messages: list[Message]) -> list[Message]:
    """Load the mentions of ``messages`` for their wire shape (``message.mention_list``), in
    one query, and none when no body has ``@`` (a deleted message shows none)."""
    found = by_message([m.pk for m in messages if m.deleted_at is None and "@" in m.body])
    for message in messages:
        message.mention_list = found.get(message.pk, [])
    return messages


def mentions_of(message: Message) -> list[dict]:
    """``[{"id", "username"}]`` mentioned by ``message`` (by id): ``attach``'s or ``store``'s
    when loaded, else one query, and none without ``@`` or for a deleted message."""
    loaded = getattr(message, "mention_list", None)
    if loaded is not None:
        return loaded
    if message.deleted_at is not None or "@" not in message.body:
        return []
    attach([message])
    return message.mention_list


MENTIONS_DEFAULT_LIMIT = 50
MENTIONS_MAX_LIMIT = 200


def _readable_mentions(*, user: AbstractBaseUser, before_id: int | None):
    """``user``'s ``Mention`` rows, newest first by message id, ``message_id < before_id`` (all
    when None), only of live messages in rooms the user can read now: a public room they are not
    banned from, a private room they are a member of (not banned). The one definition of
    what ``mentions_for`` and ``mentions_for_data`` may show."""
    membership = Membership.objects.filter(room=OuterRef("message__room"), user_id=user.pk)
    qs = (
        Mention.objects.filter(user_id=user.pk, message__deleted_at__isnull=True)
        .filter(Q(message__room__is_private=False) | Exists(membership.filter(banned_at__isnull=True)))
        .exclude(Exists(membership.filter(banned_at__isnull=False)))
        .order_by("-message_id")
    )
    if before_id is not None:
        qs = qs.filter(message_id__lt=before_id)
    return qs


def mentions_for(
    *, user: AbstractBaseUser, before_id: int | None = None, limit: int = MENTIONS_DEFAULT_LIMIT
) -> tuple[list[Message], bool]:
    """``user``'s mentions (by ``@username`` only), newest first: up to ``limit`` messages with
    ``id < before_id`` (all when None), and whether there are more. Only in rooms the user can
    read now (authorised on the way out: a public room they are not banned from, a private room
    they are a member of), deleted messages left out. Messages come with author, room, parent,
    mentions, reactions and attachments loaded (4 queries at most), for ``MessageSerializer``;
    ``GET /api/mentions/`` uses ``mentions_for_data``."""
    qs = _readable_mentions(user=user, before_id=before_id).select_related(
        "message__author", "message__room", "message__reply_to__author"
    )
    from .attachments import attach as attach_attachments
    from .reactions import attach as attach_reactions

    page = [mention.message for mention in qs[: limit + 1]]
    return attach_attachments(attach_reactions(attach(page[:limit]))), len(page) > limit


def mentions_for_data(
    *, user: AbstractBaseUser, before_id: int | None = None, limit: int = MENTIONS_DEFAULT_LIMIT
) -> tuple[list[dict], bool]:
    """``mentions_for``'s page in the wire shape of ``GET /api/mentions/``: ``(results,
    has_more)``, ``results`` exactly ``MentionSerializer(messages, many=True).data``
    (``[{"room": slug, "message": {...the message shape...}}, ...]``, newest first; the shapes
    from ``rooms.message_shape``). The same rows (``_readable_mentions``: the same
    authorization). Queries, whatever ``limit``: one for the page's rows (the mention joined to
    its message and what the shape reads), then one each for reactions, attachments and
    mentions: 4 (1 for an empty page)."""
    from .message_shape import COLUMNS, rows_data

    qs = _readable_mentions(user=user, before_id=before_id)
    rows = list(qs.values_list(*(f"message__{column}" for column in COLUMNS))[: limit + 1])
    return [{"room": shape["room"], "message": shape} for shape in rows_data(rows[:limit])], len(rows) > limit
