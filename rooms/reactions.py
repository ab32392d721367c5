"""Emoji reactions on messages (Zulip's ``zerver/actions/reactions.py`` shape): writes, the
reactions of a message in its wire shape, and loading them for a page of messages.

A ``Reaction`` row is (message, user, emoji), unique together: adding the same reaction twice
counts once, removing one you do not have changes nothing. ``reaction_add`` /
``reaction_remove`` run in one transaction with the message's row locked, read the message's
reactions again after the change, and broadcast ``reaction.updated`` after commit (only when
something changed)::

    {"type": "reaction.updated", "room": slug, "seq": int, "reactions": [...]}

to the room's group on every node (``events.broadcast_reaction_updated``). ``reactions`` is the
message's whole list, the same as the message shape's::

    [{"emoji": "👍", "count": 2, "users": [{"id": int, "username": str}, ...]}, ...]

emoji in the order each was first added, users in the order they reacted. Because the row lock
orders the changes of one message, the list of the last committed change is the stored truth;
two changes made on two nodes at the same moment may still reach a page in either order (the
layer does not order two publishers), so a page that must be exact re-reads the message (REST
``GET`` of the message, or history) after a reconnect, as for edits.

Who may react (``check_may_react``), the rule of reading plus the rule of sending for what puts
something new in front of the room:

- add: a member of the room (a public room's visitor becomes a member by reacting, as by
  sending), not muted (``muted``, with ``until``: a reaction is something new in front of the
  room, like a message), not banned (``banned`` in a public room; ``not_found`` in a private
  room, whose existence never leaks), not in an archived room (``archived``), not on a deleted
  message (``conflict``).
- remove: your own reaction only (nobody removes another's), while you may read the room; a
  muted member may remove theirs (it adds nothing, as deleting a message); not in an archived
  room (its history is frozen), nor on a deleted message.

The emoji (``normalize_emoji``) must be exactly one emoji grapheme (the ``emoji`` library's
list of Unicode emoji: skin tones, ZWJ sequences, flags and keycaps included); it is stored in
its fully-qualified form, so ``❤`` and ``❤️`` are one reaction. Anything else (text, two emoji,
``:smile:``) is ``invalid_emoji`` (REST 400).
"""

from dataclasses import dataclass
from functools import partial

import emoji as emoji_lib
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _

from . import events
from .models import REACTION_EMOJI_MAX_LENGTH, Membership, Message, Reaction
from .sqlutil import with_ids

# Reactions read for one message at most (their users): a message with more shows the first ones.
USERS_SHOWN = 100


class InvalidEmoji(ValueError):
    """Not one emoji: ``code`` ``invalid_emoji`` (REST 400, the socket's error frame)."""

    code = "invalid_emoji"


def normalize_emoji(value) -> str:
    """``value`` as the stored emoji (fully qualified: ``❤`` becomes ``❤️``), or raises
    ``InvalidEmoji`` when it is not a string holding exactly one emoji."""
    if not isinstance(value, str) or not value or len(value) > REACTION_EMOJI_MAX_LENGTH:
        raise InvalidEmoji('emoji must be a single emoji, e.g. "👍".')
    if not emoji_lib.is_emoji(value):
        raise InvalidEmoji('emoji must be a single emoji, e.g. "👍".')
    qualified = emoji_lib.emojize(emoji_lib.demojize(value))
    if not emoji_lib.is_emoji(qualified) or len(qualified) > REACTION_EMOJI_MAX_LENGTH:
        qualified = value
    return qualified


@dataclass(frozen=True)
class ReactionResult:
    """What a reaction write did: the message (room loaded), its ``reactions`` after it, and
    whether anything ``changed`` (False: already there / not there)."""

    message: Message
    reactions: list[dict]
    changed: bool


def reactions_of(message: Message) -> list[dict]:
    """The message's reactions in the wire shape (``attach``'s when loaded, else one query);
    none for a deleted message."""
    loaded = getattr(message, "reaction_list", None)
    if loaded is not None:
        return loaded
    if message.deleted_at is not None:
        return []
    attach([message])
    return message.reaction_list


def group_rows(rows) -> dict[int, list[dict]]:
    """``{message id: [{"emoji", "count", "users"}]}`` (the wire shape) from rows
    ``(message_id, emoji, user_id, username)``, each message's in reaction id order: emoji in
    the order each was first added, at most ``USERS_SHOWN`` users each."""
    found: dict[int, dict[str, dict]] = {}
    for message_id, emoji, user_id, username in rows:
        per_emoji = found.setdefault(message_id, {})
        entry = per_emoji.get(emoji)
        if entry is None:
            entry = per_emoji[emoji] = {"emoji": emoji, "count": 0, "users": []}
        entry["count"] += 1
        if len(entry["users"]) < USERS_SHOWN:
            entry["users"].append({"id": user_id, "username": username})
    return {message_id: list(per_emoji.values()) for message_id, per_emoji in found.items()}


