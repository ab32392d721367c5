"""Direct messages: a 1:1 conversation between two users, and the setting of who may start one.

A DM is a ``Room`` with ``kind="dm"``: private, exactly two plain members (role ``member``, no
owner), an unguessable slug (``services._private_slug``), and ``dm_key = "<low id>:<high id>"``
unique in the database, so one pair has one conversation, whichever side opens it and on however
many nodes at once. Everything else is a room's: the same ``seq``, ack, resume, history, edits and
deletes, the same socket (``/ws/rooms/<slug>/``) and page (``/rooms/<slug>/``); a third user gets
404 (4404 on a socket) everywhere, as for any private room they are not in.

Rules of a DM (``services`` refuses each with 403 ``forbidden``, changing nothing): no member
added, nobody leaves or is removed, no rename, no change of privacy, no archive, no role
change, mute or ban (not even by a site moderator: a ban would be a "block", which is not
built). Moderation in a DM: each author edits and deletes their own messages; site moderators
delete any message (content moderation site-wide) and can deactivate an account; deleting the
whole conversation is Django admin's (a site moderator), after which opening it again starts a
new one.

Who may start a DM (``UserSettings.dms_from``): ``"anyone"`` (default), or ``"shared_rooms"``:
only a user sharing a group room with them (both non-banned members). The setting is checked
when a DM is first made; an existing DM keeps working both ways after it is turned on (opening
it returns it, and both still send): it only stops new conversations.
"""

from dataclasses import dataclass
from functools import partial

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _

from . import events
from .models import Membership, Room, UserSettings
from .services import ServiceError, _private_slug

Kind = Room.Kind
DmsFrom = UserSettings.DmsFrom


class DmSelf(ServiceError):
    """A DM with oneself."""

    code, status = "dm_self", 400


class DmsOff(ServiceError):
    """The other user takes DMs only from people they share a room with, and the caller is not
    one of them."""

    code, status = "dms_off", 403


class UserNotFound(ServiceError):
    """No active user of that name (an inactive one answers the same). Not ``services.NotFound``,
    whose REST body is a plain ``{"detail"}``: this one says ``"code": "not_found"``."""

    code, status = "not_found", 404


@dataclass(frozen=True)
class DmResult:
    """What ``dm_open`` did: the ``room`` and whether this call ``created`` it."""

    room: Room
    created: bool


def dm_key(a_id: int, b_id: int) -> str:
    """The pair's key, lower id first: the same from either side."""
    low, high = sorted((int(a_id), int(b_id)))
    return f"{low}:{high}"


def share_a_room(a_id: int, b_id: int) -> bool:
    """Whether both users are non-banned members of one group room (DMs do not count)."""
    return Membership.objects.filter(
        user_id=a_id,
        banned_at__isnull=True,
        room__kind=Kind.ROOM,
        room__memberships__user_id=b_id,
        room__memberships__banned_at__isnull=True,
    ).exists()


def dms_from(user_id: int) -> str:
    """The user's ``dms_from`` setting (the default when they have no ``UserSettings`` row)."""
    return (
        UserSettings.objects.filter(user_id=user_id).values_list("dms_from", flat=True).first()
        or DmsFrom.ANYONE
    )


