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
from rooms.models import Membership, Message, Room
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
def test_broadcast_is_registered_on_commit_once_per_stored_message(
    room, user, django_capture_on_commit_callbacks
):
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
def test_rolled_back_send_broadcasts_nothing_and_leaves_no_gap(
    room, user, django_capture_on_commit_callbacks
):
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


@pytest.mark.parametrize(
    ("retry_after", "text"), [(0.019, "0.1"), (0.1, "0.1"), (0.3, "0.3"), (0.101, "0.2"), (2.5, "2.5")]
)
def test_a_rate_limit_refusal_rounds_its_wait_up(retry_after, text):
    refusal = services.RateLimited(retry_after)
    assert refusal.detail == f"Too many messages; wait {text} s." and refusal.extra == {
        "retry_after": retry_after
    }


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


# --- the moderation hierarchy ---------------------------------------------------------------------


def _state():
    """Every row a moderation action could change, to show a refusal changed nothing."""
    from rooms.models import Membership

    return (
        list(Membership.objects.order_by("pk").values()),
        list(Message.objects.order_by("pk").values()),
        list(Room.objects.order_by("pk").values()),
    )


def _refused(call, error=services.Forbidden):
    """``call()`` raises ``error``, and no row changed and no broadcast was registered."""
    before = _state()
    with pytest.raises(error) as exc:
        call()
    assert _state() == before
    return exc.value


def _site_moderator():
    from django.contrib.auth.models import Permission

    staff = factories.make_user("sitemod", is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["change_message", "change_membership"])
    )
    return type(staff).objects.get(pk=staff.pk)  # permissions are cached per instance


@pytest.fixture
def ranks(room, user, other_user):
    """lobby: alice owner, bob and carol moderators, dave member; one message from each."""
    carol, dave = factories.make_user("carol"), factories.make_user("dave")
    for member, role in ((other_user, "moderator"), (carol, "moderator"), (dave, "member")):
        services.member_add(room=room, actor=user, user=member, role=role)
    said = {u.username: post(room, u, f"from {u.username}").message for u in (user, other_user, carol, dave)}
    return {"alice": user, "bob": other_user, "carol": carol, "dave": dave, "said": said}


def _actions_on(room, actor, target, message):
    from datetime import timedelta

    from django.utils import timezone

    soon = timezone.now() + timedelta(hours=1)
    return {
        "demote through member_add": lambda: services.member_add(
            room=room, actor=actor, user=target, role="member"
        ),
        "promote through member_add": lambda: services.member_add(
            room=room, actor=actor, user=target, role="moderator"
        ),
        "set role": lambda: services.member_set_role(room=room, actor=actor, user=target, role="member"),
        "mute": lambda: services.member_mute(room=room, actor=actor, user=target, until=soon),
        "unmute": lambda: services.member_mute(room=room, actor=actor, user=target, until=None),
        "ban": lambda: services.member_ban(room=room, actor=actor, user=target),
        "unban": lambda: services.member_unban(room=room, actor=actor, user=target),
        "delete their message": lambda: services.message_delete(message=message, actor=actor),
    }


