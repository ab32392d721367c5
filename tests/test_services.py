"""rooms.services against the real PostgreSQL, and the broadcast on the real Redis layer."""

import json
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.db import connections, transaction

from rooms import events, services
from rooms.models import Message, Room
from rooms.serializers import MessageSerializer
from tests import factories


def post(room, author, body="hi", client_msg_id=None):
    return services.message_post(
        room=room, author=author, body=body, client_msg_id=client_msg_id or f"id-{body}"
    )


@pytest.mark.django_db
def test_seq_starts_at_one_and_counts_per_room(room, user, django_capture_on_commit_callbacks):
    other = factories.make_room(created_by=user, slug="other")
    with django_capture_on_commit_callbacks(execute=False):
        seqs = [post(room, user, f"m{i}").message.seq for i in range(3)]
        other_seq = post(other, user, "x").message.seq
    assert seqs == [1, 2, 3] and other_seq == 1
    room.refresh_from_db()
    assert room.last_seq == 3


@pytest.mark.django_db
def test_broadcast_is_registered_on_commit_once_per_stored_message(room, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        first = post(room, user, "hello", "c-1")
        again = post(room, user, "hello", "c-1")
    assert first.created and not again.created
    assert again.message.pk == first.message.pk and again.message.seq == first.message.seq
    assert len(callbacks) == 1
    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_same_client_msg_id_from_another_author_or_room_is_another_message(room, user, other_user):
    with transaction.atomic():
        a = post(room, user, "x", "same")
        b = post(room, other_user, "x", "same")
    assert a.created and b.created and (a.message.seq, b.message.seq) == (1, 2)


@pytest.mark.django_db
def test_rolled_back_send_broadcasts_nothing_and_leaves_no_gap(room, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            post(room, user, "doomed")
            raise RuntimeError("the outer transaction fails")
    assert callbacks == [] and not Message.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        assert post(room, user, "next").message.seq == 1


@pytest.mark.django_db(transaction=True)
def test_broadcast_reaches_the_group_after_commit_as_json_of_the_one_message_shape(room, user):
    """A channel in the room's group on the real layer receives one ``room.message`` event whose
    text is the ``message`` frame, JSON round-tripped."""

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(events.room_group_name(room.pk), channel)
        result = await database_sync_to_async(post)(room, user, "über <b>", "c-9")
        event = await layer.receive(channel)
        await layer.group_discard(events.room_group_name(room.pk), channel)
        return result, event

    result, event = async_to_sync(scenario)()
    assert event["type"] == "room.message" and event["seq"] == result.message.seq
    frame = json.loads(event["text"])
    message = Message.objects.select_related("author", "room").get(pk=result.message.pk)
    assert frame == {"type": "message", "message": json.loads(json.dumps(MessageSerializer(message).data))}
    assert frame["message"]["body"] == "über <b>"


@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_in_threads_get_gapless_seq(room, user, other_user):
    errors = []

    def sender(author, tag):
        try:
            for i in range(50):
                post(room, author, f"{tag}{i}")
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sender, args=(u, t)) for u, t in ((user, "a"), (other_user, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert list(Message.objects.filter(room=room).values_list("seq", flat=True)) == list(range(1, 101))
    assert Room.objects.get(pk=room.pk).last_seq == 100


@pytest.mark.django_db
def test_room_create_makes_slug_from_name_and_refuses_a_taken_slug(user):
    room = services.room_create(name="Café Talk", created_by=user)
    assert room.slug == "cafe-talk"
    with pytest.raises(ValidationError) as exc:
        services.room_create(name="Other", slug="cafe-talk", created_by=user)
    assert "slug" in exc.value.message_dict


@pytest.mark.parametrize(("retry_after", "text"), [(0.019, "0.1"), (0.1, "0.1"), (0.3, "0.3"), (0.101, "0.2"), (2.5, "2.5")])
def test_a_rate_limit_refusal_rounds_its_wait_up(retry_after, text):
    refusal = services.RateLimited(retry_after)
    assert refusal.detail == f"Too many messages; wait {text} s." and refusal.extra == {"retry_after": retry_after}


def test_each_edit_gets_a_later_edited_at_even_when_this_nodes_clock_is_behind(room, user):
    from datetime import timedelta

    from django.utils import timezone

    message = post(room, user, "v1").message
    ahead = timezone.now() + timedelta(seconds=5)  # the last edit came from a node whose clock is ahead
    Message.objects.filter(pk=message.pk).update(body="v2", edited_at=ahead)
    edited = services.message_edit(message=message, actor=user, body="v3")
    assert edited.edited_at == ahead + timedelta(microseconds=1)
    again = services.message_edit(message=edited, actor=user, body="v4")
    assert again.edited_at > edited.edited_at and Message.objects.get(pk=message.pk).body == "v4"
