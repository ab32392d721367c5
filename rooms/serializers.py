"""Wire shapes. One *output* shape per noun; *input* serializers per operation.

``MessageSerializer`` is the only shape a message has anywhere: live ``message`` frames, the
room page's initial history and (later) REST history all use it::

    {"id": int, "room": str (slug), "seq": int,
     "author": {"id": int, "username": str},
     "body": str, "created_at": str (ISO 8601, UTC, "...Z"), "server_id": str}
"""

from rest_framework import serializers

from .models import BODY_MAX_LENGTH, CLIENT_MSG_ID_MAX_LENGTH, Message


class AuthorSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)


class MessageSerializer(serializers.ModelSerializer):
    """The message as every client sees it. Needs ``room`` and ``author`` loaded (select_related)."""

    room = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    author = AuthorSerializer(read_only=True)

    class Meta:
        model = Message
        fields = ["id", "room", "seq", "author", "body", "created_at", "server_id"]
        read_only_fields = fields


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def validate_text(value: str) -> str:
    """Refuse text PostgreSQL cannot store or UTF-8 cannot encode.

    Raises ``ValidationError`` (code ``invalid_text``) for a lone surrogate such as the JSON
    escape ``"\\ud83d"`` or a NUL character.
    """
    if "\x00" in value:
        raise serializers.ValidationError("Text may not contain NUL characters.", code="invalid_text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError(
            "Text is not valid Unicode (lone surrogate).", code="invalid_text"
        ) from None
    return value


class MessageSendFrame(serializers.Serializer):
    """Input of ``{"type": "message.send", "body": str, "client_msg_id": str}``.

    ``body``: 1..4,000 characters, not only whitespace (kept as sent, not trimmed).
    ``client_msg_id``: 1..64 characters chosen by the client, e.g. a UUID; a retry reuses it.
    """

    body = StrictCharField(
        trim_whitespace=False, max_length=BODY_MAX_LENGTH, validators=[validate_text]
    )
    client_msg_id = StrictCharField(
        max_length=CLIENT_MSG_ID_MAX_LENGTH, validators=[validate_text]
    )

    def validate_body(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The message body is empty.", code="blank")
        return value