@pytest.mark.django_db
def test_a_moderator_cannot_act_on_a_fellow_moderator_in_any_way_and_nothing_changes(
    room, ranks, django_capture_on_commit_callbacks
):
    bob, carol = ranks["bob"], ranks["carol"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        for call in _actions_on(room, bob, carol, ranks["said"]["carol"]).values():
            _refused(call)
    assert callbacks == []
    assert Membership.objects.get(room=room, user=carol).role == "moderator"


@pytest.mark.django_db
def test_a_moderator_cannot_act_on_a_banned_moderator_either(room, ranks):
    services.member_ban(room=room, actor=ranks["alice"], user=ranks["carol"])
    _refused(lambda: services.member_unban(room=room, actor=ranks["bob"], user=ranks["carol"]))
    services.member_unban(room=room, actor=ranks["alice"], user=ranks["carol"])


@pytest.mark.django_db
def test_nobody_acts_on_the_owner_not_even_a_site_moderator(room, ranks, django_capture_on_commit_callbacks):
    staff = _site_moderator()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        for actor in (ranks["bob"], staff, ranks["alice"]):
            for name, call in _actions_on(room, actor, ranks["alice"], ranks["said"]["alice"]).items():
                if name == "delete their message" and actor is not ranks["bob"]:
                    continue  # the owner's own message; a site moderator's content moderation
                _refused(call)
    assert callbacks == []
    assert Membership.objects.get(room=room, user=ranks["alice"]).role == "owner"


@pytest.mark.django_db
def test_the_owner_and_a_site_moderator_act_on_moderators(room, ranks):
    alice, bob, carol = ranks["alice"], ranks["bob"], ranks["carol"]
    assert services.member_add(room=room, actor=alice, user=carol, role="member").role == "member"
    services.member_set_role(room=room, actor=alice, user=carol, role="moderator")
    services.message_delete(message=ranks["said"]["carol"], actor=alice)
    staff = _site_moderator()
    assert services.member_mute(room=room, actor=staff, user=bob, until=None).muted_until is None
    assert services.member_ban(room=room, actor=staff, user=bob).is_banned
    services.member_unban(room=room, actor=staff, user=bob)
    services.message_delete(message=ranks["said"]["alice"], actor=staff)  # content moderation, site-wide
    assert Message.objects.filter(deleted_at__isnull=False).count() == 2


@pytest.mark.django_db
def test_a_moderator_still_acts_on_members_but_not_on_themselves(room, ranks):
    from datetime import timedelta

    from django.utils import timezone

    bob, dave = ranks["bob"], ranks["dave"]
    assert services.member_mute(
        room=room, actor=bob, user=dave, until=timezone.now() + timedelta(minutes=5)
    ).muted_now()
    services.message_delete(message=ranks["said"]["dave"], actor=bob)
    assert services.member_ban(room=room, actor=bob, user=dave).is_banned
    services.member_unban(room=room, actor=bob, user=dave)
    _refused(lambda: services.member_add(room=room, actor=bob, user=bob, role="member"))
    _refused(lambda: services.member_mute(room=room, actor=bob, user=bob, until=None))


# --- what a muted or banned author may do with their own messages ---------------------------------


def _mute(room, owner, member):
    from datetime import timedelta

    from django.utils import timezone

    return services.member_mute(
        room=room, actor=owner, user=member, until=timezone.now() + timedelta(minutes=5)
    )


@pytest.mark.django_db
def test_a_muted_author_cannot_edit_and_is_told_until_when(
    room, user, other_user, django_capture_on_commit_callbacks
):
    message = post(room, other_user, "old text").message
    membership = _mute(room, user, other_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        error = _refused(
            lambda: services.message_edit(message=message, actor=other_user, body="new text"), services.Muted
        )
    assert callbacks == [] and error.code == "muted"
    assert error.extra["until"] == membership.muted_until.isoformat().replace("+00:00", "Z")


@pytest.mark.django_db
def test_a_banned_author_can_neither_edit_nor_delete(room, user, other_user):
    message = post(room, other_user, "old text").message
    services.member_ban(room=room, actor=user, user=other_user)
    assert (
        _refused(
            lambda: services.message_edit(message=message, actor=other_user, body="new"), services.Banned
        ).code
        == "banned"
    )
    _refused(lambda: services.message_delete(message=message, actor=other_user), services.Banned)


@pytest.mark.django_db
def test_a_banned_author_in_a_private_room_is_answered_as_if_it_did_not_exist(user, other_user):
    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    services.member_add(room=secret, actor=user, user=other_user)
    message = post(secret, other_user, "old text").message
    services.member_ban(room=secret, actor=user, user=other_user)
    _refused(lambda: services.message_edit(message=message, actor=other_user, body="new"), services.NotFound)
    _refused(lambda: services.message_delete(message=message, actor=other_user), services.NotFound)


@pytest.mark.django_db
def test_a_muted_author_may_delete_their_own_message(room, user, other_user):
    message = post(room, other_user, "regret").message
    _mute(room, user, other_user)
    assert services.message_delete(message=message, actor=other_user).deleted_at is not None


@pytest.mark.django_db
def test_no_moderator_edits_someone_elses_message_they_delete_it(
    room, user, other_user, django_capture_on_commit_callbacks
):
    message = post(room, other_user, "rude").message
    _mute(room, user, other_user)
    site = _site_moderator()
    for editor in (site, user):  # a site moderator, the room's owner
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            _refused(lambda: services.message_edit(message=message, actor=editor, body="[removed]"))
        assert callbacks == []
    assert Message.objects.get(pk=message.pk).body == "rude"
    assert services.message_delete(message=message, actor=site).deleted_at is not None


@pytest.mark.django_db
def test_a_muted_member_cannot_shed_the_mute_by_leaving_a_public_room(room, user, other_user):
    services.member_join(room=room, user=other_user)
    _mute(room, user, other_user)
    assert _refused(lambda: services.member_leave(room=room, user=other_user), services.Muted).extra["until"]
    with pytest.raises(services.Muted):
        post(room, other_user, "still muted")


@pytest.mark.django_db
def test_a_muted_member_may_leave_a_private_room(user, other_user):
    from rooms.models import Membership

    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    services.member_add(room=secret, actor=user, user=other_user)
    _mute(secret, user, other_user)
    services.member_leave(room=secret, user=other_user)
    assert not Membership.objects.filter(room=secret, user=other_user).exists()


# --- rooms: nothing reveals a private room; names follow the text rules --------------------------


@pytest.mark.django_db
def test_a_slug_taken_by_any_room_or_reserved_is_one_answer(user, other_user):
    factories.make_room(created_by=user, slug="hidden", is_private=True)
    factories.make_room(created_by=user, slug="shown")
    answers = []
    for slug in ("hidden", "shown", "new"):
        with pytest.raises(ValidationError) as exc:
            services.room_create(name="Mine", slug=slug, created_by=other_user)
        answers.append(exc.value.message_dict)
    assert answers == [{"slug": ["This slug is not available; choose another."]}] * 3


@pytest.mark.django_db
def test_a_private_room_made_without_a_slug_gets_an_unguessable_one(user):
    import re

    first = services.room_create(name="Team", created_by=user, is_private=True)
    second = services.room_create(name="Team", created_by=user, is_private=True)
    nameless = services.room_create(name="日本語", created_by=user, is_private=True)
    assert re.fullmatch(r"team-[a-z0-9]{12}", first.slug) and re.fullmatch(r"team-[a-z0-9]{12}", second.slug)
    assert first.slug != second.slug and re.fullmatch(r"日本語-[a-z0-9]{12}", nameless.slug)
    symbols = services.room_create(name="!!!", created_by=user, is_private=True)
    assert re.fullmatch(r"[a-z0-9]{12}", symbols.slug)
    long = services.room_create(name="x" * 100, created_by=user, is_private=True)
    assert len(long.slug) == 64
    assert services.room_create(name="Team", created_by=user).slug == "team"  # public: from the name


@pytest.mark.django_db
def test_a_slug_taken_by_a_concurrent_create_is_the_field_error_not_a_500(user, monkeypatch):
    factories.make_room(created_by=user, slug="raced")
    monkeypatch.setattr(
        Room, "validate_unique", lambda self, exclude=None: None
    )  # the other create won after the check
    with pytest.raises(ValidationError) as exc:
        services.room_create(name="Raced", slug="raced", created_by=user)
    assert exc.value.message_dict == {"slug": ["This slug is not available; choose another."]}
    assert Room.objects.filter(slug="raced").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "\u200b"),
        ("name", "\u3164\u3164"),
        ("name", "\u2800"),
        ("name", "a\x07b"),
        ("name", "two\nlines"),
        ("name", "nul\x00"),
        ("name", "\ud83d"),
        ("name", "a\u200bb"),
        ("name", "a\u2060b"),
        ("name", "ab\u00ad"),
        ("name", "a\u3164b"),
        ("name", "a\u200cb"),
        ("name", "a\u200db"),
        ("name", "Lobby\u200e"),
        ("name", "x\ufe0fy"),
        ("name", "alice1\ufe0f"),  # a keycap's selector without the keycap: shows as "alice1"
        ("name", "#\ufe0e room"),
        ("name", "\U0001f3f4\U000e0067\U000e0062 flag"),  # a tag sequence without its end
        ("name", "\U0001f3f4\U000e007f flag"),  # an end without tags
        ("name", "a\U000e0067\U000e007f"),  # tags after no black flag
        ("name", "Café ☕ \u200d"),
        ("description", "\u200b \u200c"),
        ("description", "bell\x07"),
        ("description", "esc\x1b[31m"),
    ],
)
def test_room_names_and_descriptions_follow_the_body_text_rules(user, room, field, value):
    fields = {"name": "Fine", "description": "", field: value}
    with pytest.raises(ValidationError) as exc:
        services.room_create(slug="fine", created_by=user, **fields)
    assert list(exc.value.message_dict) == [field]
    before = _state()
    with pytest.raises(ValidationError):
        services.room_update(room=room, actor=user, **{field: value})
    assert _state() == before


