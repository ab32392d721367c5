"""``manage.py post_messages ROOM USERNAME BODY [--count N]``: post announcements from the shell.

Each message goes through ``rooms.services.message_post`` like any other send: stored with the
room's next seq, then broadcast once to every member on every node. The command exits when all
are stored and handed to the channel layer; a broadcast the layer refused is reported (the
message stays stored and clients recover it by seq).
"""

import uuid

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from rooms import events, selectors, services
from rooms.serializers import MessageSendFrame


class Command(BaseCommand):
    help = "Post one or more messages to a room as a user (stored, then broadcast live)."

    def add_arguments(self, parser):
        parser.add_argument("room", help="room slug")
        parser.add_argument("username", help="author")
        parser.add_argument("body", help="message text (up to 4,000 characters)")
        parser.add_argument("--count", type=int, default=1, help="how many copies, numbered (default 1)")

    def handle(self, *args, room, username, body, count, **options):
        target = selectors.room_get(slug=room)
        if target is None:
            raise CommandError(f"no room with slug {room!r}")
        author = get_user_model().objects.filter(username=username).first()
        if author is None:
            raise CommandError(f"no user {username!r}")
        if not 1 <= count <= 10_000:
            raise CommandError("--count must be between 1 and 10000")
        failures_before = events.broadcast_failures
        last = None
        for n in range(1, count + 1):
            text = body if count == 1 else f"{body} ({n}/{count})"
            frame = MessageSendFrame(data={"body": text, "client_msg_id": "cli"})
            if not frame.is_valid():
                raise CommandError(f"invalid body: {frame.errors['body'][0]}")
            try:
                last = services.message_post(
                    room=target, author=author, body=text, client_msg_id=f"cli-{uuid.uuid4()}"
                ).message
            except services.ServiceError as exc:
                raise CommandError(f"refused: {exc.detail}") from None
        failed = events.broadcast_failures - failures_before
        self.stdout.write(f"posted {count} message(s) to {room}; last seq {last.seq}")
        if failed:
            self.stderr.write(f"{failed} broadcast(s) failed; the messages are stored")
