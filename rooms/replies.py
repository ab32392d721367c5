"""Replies and threads: a message may answer another message of the same room (``reply_to``:
the parent's ``seq`` in ``message.send`` and the REST send), and a parent counts its replies.

Storing (``rooms.services.message_post`` and the one-statement send): the parent is looked up
by ``seq`` in the sender's room, with its row locked, in the send's own transaction (the
one-statement send: in the statement); no such message, or a deleted one, refuses the send with
``reply_not_found`` (400; the socket's error frame, socket kept) and stores nothing. A message of
another room cannot be named: a seq is always read in the room the message is sent to. A reply
to a reply is a reply to that message (threads are one level deep per parent, as a quote).

The parent's ``reply_count`` (replies not deleted) goes up in the same transaction, and after
commit every member on every node gets::

    {"type": "thread.updated", "room": slug, "seq": parent seq, "reply_count": int}

(``events.broadcast_thread_updated``), also when a reply is deleted (the count goes down). The
reply itself arrives as a usual ``message`` frame carrying ``reply_to`` and ``parent``.

The message shape (``rooms.serializers``) carries::

    "reply_to": int | null          (the parent's seq)
    "parent": {"seq": int, "author": {"id", "username", "display_name"}, "excerpt": str,
               "deleted": bool} | null
    "reply_count": int

``excerpt`` is the start of the parent's text as readers see it, without Markdown: its current
``body_html`` (so an edit shows) made plain by ``rooms.formatting.plain_text`` (a link is its
text, code without backticks, a mention ``@name``, line breaks spaces), cut to
``EXCERPT_LENGTH`` characters: ``excerpt``. It is "" once the parent is deleted, when
``deleted`` is true (a deleted parent shows as deleted), and for a row stored without
``body_html`` (only made behind the services' back). A plain string: clients insert it as text,
never as HTML. The same function gives it on every path (``preview`` from a row,
``rooms.message_shape`` from its columns, the one-statement send from its answer), so REST
history, live frames and replay carry the same text. Read with one join for a whole page
(``select_related("reply_to__author")``); the excerpt costs 1-4 µs of CPU a reply, so well
under a millisecond for a history page of 200 replies.

The thread view (``thread_replies``): ``GET /api/rooms/<slug>/messages/<id>/replies/``, the
replies of one message in seq order, paged by seq (``after_seq``).
"""

from django.db import transaction
from django.db.models import F

from . import events
from .formatting import plain_text
from .models import Message

EXCERPT_LENGTH = 120  # characters of the parent's text in a reply's preview


def excerpt(body_html: str) -> str:
    """A reply's preview of its (live) parent's text: ``body_html`` without markup, its first
    ``EXCERPT_LENGTH`` characters."""
    return plain_text(body_html)[:EXCERPT_LENGTH] if body_html else ""


def preview(parent: Message) -> dict:
    """A reply's view of its parent (``parent`` in the message shape); needs its author."""
    deleted = parent.deleted_at is not None
    return {
        "seq": parent.seq,
        "author": {
            "id": parent.author_id,
            "username": parent.author.username,
            "display_name": parent.author.first_name,
        },
        "excerpt": "" if deleted else excerpt(parent.body_html),
        "deleted": deleted,
    }


def parent_of(message: Message) -> dict | None:
    """``message``'s ``parent`` field: None for a message that answers none (or whose parent
    row is gone with its room); taken from the send's statement when it gave it
    (``message.parent_preview``, ``from_statement``), else from ``message.reply_to``
    (select_related)."""
    known = getattr(message, "parent_preview", None)
    if known is not None:
        return known
    if message.reply_to_id is None:
        return None
    parent = message.reply_to
    return None if parent is None else preview(parent)


def from_statement(parent: dict) -> dict:
    """The ``parent`` preview from the one-statement send's answer (``rooms.services._post_sql``:
    ``{"seq", "author", "body_html", "deleted"}``, the parent live and locked): its
    ``body_html`` made the ``excerpt``, the keys in ``preview``'s order."""
    return {
        "seq": parent["seq"],
        "author": parent["author"],
        "excerpt": excerpt(parent["body_html"]),
        "deleted": parent["deleted"],
    }


def reply_to_seq(message: Message) -> int | None:
    known = getattr(message, "parent_preview", None)
    if known is not None:
        return known["seq"]
    if message.reply_to_id is None:
        return None
    return message.reply_to.seq


def find_parent(*, room_id: int, seq: int) -> Message | None:
    """The message ``seq`` of the room, locked until the caller's transaction ends, with its
    author; None when there is none. (The caller refuses a deleted one.)"""
    return (
        Message.objects.select_for_update(of=("self",))
        .select_related("author")
        .filter(room_id=room_id, seq=seq)
        .first()
    )


def count_reply(*, parent: Message, room_slug: str) -> None:
    """In the sender's transaction, the parent locked: one more reply; ``thread.updated``
    after commit."""
    Message.objects.filter(pk=parent.pk).update(reply_count=F("reply_count") + 1)
    parent.reply_count += 1
    transaction.on_commit(
        lambda count=parent.reply_count: events.broadcast_thread_updated(
            room_id=parent.room_id, room_slug=room_slug, seq=parent.seq, reply_count=count
        )
    )


def uncount_reply(*, reply: Message, room_slug: str) -> None:
    """In ``message_delete``'s transaction (``reply`` locked, being deleted): its parent has one
    reply fewer; ``thread.updated`` after commit. Nothing for a message that answers none."""
    if reply.reply_to_id is None:
        return
    parent = Message.objects.select_for_update(of=("self",)).filter(pk=reply.reply_to_id).first()
    if parent is None:
        return
    parent.reply_count = max(0, parent.reply_count - 1)
    Message.objects.filter(pk=parent.pk).update(reply_count=parent.reply_count)
    transaction.on_commit(
        lambda: events.broadcast_thread_updated(
            room_id=parent.room_id, room_slug=room_slug, seq=parent.seq, reply_count=parent.reply_count
        )
    )


THREAD_DEFAULT_LIMIT = 50
THREAD_MAX_LIMIT = 200


def thread_replies(
    *, parent: Message, after_seq: int = 0, limit: int = THREAD_DEFAULT_LIMIT
) -> tuple[list[Message], bool]:
    """The replies to ``parent`` with ``seq > after_seq``, oldest first, up to ``limit``, and
    whether there are more; deleted ones keep their place (shown as deleted, like history).
    Loaded for the message shape in a fixed number of queries."""
    from .selectors import MESSAGE_RELATED, attach

    qs = (
        Message.objects.filter(reply_to=parent, seq__gt=after_seq)
        .select_related(*MESSAGE_RELATED)
        .order_by("seq")
    )
    page = list(qs[: limit + 1])
    return attach(page[:limit]), len(page) > limit


def thread_replies_data(
    *, parent: Message, after_seq: int = 0, limit: int = THREAD_DEFAULT_LIMIT
) -> tuple[list[dict], bool]:
    """``thread_replies`` in the wire shape (``rooms.message_shape``: exactly
    ``MessageSerializer(..., many=True).data``): the replies to ``parent`` with ``seq >
    after_seq``, oldest first, up to ``limit``, and whether there are more. At most 4 queries."""
    from .message_shape import messages_data

    qs = Message.objects.filter(reply_to=parent, seq__gt=after_seq).order_by("seq")
    page = messages_data(qs[: limit + 1])
    return page[:limit], len(page) > limit
