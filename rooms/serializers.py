"""Wire shapes. One *output* shape per noun; *input* serializers per operation.

``MessageSerializer`` is the only shape a message has anywhere: live ``message`` frames, the
room page's initial history and REST history all carry it (lists of messages are built by
``rooms.message_shape`` and single broadcasts by ``message_data``, both checked against it)::

    {"id": int, "room": str (slug), "seq": int,
     "author": {"id": int, "username": str, "display_name": str},
     "body": str, "created_at": str (ISO 8601, UTC, "...Z"), "server_id": str,
     "edited_at": str | null, "deleted": bool,
     "mentions": [{"id": int, "username": str}, ...], "mentions_room": bool,
     "body_html": str,
     "reactions": [{"emoji": str, "count": int, "users": [{"id": int, "username": str}, ...]}, ...],
     "reply_to": int | null, "parent": {"seq", "author", "excerpt", "deleted"} | null,
     "reply_count": int,
     "attachments": [{"id", "name", "size", "content_type", "url", "thumbnail_url", "width",
                      "height"}, ...]}

A deleted message keeps its place (id, seq) with ``"body": ""``, ``"body_html": ""`` and
``"deleted": true`` (and no mentions). ``body_html``: the body rendered to sanitised HTML
(``rooms.formatting``: a Markdown subset, links with ``rel="noopener noreferrer"
target="_blank"``), made when the message was stored or last edited; ``body`` stays the source.
``reactions`` (``rooms.reactions``): each emoji once, in the order first added, with how many
reacted and who (the first 100); ``[]`` for none and for a deleted message. ``reply_to``,
``parent`` and ``reply_count``: ``rooms.replies`` (the seq this message answers and a preview of
that message; how many replies this one has). ``mentions``: the room's members mentioned by ``@username``, stored at send (and
edit) time (``rooms.mentions``); ``mentions_room``: the body has ``@room``. ``attachments``: the
files sent with it (``rooms.attachments``; none for a deleted message).
"""

from django.core.validators import ProhibitNullCharactersValidator
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from . import mentions as mentions_module
from . import reactions as reactions_module
from . import replies as replies_module
from .models import BODY_MAX_LENGTH, CLIENT_MSG_ID_MAX_LENGTH, Membership, Message, Room, UserSettings
from .text import CONTROL_BUT_LINES_RE, NOTHING_VISIBLE, is_valid_text  # noqa: F401 (is_valid_text: consumers)


class AuthorSerializer(serializers.Serializer):
    """A light user reference: ``{"id", "username"}`` (presence, typing, mentions, ``dm_with``)."""

    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)


class UserSerializer(AuthorSerializer):
    """A user as shown beside their words: ``{"id", "username", "display_name"}``, the author of
    a message, a member, a room's creator. ``display_name`` is the name the user chose on the
    settings page (``rooms.profiles``; "" when none: show the username)."""

    display_name = serializers.CharField(source="first_name", read_only=True)


class ReactionSerializer(serializers.Serializer):
    """One emoji's reactions on a message: ``{"emoji": "👍", "count": 2, "users": [{"id",
    "username"}, ...]}`` (users in the order they reacted, the first 100)."""

    emoji = serializers.CharField(read_only=True)
    count = serializers.IntegerField(read_only=True)
    users = AuthorSerializer(many=True, read_only=True)


class ParentSerializer(serializers.Serializer):
    """A reply's preview of the message it answers: ``{"seq", "author": {"id", "username",
    "display_name"}, "excerpt": str (the start of its text as read, without Markdown: ``replies.excerpt``; "" once deleted), "deleted":
    bool}``."""

    seq = serializers.IntegerField(read_only=True)
    author = UserSerializer(read_only=True)
    excerpt = serializers.CharField(read_only=True)
    deleted = serializers.BooleanField(read_only=True)