@pytest.mark.django_db
def test_room_descriptions_keep_lines_and_names_keep_visible_text(user):
    room = services.room_create(
        name="Café ☕", slug="cafe", description="line one\n\tline two \u200b", created_by=user
    )
    assert room.description == "line one\n\tline two \u200b" and room.name == "Café ☕"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    [
        "\U0001f469\u200d\U0001f4bb devs",  # woman technologist: an emoji ZWJ sequence
        "\U0001f3f3\ufe0f\u200d\U0001f308 pride",  # rainbow flag: VS16 then ZWJ
        "\u2764\ufe0f fans",
        "1\ufe0f\u20e3 first",  # keycap
        "#\ufe0f\u20e3 \u0023\ufe0e\u20e3 *\ufe0f\u20e3",  # keycaps of #, text style too, and *
        "\u2122\ufe0f \u00a9\ufe0e marks",  # emoji and text presentation of other characters
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f scots",  # tag sequence
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ between joining letters
        "\u0915\u094d\u200d\u0937",  # Devanagari: ZWJ after a virama
        "\u845b\U000e0100 ideograph",  # an ideographic variation sequence
    ],
)
def test_a_room_name_keeps_the_joiners_and_selectors_its_script_or_emoji_needs(user, name):
    assert services.room_create(name=name, slug="joined", created_by=user).name == name