def by_message(ids: list[int]) -> dict[int, list[dict]]:
    """``{message id: [{"emoji", "count", "users"}, ...]}`` (the wire shape) for the messages
    ``ids`` that have reactions, in one query whatever their number (none for an empty
    ``ids``); a message without reactions is absent. The caller leaves out deleted messages."""
    if not ids:
        return {}
    rows = (
        with_ids(Reaction.objects.all(), "message", ids)
        .order_by("id")
        .values_list("message_id", "emoji", "user_id", "user__username")
    )
    return group_rows(rows)


def attach(messages: list[Message]) -> list[Message]:
    """Load the reactions of ``messages`` (``message.reaction_list``) in one query for the
    whole list, whatever its length; deleted messages show none."""
    found = by_message([m.pk for m in messages if m.deleted_at is None])
    for message in messages:
        message.reaction_list = found.get(message.pk, [])
    return messages


def _locked(message: Message) -> Message:
    return Message.objects.select_for_update(of=("self",)).select_related("room").get(pk=message.pk)


def check_may_react(message: Message, user: AbstractBaseUser, *, adding: bool) -> Membership | None:
    """Raises the ``ServiceError`` that refuses this reaction change (the rules in the module's
    docstring), else returns the user's membership (None: a public room's visitor, who may
    add and then becomes a member)."""
    from . import services

    if not user.is_authenticated:
        raise services.NotFound("No such room.")
    room = message.room
    membership = (
        services._check_may_send(room, user) if adding else services.room_access(room=room, user=user)
    )
    if room.is_archived:
        raise services.Archived("The room is archived.")
    if message.deleted_at is not None:
        raise services.Conflict("The message was deleted.")
    return membership


def _changed(message: Message) -> ReactionResult:
    message.reaction_list = None
    attach([message])
    reactions = message.reaction_list
    transaction.on_commit(
        partial(
            events.broadcast_reaction_updated,
            room_id=message.room_id,
            room_slug=message.room.slug,
            seq=message.seq,
            reactions=reactions,
        )
    )
    return ReactionResult(message=message, reactions=reactions, changed=True)


def reaction_add(*, message: Message, user: AbstractBaseUser, emoji: str) -> ReactionResult:
    """Add ``user``'s ``emoji`` (already normalised: ``normalize_emoji``) to ``message``;
    idempotent. Broadcasts ``reaction.updated`` after commit when it was new. Raises
    ``NotFound``, ``Banned``, ``Muted``, ``Archived`` or ``Conflict`` (deleted message);
    a refusal changes nothing."""
    with transaction.atomic():
        message = _locked(message)
        membership = check_may_react(message, user, adding=True)
        if membership is None:  # a public room's visitor becomes a member by reacting
            from .services import _last_seq

            Membership.objects.get_or_create(
                room=message.room, user=user, defaults={"last_read_seq": _last_seq(message.room)}
            )
        try:
            with transaction.atomic():
                _, created = Reaction.objects.get_or_create(message=message, user=user, emoji=emoji)
        except IntegrityError:  # cannot race under the row lock; kept for a message deleted meanwhile
            created = False
        if not created:
            attach([message])
            return ReactionResult(message=message, reactions=message.reaction_list, changed=False)
        return _changed(message)


def reaction_remove(*, message: Message, user: AbstractBaseUser, emoji: str) -> ReactionResult:
    """Remove ``user``'s ``emoji`` from ``message``; removing one they do not have is a no-op
    (no broadcast). Raises ``NotFound``, ``Banned``, ``Archived`` or ``Conflict``."""
    with transaction.atomic():
        message = _locked(message)
        check_may_react(message, user, adding=False)
        deleted, _ = Reaction.objects.filter(message=message, user=user, emoji=emoji).delete()
        if not deleted:
            attach([message])
            return ReactionResult(message=message, reactions=message.reaction_list, changed=False)
        return _changed(message)


def reaction_by_seq(*, room, seq: int, user: AbstractBaseUser, emoji, add: bool) -> ReactionResult:
    """The socket's ``reaction.add`` / ``reaction.remove`` (one database hop): the message
    ``seq`` of ``room`` (``NotFound`` ``message_not_found`` when there is none), then
    ``reaction_add`` / ``reaction_remove``. ``emoji`` is normalised here (``InvalidEmoji``)."""
    from . import services

    emoji = normalize_emoji(emoji)
    message = Message.objects.filter(room=room, seq=seq).select_related("room").first()
    if message is None:
        raise services.MessageNotFound(_("No message with this seq in the room."))
    return (reaction_add if add else reaction_remove)(message=message, user=user, emoji=emoji)