class AttachmentShape(serializers.Serializer):
    """An attachment in a message (``rooms.attachments.attachment_data``): sizes in bytes,
    ``width`` / ``height`` in pixels (null unless an image), ``thumbnail_url`` null unless an
    image."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    size = serializers.IntegerField(min_value=0)
    content_type = serializers.CharField()
    url = serializers.CharField()
    thumbnail_url = serializers.CharField(allow_null=True)
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)


class MessageSerializer(serializers.ModelSerializer):
    """The message as every client sees it. Needs ``room`` and ``author`` loaded (select_related)."""

    room = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    author = UserSerializer(read_only=True)
    deleted = serializers.SerializerMethodField()
    mentions = serializers.SerializerMethodField()
    mentions_room = serializers.SerializerMethodField()
    reactions = serializers.SerializerMethodField()
    reply_to = serializers.SerializerMethodField()
    parent = serializers.SerializerMethodField()
    attachments = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id",
            "room",
            "seq",
            "author",
            "body",
            "created_at",
            "server_id",
            "edited_at",
            "deleted",
            "mentions",
            "mentions_room",
            "body_html",
            "reactions",
            "reply_to",
            "parent",
            "reply_count",
            "attachments",
        ]
        read_only_fields = fields

    def get_deleted(self, message: Message) -> bool:
        return message.deleted_at is not None

    @extend_schema_field(AuthorSerializer(many=True))
    def get_mentions(self, message: Message) -> list[dict]:
        return mentions_module.mentions_of(message)

    @extend_schema_field(ReactionSerializer(many=True))
    def get_reactions(self, message: Message) -> list[dict]:
        return reactions_module.reactions_of(message)

    def get_reply_to(self, message: Message) -> int | None:
        return replies_module.reply_to_seq(message)

    @extend_schema_field(ParentSerializer(allow_null=True))
    def get_parent(self, message: Message) -> dict | None:
        return replies_module.parent_of(message)

    def get_mentions_room(self, message: Message) -> bool:
        return message.mentions_room and message.deleted_at is None

    @extend_schema_field(AttachmentShape(many=True))
    def get_attachments(self, message: Message) -> list[dict]:
        return _attachments_of(message)

    def to_representation(self, message: Message) -> dict:
        data = super().to_representation(message)
        if message.deleted_at is not None:
            data["body"] = data["body_html"] = ""
        return data


def _attachments_of(message: Message) -> list[dict]:
    """``rooms.attachments.attachments_of`` (imported late: it imports the services, which import
    this module); no query when the message has them loaded or is a plain one-statement send."""
    loaded = getattr(message, "attachment_list", None)
    if loaded is not None and not loaded:
        return []
    from .attachments import attachments_of

    return attachments_of(message)


_DATETIME = serializers.DateTimeField(read_only=True)  # the same representation as the ModelSerializer's


def _datetime(value):
    return None if value is None else _DATETIME.to_representation(value)


def message_data(message: Message) -> dict:
    """``MessageSerializer(message).data`` as a plain dict (the same keys, order and values, so
    the same JSON text), built without DRF's per-field machinery: the hot path for every stored
    message's broadcast. Needs ``room`` and ``author`` loaded. ``MessageSerializer`` stays the
    shape's definition (single messages over REST, the schema); lists: ``rooms.message_shape``."""
    deleted = message.deleted_at is not None
    author = message.author
    return {
        "id": message.pk,
        "room": message.room.slug,
        "seq": message.seq,
        "author": {"id": author.pk, "username": author.username, "display_name": author.first_name},
        "body": "" if deleted else message.body,
        "created_at": _datetime(message.created_at),
        "server_id": message.server_id,
        "edited_at": _datetime(message.edited_at),
        "deleted": deleted,
        "mentions": mentions_module.mentions_of(message),
        "mentions_room": message.mentions_room and not deleted,
        "body_html": "" if deleted else message.body_html,
        "reactions": reactions_module.reactions_of(message),
        "reply_to": replies_module.reply_to_seq(message),
        "parent": replies_module.parent_of(message),
        "reply_count": message.reply_count,
        "attachments": _attachments_of(message),
    }


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text. Text
    rules (NUL, lone surrogates) come from ``validate_text`` alone, one error each, so DRF's own
    two validators for them are left out."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            v
            for v in self.validators
            if not isinstance(v, (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator))
        ]

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A BooleanField that takes JSON ``true`` and ``false`` only, or in a form or multipart body
    (text) ``"true"`` and ``"false"`` in any case. DRF's own would read ``"yes"``, ``"on"``,
    ``1`` or ``"0"`` as a boolean; here they are 400 ``"\"yes\" is not a valid boolean."``."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        if isinstance(data, str) and data.lower() in ("true", "false"):
            return data.lower() == "true"
        self.fail("invalid", input=data)