@pytest.mark.django_db
def test_only_the_owner_or_a_site_moderator_makes_a_room_public_or_private_or_archives_it(room, ranks):
    bob = ranks["bob"]
    _refused(lambda: services.room_update(room=room, actor=bob, is_private=True))
    _refused(lambda: services.room_archive(room=room, actor=bob))
    assert (
        services.room_update(room=room, actor=bob, description="moderated", is_private=False).description
        == "moderated"
    )
    assert services.room_update(room=room, actor=ranks["alice"], is_private=True).is_private
    assert services.room_update(room=room, actor=_site_moderator(), is_private=False).is_private is False
    assert services.room_archive(room=room, actor=ranks["alice"]).is_archived


# --- slugs are unique regardless of case ----------------------------------------------------------


@pytest.mark.django_db
def test_slugs_are_unique_regardless_of_case_and_dm_is_reserved_for_direct_messages(user, other_user):
    factories.make_room(created_by=user, slug="General", is_private=True)
    for slug in ("general", "GENERAL", "General", "dm-x", "DM-x", "dM-general", "NEW"):
        with pytest.raises(ValidationError) as exc:
            services.room_create(name="Mine", slug=slug, created_by=other_user)
        assert exc.value.message_dict == {"slug": ["This slug is not available; choose another."]}, slug
        assert [e.code for e in exc.value.error_dict["slug"]] == ["slug_unavailable"], slug
    with pytest.raises(ValidationError):  # the slug made from the name, "general", is taken too
        services.room_create(name="General", created_by=other_user)
    assert services.room_create(name="Dmitri", created_by=other_user).slug == "dmitri"
    # the database refuses it too, whatever writes it
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        Room.objects.create(name="x", slug="GENERAL")


def test_joining_a_public_room_again_is_one_query_and_a_new_member_has_read_the_backlog(
    room, user, other_user, django_assert_num_queries, django_capture_on_commit_callbacks
):
    """Every room socket's connect calls member_join (a join storm: once per socket)."""
    services.message_post(room=room, author=user, body="before", client_msg_id="b1")
    with django_capture_on_commit_callbacks() as callbacks:
        membership = services.member_join(room=room, user=other_user)
    assert membership.created and membership.last_read_seq == 1 and len(callbacks) == 2
    with django_assert_num_queries(1), django_capture_on_commit_callbacks() as callbacks:
        again = services.member_join(room=room, user=other_user)
    assert not again.created and again.pk == membership.pk and callbacks == []
