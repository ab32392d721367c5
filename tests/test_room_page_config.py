"""The room page's server-rendered config (``#room-config``, json_script) for scroll-back and the
first-unread landing: ``last_read_seq`` is there for a member whose membership has a read marker
(once read state exists) and absent otherwise, so the page opens at the latest message."""

import json
import re

from django.urls import reverse

from rooms import services
from rooms.models import Membership


def room_config(response) -> dict:
    match = re.search(
        r'<script id="room-config" type="application/json">(.*?)</script>', response.content.decode(), re.S
    )
    assert match, "no room-config"
    return json.loads(match.group(1))


def test_the_room_page_config_carries_the_members_last_read_seq_and_the_scroll_back_controls(
    client, user, room, monkeypatch
):
    for i in range(3):
        services.message_post(room=room, author=user, body=f"m{i}", client_msg_id=f"c{i}")
    client.force_login(user)
    url = reverse("rooms:detail", args=[room.slug])
    if not hasattr(Membership, "last_read_seq"):  # until read state lands, a stand-in marker
        monkeypatch.setattr(Membership, "last_read_seq", 2, raising=False)
    else:
        Membership.objects.filter(room=room, user=user).update(last_read_seq=2)
    response = client.get(url)
    content = response.content.decode()
    assert room_config(response)["last_read_seq"] == 2
    assert [m["seq"] for m in room_config(response)["history"]] == [1, 2, 3]
    for control in ('id="load-older"', 'id="history-start"', 'id="jump-latest-button"'):
        assert control in content
    # one module script of the room page; it imports the rest (static/rooms/room/,
    # tests/test_static_modules.py); the sidebar's (every signed-in page) is its own
    room_modules = re.findall(r'<script type="module" src="([^"]*rooms/room/[^"]*)"', content)
    assert len(room_modules) == 1 and "rooms/room/main" in room_modules[0], room_modules
    assert re.findall(r'<script type="module" src="[^"]*rooms/sidebar[^"]*"', content)


def test_a_visitor_of_a_public_room_gets_no_last_read_seq(client, other_user, room, monkeypatch):
    monkeypatch.setattr(Membership, "last_read_seq", 2, raising=False)
    client.force_login(other_user)  # not a member (yet): the socket joins them
    response = client.get(reverse("rooms:detail", args=[room.slug]))
    assert response.status_code == 200
    assert "last_read_seq" not in room_config(response)