_NOTHING_VISIBLE = NOTHING_VISIBLE  # the rule lives in rooms.text, shared with room names


def validate_not_blank(value: str) -> str:
    """Refuse a body with nothing visible: empty, or only characters that show nothing on their
    own (``_NOTHING_VISIBLE``: whitespace, zero-width and other default-ignorable characters
    such as U+200B or the Hangul filler U+3164, format and control characters, U+2800 and
    U+1D159). A body with anything visible besides them is kept exactly as sent. Raises
    ``ValidationError`` with code ``blank`` (the ``empty_body`` frame, a REST 400)."""
    if _NOTHING_VISIBLE.fullmatch(value):
        raise serializers.ValidationError(_("The message body is empty."), code="blank")
    return value


def validate_body_controls(value: str) -> str:
    """Refuse a body with a control character (C0, DEL, C1: a bell, a terminal escape, U+009B)
    other than the ones that break lines or indent (tab, line feed, carriage return, vertical
    tab, form feed, next line: ``text.CONTROL_BUT_LINES_RE``). Raises ``ValidationError`` with code
    ``invalid_text`` (the ``invalid_text`` frame, a REST 400), as for NUL, which is one of them
    and is refused first by ``validate_text``."""
    if CONTROL_BUT_LINES_RE.search(value):
        raise serializers.ValidationError(
            _("The message body may not contain control characters (tabs and line breaks are fine)."),
            code="invalid_text",
        )
    return value