def dm_open(*, user: AbstractBaseUser, username: str) -> DmResult:
    """The DM between ``user`` and the active user named ``username``: the existing one
    (``created=False``), or a new one (``created=True``) with both as members and
    ``dm.created`` broadcast to both users' groups after commit (``events.broadcast_dm_created``,
    the room shape as each side sees it).

    Raises ``DmSelf`` (400) for oneself, ``UserNotFound`` (404) for an unknown or inactive user,
    ``DmsOff`` (403) when there is no DM yet and the other user's ``dms_from`` is
    ``shared_rooms`` and they share no group room. Race-safe: two opens of one pair at once, on
    any nodes, give one room (the unique ``dm_key``: the loser's insert rolls back and it
    returns the winner's room). A refusal changes nothing."""
    if not isinstance(username, str) or not username:
        raise UserNotFound(_("No such user."))
    if username == user.get_username():
        raise DmSelf(_("You cannot start a direct message with yourself."))
    other = get_user_model().objects.filter(username=username, is_active=True).first()
    if other is None:
        raise UserNotFound(_("No such user."))
    if other.pk == user.pk:
        raise DmSelf(_("You cannot start a direct message with yourself."))
    key = dm_key(user.pk, other.pk)
    room = Room.objects.filter(dm_key=key).first()
    if room is not None:
        return DmResult(room=room, created=False)
    if dms_from(other.pk) == DmsFrom.SHARED_ROOMS and not share_a_room(user.pk, other.pk):
        raise DmsOff(
            _("%(username)s takes direct messages only from people who share a room with them."),
            params={"username": other.get_username()},
        )
    low, high = sorted((user, other), key=lambda u: u.pk)
    room = Room(
        name=f"{low.get_username()} & {high.get_username()}"[:100],
        slug=_private_slug("dm"),
        is_private=True,
        kind=Kind.DM,
        dm_key=key,
        created_by=user,
    )
    try:
        with transaction.atomic():
            room.save()
            Membership.objects.bulk_create(
                [
                    Membership(room=room, user=user, role=Membership.Role.MEMBER),
                    Membership(room=room, user=other, role=Membership.Role.MEMBER),
                ]
            )
            transaction.on_commit(partial(_broadcast_created, room, user, other))
    except IntegrityError:  # the same pair opened by a concurrent call that committed first
        room = Room.objects.filter(dm_key=key).first()
        if room is None:
            raise
        return DmResult(room=room, created=False)
    return DmResult(room=room, created=True)


def _broadcast_created(room: Room, a: AbstractBaseUser, b: AbstractBaseUser) -> None:
    for viewer, other in ((a, b), (b, a)):
        events.broadcast_dm_created(user_id=viewer.pk, room_data=room_data(room, viewer=viewer, other=other))
    events.broadcast_rooms_changed(user_ids=[a.pk, b.pk])


def room_data(room: Room, *, viewer: AbstractBaseUser, other: AbstractBaseUser) -> dict:
    """The room shape (``RoomSerializer``) of a DM as ``viewer`` sees it."""
    from .serializers import RoomSerializer

    context = {
        "roles": {room.pk: Membership.Role.MEMBER},
        "dm_with": {room.pk: {"id": other.pk, "username": other.get_username()}},
        "viewer": viewer,
    }
    return dict(RoomSerializer(room, context=context).data)


def dm_partners(user: AbstractBaseUser) -> dict[int, dict]:
    """``{room id: {"id", "username"}}``: the other member of each of ``user``'s DMs (one
    query)."""
    if not user.is_authenticated:
        return {}
    rows = (
        Membership.objects.filter(room__kind=Kind.DM, room__memberships__user_id=user.pk)
        .exclude(user_id=user.pk)
        .values_list("room_id", "user_id", "user__username")
    )
    return {room_id: {"id": uid, "username": name} for room_id, uid, name in rows}


def dm_with(room: Room, user: AbstractBaseUser) -> dict | None:
    """The other member of the DM ``room`` from ``user``'s side, or None (a group room)."""
    if not room.is_dm or not user.is_authenticated:
        return None
    row = (
        Membership.objects.filter(room=room)
        .exclude(user_id=user.pk)
        .values_list("user_id", "user__username")
        .first()
    )
    return None if row is None else {"id": row[0], "username": row[1]}


def user_settings_get(user: AbstractBaseUser) -> UserSettings:
    """``user``'s settings (unsaved defaults when they have no row yet)."""
    return UserSettings.objects.filter(user_id=user.pk).first() or UserSettings(user_id=user.pk)


def user_settings_update(*, user: AbstractBaseUser, **fields) -> UserSettings:
    """Change ``user``'s settings (``dms_from``: ``"anyone"`` or ``"shared_rooms"``; validated
    by the caller). Idempotent; nothing is broadcast (an existing DM keeps working)."""
    unknown = set(fields) - {"dms_from"}
    if unknown:
        raise ValueError(f"not a setting: {sorted(unknown)}")
    if "dms_from" in fields and fields["dms_from"] not in DmsFrom.values:
        raise ValueError(f"dms_from must be one of {DmsFrom.values}")
    settings_row, _created = UserSettings.objects.update_or_create(user_id=user.pk, defaults=fields)
    return settings_row
