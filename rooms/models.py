"""Rooms and their messages. Writes go through ``rooms.services``; reads through ``rooms.selectors``."""

import unicodedata

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _

from .text import label_errors

SLUG_MAX_LENGTH = 64
# The one answer for a slug that cannot be had, whether a room the caller can see holds it, a
# private room they cannot see, or it is reserved: it never confirms that a room exists.
SLUG_UNAVAILABLE = _("This slug is not available; choose another.")
SLUG_UNAVAILABLE_CODE = "slug_unavailable"  # the ValidationError's code; REST's "code"
# Slugs are unique regardless of case ("General" and "general" are one slug), and these are
# reserved in any case: "new" (/rooms/new/ is the create-room page) and, for group rooms, the
# prefix "dm-" of direct messages' slugs (rooms.dms).
RESERVED_SLUGS = frozenset({"new"})
DM_SLUG_PREFIX = "dm-"


def normalize_slug(slug: str) -> str:
    """A slug as stored and compared: Unicode NFKC, so forms of one text that look alike are one
    slug (a Hangul syllable and its decomposed jamo, full-width "Ａ" and "A"); with case folded by
    the uniqueness rule above, "일반-대화방" in NFC and NFD, or "Ｇｅｎｅｒａｌ" and "general", are
    one slug and the second answers ``SLUG_UNAVAILABLE``. Case is kept (lookups are exact)."""
    return unicodedata.normalize("NFKC", slug or "")


def slug_from_name(name: str) -> str:
    """The slug made from a room's name when none is given, lower-cased and cut to
    ``SLUG_MAX_LENGTH``: ASCII when folding accents loses no letter ("Café Talk" → "cafe-talk",
    as Django's ``slugify``), else with the letters of any script kept ("일반 대화방" →
    "일반-대화방", "Team 일반" → "team-일반", "Общий чат" → "общий-чат"); "" when the name has
    no letter or digit."""
    unicode_slug = slugify(name or "", allow_unicode=True)
    folded = "".join(c for c in unicodedata.normalize("NFKD", unicode_slug) if not unicodedata.combining(c))
    slug = folded if folded.isascii() else unicode_slug
    return slug[:SLUG_MAX_LENGTH].strip("-_")


BODY_MAX_LENGTH = 4000  # characters (code points), the same limit for every way of sending
CLIENT_MSG_ID_MAX_LENGTH = 64
REACTION_EMOJI_MAX_LENGTH = 32  # code points: the longest emoji ZWJ sequences are about 10