def validate_text(value: str) -> str:
    """Refuse text PostgreSQL cannot store or UTF-8 cannot encode.

    Raises ``ValidationError`` (code ``invalid_text``) for a lone surrogate such as the JSON
    escape ``"\\ud83d"`` or a NUL character.
    """
    if "\x00" in value:
        raise serializers.ValidationError(_("Text may not contain NUL characters."), code="invalid_text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError(
            _("Text is not valid Unicode (lone surrogate)."), code="invalid_text"
        ) from None
    return value


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that takes JSON whole numbers only (not ``"5"``, ``5.0`` or ``true``)."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field(
    {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}, "maxItems": 10}
)
class AttachmentIdsField(serializers.Field):
    """A list of at most 10 attachment ids (whole numbers 1..2**63-1, not booleans or floats);
    one error for the field, code ``invalid`` whatever is wrong (the shape of every other field
    error), its message saying what: not a list, over 10, an id not a whole number, or one out of
    range. Repeated ids pass here: ``rooms.attachments.attachments_claim`` refuses them
    (``invalid_attachment``)."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError(
                _("Must be a list of attachment ids, such as [31, 32]."), code="invalid"
            )
        if len(data) > 10:
            raise serializers.ValidationError(
                _("A message carries at most %(count)s attachments.") % {"count": 10}, code="invalid"
            )
        if not all(type(i) is int for i in data):
            raise serializers.ValidationError(_("Attachment ids must be whole numbers."), code="invalid")
        if not all(1 <= i < 2**63 for i in data):
            raise serializers.ValidationError(
                _("Attachment ids must be whole numbers from 1 to %(max)s.") % {"max": 2**63 - 1},
                code="invalid",
            )
        return data

    def to_representation(self, value):
        return value


class MessageSendFrame(serializers.Serializer):
    """Input of ``{"type": "message.send", "body": str, "client_msg_id": str, "reply_to"?: int,
    "attachments"?: [int, ...]}``.

    ``body``: 1..4,000 characters, not only whitespace (kept as sent, not trimmed), no control
    character but tab and line breaks (``invalid_text``; ``validate_body_controls``).
    ``client_msg_id``: 1..64 characters chosen by the client, e.g. a UUID; a retry reuses it.
    ``reply_to``: optional (absent or null: none), the seq of the message of the same room this
    one answers (``rooms.replies``).
    ``attachments``: up to 10 ids of the sender's unsent uploads in the room (``rooms.attachments``).
    """

    attachments = AttachmentIdsField(
        required=False,
        help_text="Ids of your unsent uploads in this room (POST .../attachments/), at most 10.",
    )

    body = StrictCharField(trim_whitespace=False, max_length=BODY_MAX_LENGTH, validators=[validate_text])
    client_msg_id = StrictCharField(
        trim_whitespace=False, max_length=CLIENT_MSG_ID_MAX_LENGTH, validators=[validate_text]
    )
    reply_to = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=2**63 - 1,
        help_text="The seq of the message of this room it answers.",
    )

    def validate_body(self, value: str) -> str:
        return validate_body_controls(validate_not_blank(value))

    def validate_client_msg_id(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError(_("client_msg_id is blank."), code="blank")
        return value


MessageCreateSerializer = MessageSendFrame  # REST send body: the same fields and rules


def send_frame_accepted(content: dict) -> dict | None:
    """``MessageSendFrame().run_validation(content)`` for the usual frame, a plain send
    (``body`` and ``client_msg_id`` only: no ``reply_to`` but null, no ``attachments``) that
    passes every rule, without DRF's per-field machinery: ``{"body", "client_msg_id"}`` (and
    ``reply_to: None`` when the frame has it), the same dict DRF answers. None for anything
    else, valid or not: the caller then runs ``MessageSendFrame``, which says why (this never
    refuses, so every error and its code still come from the serializer). The socket's hot path
    (``message.send``); tests/test_message_shape.py holds both to the same answers."""
    body = content.get("body")
    client_msg_id = content.get("client_msg_id")
    if (
        type(body) is not str
        or type(client_msg_id) is not str
        or not 0 < len(body) <= BODY_MAX_LENGTH
        or not 0 < len(client_msg_id) <= CLIENT_MSG_ID_MAX_LENGTH
        or "attachments" in content
        or CONTROL_BUT_LINES_RE.search(body)
        or "\x00" in client_msg_id
        or not client_msg_id.strip()
        or _NOTHING_VISIBLE.fullmatch(body)
    ):
        return None
    try:
        body.encode("utf-8")
        client_msg_id.encode("utf-8")
    except UnicodeEncodeError:
        return None
    validated = {"body": body, "client_msg_id": client_msg_id}
    if "reply_to" in content:
        if content["reply_to"] is not None:
            return None
        validated["reply_to"] = None
    return validated


class MessageEditSerializer(serializers.Serializer):
    """``PATCH`` of a message: the new ``body`` (same rules as sending)."""

    body = StrictCharField(trim_whitespace=False, max_length=BODY_MAX_LENGTH, validators=[validate_text])

    def validate_body(self, value: str) -> str:
        return validate_body_controls(validate_not_blank(value))


class RoomSerializer(serializers.ModelSerializer):
    """A room as the API shows it. ``my_role``: the caller's role (``owner``, ``moderator``,
    ``member``) or null when not a member; ``last_seq``: the newest message's seq.

    ``kind``: ``"room"`` or ``"dm"`` (a direct message, ``rooms.dms``); ``dm_with``: for a DM
    the other person ``{"id", "username"}`` from the reader's side, else null. A DM's ``name``
    is the other person's username, as each side sees it. Context: ``roles`` ``{room id:
    role}``, ``dm_with`` ``{room id: {"id", "username"}}`` (else looked up for the ``viewer`` or
    the request's user).

    The reader's read state (``rooms.reads``; 0 when not a member): ``last_read_seq``, the
    highest seq they have read; ``unread_count``, messages after it that are not their own and
    not deleted; ``mention_count``, those of them that mention the reader or ``@room``. Taken
    from ``reads.with_read_state``'s annotations when the room was loaded with them (one query
    for a whole list), else read for the one room (the ``viewer`` or the request's user)."""

    created_by = UserSerializer(read_only=True)
    archived = serializers.SerializerMethodField()
    my_role = serializers.SerializerMethodField()
    dm_with = serializers.SerializerMethodField()
    last_read_seq = serializers.SerializerMethodField()
    unread_count = serializers.SerializerMethodField()
    mention_count = serializers.SerializerMethodField()

    class Meta:
        model = Room
        fields = [
            "slug",
            "name",
            "description",
            "is_private",
            "archived",
            "archived_at",
            "created_by",
            "created_at",
            "last_seq",
            "my_role",
            "kind",
            "dm_with",
            "last_read_seq",
            "unread_count",
            "mention_count",
        ]
        read_only_fields = fields

    @extend_schema_field(AuthorSerializer(allow_null=True))
    def get_dm_with(self, room: Room) -> dict | None:
        if not room.is_dm:
            return None
        known = self.context.get("dm_with", {})
        if room.pk in known:
            return known[room.pk]
        from .dms import dm_with

        viewer = self.context.get("viewer")
        if viewer is None and self.context.get("request") is not None:
            viewer = self.context["request"].user
        return None if viewer is None else dm_with(room, viewer)

    def to_representation(self, room: Room) -> dict:
        data = super().to_representation(room)
        if data["dm_with"] is not None:
            data["name"] = data["dm_with"]["username"]
        return data

    def _read_state(self, room: Room):
        state = getattr(room, "_read_state", None)
        if state is None:
            from .reads import NONE, ReadState, read_state

            if hasattr(room, "my_unread_count"):
                state = ReadState(room.my_last_read_seq, room.my_unread_count, room.my_mention_count)
            else:
                user = self.context.get("viewer")
                if user is None:
                    user = getattr(self.context.get("request"), "user", None)
                state = (
                    read_state(room=room, user=user) if user is not None and user.is_authenticated else NONE
                )
            room._read_state = state
        return state

    def get_last_read_seq(self, room: Room) -> int:
        return self._read_state(room).last_read_seq

    def get_unread_count(self, room: Room) -> int:
        return self._read_state(room).unread_count

    def get_mention_count(self, room: Room) -> int:
        return self._read_state(room).mention_count

    def get_archived(self, room: Room) -> bool:
        return room.is_archived

    def get_my_role(self, room: Room) -> str | None:
        return self.context.get("roles", {}).get(room.pk)


class RoomCreateSerializer(serializers.Serializer):
    """``POST /api/rooms/``. ``slug`` may be omitted: it is then made from the name."""

    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(
        max_length=64,
        required=False,
        allow_blank=True,
        allow_unicode=True,
        help_text="Letters of any script, digits, - and _ (NFKC-normalised; unique regardless of case). "
        "Omitted: made from the name.",
    )
    description = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")
    is_private = StrictBooleanField(required=False, default=False)


class RoomUpdateSerializer(serializers.Serializer):
    """``PATCH /api/rooms/<slug>/`` (owner or moderator). The slug never changes."""

    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    is_private = StrictBooleanField(required=False)


class DmOpenSerializer(serializers.Serializer):
    """``POST /api/dms/``: ``{"username": str}``, the other person."""

    username = StrictCharField(max_length=150, validators=[validate_text])


class UserSettingsSerializer(serializers.Serializer):
    """``GET`` / ``PATCH /api/me/settings/``: ``{"dms_from": "anyone" | "shared_rooms"}`` (who may
    start a new direct message with you: anyone, or only people who share a room with you)."""

    dms_from = serializers.ChoiceField(choices=UserSettings.DmsFrom.choices)


class MembershipSerializer(serializers.ModelSerializer):
    """A member: ``{"user": {"id", "username", "display_name"}, "role", "joined_at", "muted_until",
    "banned"}``."""

    user = UserSerializer(read_only=True)
    banned = serializers.SerializerMethodField()

    class Meta:
        model = Membership
        fields = ["user", "role", "joined_at", "muted_until", "banned"]
        read_only_fields = fields

    def get_banned(self, membership: Membership) -> bool:
        return membership.is_banned


class MemberAddSerializer(serializers.Serializer):
    """``POST /api/rooms/<slug>/members/``: ``{}`` joins yourself; ``{"username", "role"}`` adds
    someone (role ``member`` or ``moderator``)."""

    username = serializers.CharField(required=False, allow_blank=True, max_length=150)
    role = serializers.ChoiceField(
        choices=[Membership.Role.MEMBER, Membership.Role.MODERATOR], default=Membership.Role.MEMBER
    )


class MemberUpdateSerializer(serializers.Serializer):
    """``PATCH /api/rooms/<slug>/members/<username>/`` (owner): ``{"role": "moderator" | "member"}``."""

    role = serializers.ChoiceField(choices=[Membership.Role.MEMBER, Membership.Role.MODERATOR])


class MuteSerializer(serializers.Serializer):
    """``{"until": ISO 8601 datetime in the future}`` or ``{"minutes": 1..525600}``."""

    until = serializers.DateTimeField(required=False)
    minutes = serializers.IntegerField(required=False, min_value=1, max_value=525600)

    def validate(self, attrs):
        from datetime import timedelta

        from django.utils import timezone

        if ("until" in attrs) == ("minutes" in attrs):
            raise serializers.ValidationError(_("Give either until or minutes."))
        until = attrs.get("until") or timezone.now() + timedelta(minutes=attrs["minutes"])
        if until <= timezone.now():
            raise serializers.ValidationError({"until": [_("Must be in the future.")]})
        return {"until": until}


class ReactionInputSerializer(serializers.Serializer):
    """``POST`` / ``DELETE /api/rooms/<slug>/messages/<id>/reactions/``: ``{"emoji": "👍"}`` (for
    ``DELETE`` also ``?emoji=``): exactly one emoji (``rooms.reactions.normalize_emoji``), else
    400 ``{"detail", "code": "invalid_emoji"}``."""

    emoji = serializers.CharField(max_length=64, trim_whitespace=False)


class ReactionStateSerializer(serializers.Serializer):
    """The answer of a reaction change: ``{"room": slug, "seq": int, "reactions": [...]}``, the
    message's whole reaction list after it (the ``reaction.updated`` frame's fields)."""

    room = serializers.CharField()
    seq = serializers.IntegerField()
    reactions = ReactionSerializer(many=True)


class ReadReportSerializer(serializers.Serializer):
    """``POST /api/rooms/<slug>/read/``: ``{"seq": int}``, the highest seq the reader has seen
    (0..2**63 - 1; beyond the room's last seq it is clamped)."""

    seq = serializers.IntegerField(min_value=0, max_value=2**63 - 1)

    def to_internal_value(self, data):
        if isinstance(data, dict) and isinstance(data.get("seq"), (bool, float)):
            raise serializers.ValidationError({"seq": [_("A whole number is required.")]})
        return super().to_internal_value(data)


class ReadStateSerializer(serializers.Serializer):
    """The caller's read state in a room: ``{"last_read_seq", "unread_count", "mention_count"}``."""

    last_read_seq = serializers.IntegerField()
    unread_count = serializers.IntegerField()
    mention_count = serializers.IntegerField()


class MentionSerializer(serializers.Serializer):
    """One of the caller's mentions: ``{"room": slug, "message": {...message...}}``."""

    room = serializers.CharField(source="room.slug")
    message = MessageSerializer(source="*")


class SearchResultSerializer(serializers.Serializer):
    """One search result (``rooms.search``): ``{"room": slug, "message": {...message...},
    "highlights": [[start, end], ...]}``. ``highlights``: where the query's terms occur in
    ``message.body``, as ranges of Unicode code points (end exclusive), sorted and not
    overlapping; plain numbers, never HTML: a client escapes the body and marks the ranges."""

    room = serializers.CharField(source="room.slug")
    message = MessageSerializer(source="*")
    highlights = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(min_value=0), min_length=2, max_length=2)
    )


class AttachmentSerializer(AttachmentShape):
    """An uploaded attachment (the answer to an upload): the shape a message carries."""

    def to_representation(self, attachment) -> dict:
        from .attachments import attachment_data

        return attachment_data(attachment)
