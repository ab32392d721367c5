"""The room page's online list in a room with more members online than ``PRESENCE_NAMES`` (50),
in Debian's Chromium on 3 real nodes behind nginx: "Online (N)" with the first 50 names and
"and M more", "Show all" paging the rest through ``presence.list``, leaves lowering the count
live, and typing hints as before. The other members are plain WebSocket clients of the nodes."""

import json
from contextlib import ExitStack

import pytest

from tests.test_browser import browser, make_people, open_room, orm, stack, token_socket  # noqa: F401 (fixtures)
from tests.test_cluster import needs_nginx
from tests.tools import CHROMIUM_REASON, HAVE_CHROMIUM

pytestmark = [
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_REASON),
    needs_nginx,
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

OTHERS = 60  # members online besides the viewer: more than PRESENCE_NAMES (50)


def presence_state(page) -> dict:
    return page.evaluate(
        """() => ({
          summary: document.querySelector("#presence-details summary").innerText,
          names: [...document.querySelectorAll("#presence-list .presence__member .presence__name")]
            .map((n) => n.textContent),
          more: document.querySelector("#presence-list .presence__more")?.innerText ?? null,
        })"""
    )


def wait_count(page, count: int, names: int, timeout: float = 15_000) -> None:
    """Until the heading says "Online (count)" and ``names`` names are listed."""
    page.wait_for_function(
        """([count, names]) =>
          document.getElementById("presence-count").textContent === String(count)
          && document.querySelectorAll("#presence-list .presence__member").length === names
          && !document.getElementById("presence").classList.contains("presence--stale")""",
        arg=[count, names],
        timeout=timeout,
    )


def test_a_large_room_shows_the_count_and_first_names_and_show_all_pages_the_rest(stack, browser):
    base, nodes = stack
    others = [f"p{i:02d}" for i in range(OTHERS)]
    tokens = orm(make_people, "viewer", *others, rooms={"big": "viewer"})
    with ExitStack() as opened:
        sockets = []
        for i, name in enumerate(others):
            sockets.append(token_socket(opened, f"{nodes[i % 3].ws}/ws/rooms/big/", tokens[name]))
        context = browser.new_context()
        page = open_room(context, base, "big", "viewer")

        wait_count(page, OTHERS + 1, 50)
        state = presence_state(page)
        assert state["names"] == others[:50], state  # the first 50 in name order ("viewer" sorts last)
        assert state["summary"].startswith(f"Online ({OTHERS + 1})"), state
        assert "and 11 more" in state["more"] and "Show all" in state["more"], state

        page.click("#presence-list .presence__show-all")
        wait_count(page, OTHERS + 1, OTHERS + 1)
        state = presence_state(page)
        assert state["names"] == [*others, "viewer"] and state["more"] is None, state

        for ws in sockets[:20]:  # p00 .. p19 leave, from every node
            ws.close()
        wait_count(page, OTHERS + 1 - 20, OTHERS + 1 - 20)
        assert presence_state(page)["names"] == [*others[20:], "viewer"]

        sockets[-1].send(json.dumps({"type": "typing"}))  # typing hints as before
        page.wait_for_function(
            """() => document.getElementById("typing-hint").textContent === "p59 is typing…" """,
            timeout=10_000,
        )
        context.close()