class Room(models.Model):
    """A chat room. ``last_seq`` is the highest ``Message.seq`` stored in it (0: none yet).

    ``kind``: ``"room"`` (a group room) or ``"dm"`` (a direct message: a private room of exactly
    two plain members, made only by ``rooms.dms.dm_open``). A DM's ``dm_key`` is
    ``"<lower user id>:<higher user id>"``, unique, so the pair has one conversation however
    many nodes open it at once; NULL for group rooms.

    ``last_seq`` is only changed by ``rooms.services.message_post``, which increments it in the
    same transaction that inserts the message, so the row lock on the room serialises senders
    of one room across every node.
    """

    # Letters of any script, digits, - and _ (a Korean room gets a Korean slug), NFKC.
    slug = models.SlugField(max_length=SLUG_MAX_LENGTH, unique=True, allow_unicode=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, max_length=1000)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rooms_created",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)
    is_private = models.BooleanField(
        default=False, help_text="Private rooms are visible to their members only."
    )
    archived_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Archived: history kept, no new messages."
    )

    class Kind(models.TextChoices):
        ROOM = "room"
        DM = "dm"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.ROOM, editable=False)
    dm_key = models.CharField(
        max_length=41,
        null=True,
        blank=True,
        unique=True,
        editable=False,
        help_text="A direct message's pair of user ids, lower first (one DM per pair).",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            # Case-insensitive uniqueness; its index also serves lower(slug) lookups. Checked
            # before saving by ``clean`` (a slug field error), so ``get_constraints`` leaves it out.
            models.UniqueConstraint(
                Lower("slug"), name="room_slug_lower_unique", violation_error_message=SLUG_UNAVAILABLE
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_dm(self) -> bool:
        return self.kind == self.Kind.DM

    def clean(self) -> None:
        """Called by ``full_clean`` (the services, the create-room page's and admin's forms):
        a name and a description follow the rules of message bodies (``rooms.text``): no NUL or
        lone surrogate, no control character (a description may hold line breaks and tabs), not
        only invisible characters; no text-direction control, and in a name no invisible
        character among visible ones ("a\u200bb"; ``text.label_errors``). A slug that is new (a room created, or its slug changed in
        admin) answers ``SLUG_UNAVAILABLE`` (code ``slug_unavailable``) when it is reserved in any
        case (``new``; ``dm-…`` for a group room) or another room's slug differs from it only in
        case (the same slug exactly is ``validate_unique``'s, with the same answer)."""
        errors = {}
        name_errors = label_errors(self.name, what="name")
        if name_errors:
            errors["name"] = name_errors
        description_errors = label_errors(self.description, what="description", lines=True)
        if description_errors:
            errors["description"] = description_errors
        if self.slug and self._slug_is_new() and self._slug_unavailable():
            errors["slug"] = [ValidationError(SLUG_UNAVAILABLE, code=SLUG_UNAVAILABLE_CODE)]
        if errors:
            raise ValidationError(errors)

    def _slug_is_new(self) -> bool:
        if self._state.adding or self.pk is None:
            return True
        return not Room.objects.filter(pk=self.pk, slug=self.slug).exists()

    def _slug_unavailable(self) -> bool:
        folded = self.slug.lower()
        if folded in RESERVED_SLUGS:
            return True
        if self.kind != self.Kind.DM and folded.startswith(DM_SLUG_PREFIX):
            return True
        others = Room.objects.filter(slug__iexact=self.slug).exclude(slug=self.slug)
        if self.pk is not None:
            others = others.exclude(pk=self.pk)
        return others.exists()

    def get_constraints(self):
        """The constraints ``full_clean`` validates: all but ``room_slug_lower_unique``, which
        ``clean`` checks as an error of the ``slug`` field (the constraint's own would be a
        non-field error)."""
        return [
            (model, [c for c in constraints if c.name != "room_slug_lower_unique"])
            for model, constraints in super().get_constraints()
        ]

    def unique_error_message(self, model_class, unique_check):
        if tuple(unique_check) == ("slug",):  # taken: the same words as any unavailable slug
            return ValidationError(SLUG_UNAVAILABLE, code=SLUG_UNAVAILABLE_CODE)
        return super().unique_error_message(model_class, unique_check)

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None


class Membership(models.Model):
    """A user's place in a room: their ``role``, any mute or ban, and their read marker.

    Roles: ``owner`` (the creator; changes the room and roles), ``moderator`` (adds members to a
    private room, mutes, bans, deletes others' messages), ``member``. A ban keeps the row with
    ``banned_at`` set, so a banned user cannot simply join again. ``muted_until`` in the future
    refuses that member's sends until then.

    ``last_read_seq``: the highest seq the member has read in the room (``rooms.reads``); it only
    moves forward, never past ``Room.last_seq``. Joining sets it to the room's ``last_seq`` (the
    backlog before joining is not unread) and sending a message moves it to that message's seq.
    """

    class Role(models.TextChoices):
        OWNER = "owner"
        MODERATOR = "moderator"
        MEMBER = "member"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(default=timezone.now, editable=False)
    muted_until = models.DateTimeField(null=True, blank=True)
    banned_at = models.DateTimeField(null=True, blank=True)
    # db_default too: the one-statement send inserts memberships in SQL (rooms.services._post_sql).
    last_read_seq = models.PositiveBigIntegerField(default=0, db_default=0, editable=False)

    class Meta:
        ordering = ["room_id", "joined_at"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="membership_room_user_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.room} ({self.role})"

    @property
    def is_banned(self) -> bool:
        return self.banned_at is not None

    def muted_now(self, now=None) -> bool:
        return self.muted_until is not None and self.muted_until > (now or timezone.now())

    @property
    def can_moderate(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.MODERATOR) and not self.is_banned


class Message(models.Model):
    """One stored chat message.

    ``seq`` is the room's sequence number: 1 for the first message of a room, then strictly
    increasing without gaps; unique per room by a database constraint, whose index also serves
    reads by ``(room, seq)``. A deleted message keeps its row and seq (``deleted_at`` set) and
    shows no body to anyone. ``client_msg_id`` is chosen by the sender; the same author sending
    the same ``client_msg_id`` to the same room again gets the stored message back instead of a
    second row. ``server_id`` names the node the message was sent through.

    ``body`` (Markdown source) is the truth; ``body_html`` is its rendering by
    ``rooms.formatting`` (sanitised), made once when stored and again at each edit.
    """

    # No index of its own: ``message_room_seq_unique`` (room_id, seq) leads with the room and
    # serves every lookup by room; a second index cost a write per message and drew the planner
    # to scan a whole room for a range by seq (``rooms.reads._count``).
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages", db_index=False)
    seq = models.PositiveBigIntegerField(editable=False)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="messages")
    body = models.TextField(max_length=BODY_MAX_LENGTH)
    client_msg_id = models.CharField(max_length=CLIENT_MSG_ID_MAX_LENGTH)
    server_id = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    edited_at = models.DateTimeField(null=True, blank=True, editable=False)
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    # The body has ``@room`` (every member is mentioned; ``rooms.mentions``): set when stored or edited.
    mentions_room = models.BooleanField(default=False, db_default=False, editable=False)
    # The body rendered to safe HTML (``rooms.formatting.render``), when stored and at each edit.
    body_html = models.TextField(default="", db_default="", blank=True, editable=False)
    # A reply: the message it answers, in the same room (``rooms.replies``); set when stored, never changed.
    reply_to = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        db_index=False,
        related_name="replies",
    )
    # Replies to this message that are not deleted (kept by the send and delete paths, row locked).
    reply_count = models.PositiveIntegerField(default=0, db_default=0, editable=False)

    class Meta:
        # room_id, not room: "room" would follow Room.Meta.ordering and join rooms_room by name.
        ordering = ["room_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq_unique"),
            models.UniqueConstraint(
                fields=["room", "author", "client_msg_id"], name="message_client_msg_id_unique"
            ),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="message_seq_positive"),
        ]
        indexes = [
            # A member's unread @room messages (rooms.reads), without reading every unread message.
            models.Index(
                fields=["room", "seq"],
                condition=models.Q(mentions_room=True),
                name="message_mentions_room_idx",
            ),
            # A thread's replies in seq order (rooms.replies); only replies are in it.
            models.Index(
                fields=["reply_to", "seq"],
                condition=models.Q(reply_to__isnull=False),
                name="message_reply_to_seq_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room.slug}#{self.seq}"


class Mention(models.Model):
    """``user`` (a member of the message's room, not its author) is mentioned by ``@username`` in
    ``message``: stored with the message, in its transaction, and again at each edit
    (``rooms.mentions``). ``@room`` is not stored per member (``Message.mentions_room``). The
    unique constraint's index, (user, message), serves a user's mentions newest first; ``room``
    (the message's, copied) and its index serve a member's unread mentions in one room."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="mention_set")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["-message_id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "message"], name="mention_user_message_unique"),
        ]
        indexes = [models.Index(fields=["user", "room", "message"], name="mention_user_room_idx")]

    def __str__(self) -> str:
        return f"@{self.user_id} in message {self.message_id}"


class Reaction(models.Model):
    """``user`` reacted to ``message`` with ``emoji`` (one emoji, fully qualified:
    ``rooms.reactions.normalize_emoji``). Unique (message, user, emoji): a second add is the same
    row; the constraint's index also serves a page's reactions by message. Written only by
    ``rooms.reactions``."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=REACTION_EMOJI_MAX_LENGTH)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["message_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "user", "emoji"], name="reaction_message_user_emoji_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.emoji} by {self.user_id} on message {self.message_id}"


class SendWindow(models.Model):
    """A user's WebSocket sends counted in the current fixed window of ``WS_SEND_RATE``, over
    every node: the window is ``period`` seconds long and the ``bucket``-th since the Unix epoch
    (``floor(unix time / period)``); ``count`` sends were tried in it (refused ones included).

    Only ``rooms.services.message_post_async`` writes it, inside the statement that stores the
    message (``_post_sql``): counting costs no extra round trip, and the count commits or rolls
    back with the send. One row per user who has sent over a socket."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    period = models.PositiveIntegerField()
    bucket = models.BigIntegerField()
    count = models.PositiveIntegerField()

    def __str__(self) -> str:
        return f"{self.user_id}: {self.count} in {self.period} s window {self.bucket}"


class UserSettings(models.Model):
    """A user's preferences; no row means the defaults. ``dms_from``: who may open a new direct
    message with them: ``"anyone"`` (default) or ``"shared_rooms"`` (only users who share a group
    room with them, both non-banned members). Written by ``rooms.dms.user_settings_update``."""

    class DmsFrom(models.TextChoices):
        ANYONE = "anyone"
        SHARED_ROOMS = "shared_rooms"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="chat_settings"
    )
    dms_from = models.CharField(max_length=16, choices=DmsFrom.choices, default=DmsFrom.ANYONE)

    class Meta:
        verbose_name_plural = "user settings"

    def __str__(self) -> str:
        return f"settings of {self.user_id}"


class Attachment(models.Model):
    """A file uploaded into a room (``rooms.attachments``): stored through Django's default
    storage under ``file`` (a random name, never the uploader's), with ``name`` (the uploader's
    file name, cleaned, shown and used for downloads), ``size`` (bytes), ``content_type`` (read
    from the content, not the name) and, for images, ``width`` / ``height`` (pixels) and a
    ``thumbnail`` (storage name, or empty). ``message`` is NULL until the uploader sends a
    message carrying it (once: an attachment belongs to one message)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="attachments")
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, null=True, blank=True, related_name="attachment_set"
    )
    file = models.CharField(max_length=255)
    thumbnail = models.CharField(max_length=255, blank=True)
    name = models.CharField(max_length=200)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=100)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.content_type}, {self.size} bytes)"
