"""Presence in a room with more members online than ``PRESENCE_NAMES``, on real nodes: the
joiner's count and first names, ``presence.list`` paging every member exactly once, bounded
diffs in a join storm, leaves lowering the count across nodes, bad ``presence.list`` frames
answered with error frames (the socket kept), and the read rate."""

import asyncio
import os
import uuid

import pytest
from channels.db import database_sync_to_async

from tests import factories
from tests.nodes import Client, cluster, database_url_for_tests

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.multinode]

NAMES = 5  # PRESENCE_NAMES on these nodes
PAGE = 4  # PRESENCE_PAGE_MAX on these nodes


async def room_and_tokens(count: int) -> list[str]:
    """The room r0 and tokens of users ``u00`` .. (name order is join order)."""

    def make():
        owner = factories.make_user("owner")
        factories.make_room(created_by=owner, slug="r0")
        return [factories.token_for(factories.make_user(f"u{i:02d}")) for i in range(count)]

    return await database_sync_to_async(make)()


def three_nodes(**extra_env):
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    env = {"PRESENCE_NAMES": str(NAMES), "PRESENCE_PAGE_MAX": str(PAGE), **extra_env}
    return cluster(
        3,
        redis_url=os.environ["REDIS_URL"],
        database_url=database_url_for_tests(),
        prefix=prefix,
        extra_env=env,
    )


def of_type(client: Client, frame_type: str) -> list[dict]:
    return [f for f in client.frames if f["type"] == frame_type]


async def answer(client: Client, frame, answer_type: str = "presence.page") -> dict:
    """Send ``frame`` and return the next frame of ``answer_type`` or ``error`` after it."""
    seen = len(client.frames)
    await client.send_frame(frame)

    def answered(c):
        return any(f["type"] in (answer_type, "error") for f in c.frames[seen:])

    assert await client.wait_for(answered, timeout=5), client.frames[seen:]
    return next(f for f in client.frames[seen:] if f["type"] in (answer_type, "error"))


async def all_pages(client: Client, limit: int | None = None) -> tuple[list[dict], list[dict]]:
    """Follow ``next`` from the top: (every member listed, in order; the page frames)."""
    members, pages, after = [], [], None
    for _ in range(50):  # bounded: 14 members take 4 pages
        frame = {"type": "presence.list", "after": after}
        if limit is not None:
            frame["limit"] = limit
        page = await answer(client, frame)
        assert page["type"] == "presence.page", page
        pages.append(page)
        members.extend(page["online"])
        after = page["next"]
        if after is None:
            return members, pages
    raise AssertionError("paging did not end")


async def test_a_joiner_gets_the_count_and_the_first_names_and_paging_lists_everyone_once(db):
    tokens = await room_and_tokens(14)
    with three_nodes() as nodes:
        clients = []
        for i, token in enumerate(tokens):  # one after another: the last joiner sees all 14
            clients.append(await Client(nodes[i % 3], "r0", token).connect())
        last = clients[-1]
        assert await last.wait_for(lambda c: of_type(c, "presence"))
        first = of_type(last, "presence")[0]
        assert first["count"] == 14
        assert [u["username"] for u in first["online"]] == [f"u{i:02d}" for i in range(NAMES)]
        assert first["next"] is not None

        members, pages = await all_pages(last)  # the default limit: PRESENCE_PAGE_MAX
        assert [u["username"] for u in members] == [f"u{i:02d}" for i in range(14)]
        assert len({u["id"] for u in members}) == 14  # each exactly once
        assert [len(p["online"]) for p in pages] == [4, 4, 4, 2]
        assert all(p["count"] == 14 for p in pages)
        # the joiner's cursor goes on from its first names
        rest = await answer(last, {"type": "presence.list", "after": first["next"], "limit": 3})
        assert [u["username"] for u in rest["online"]] == ["u05", "u06", "u07"]

        # bad frames: an error frame each, nothing else, the socket kept
        bad = [
            ({"type": "presence.list", "limit": 0}, "limit"),
            ({"type": "presence.list", "limit": PAGE + 1}, "limit"),
            ({"type": "presence.list", "limit": "3"}, "limit"),
            ({"type": "presence.list", "limit": True}, "limit"),
            ({"type": "presence.list", "after": 7}, "after"),
            ({"type": "presence.list", "after": ["u01"]}, "after"),
            ({"type": "presence.list", "after": "x" * 401}, "after"),
            ('{"type": "presence.list", "after": "\\ud800"}', "after"),  # a lone surrogate
        ]
        for frame, field in bad:
            error = await answer(last, frame)
            assert error["type"] == "error", error
            assert (error["code"], error["field"], error["frame"]) == (
                "invalid_field",
                field,
                "presence.list",
            )
        # a cursor that names nobody is no error: the page starts where it would sort
        page = await answer(last, {"type": "presence.list", "after": "u03x", "limit": 2})
        assert [u["username"] for u in page["online"]] == ["u04", "u05"]
        page = await answer(last, {"type": "presence.list", "after": "zzz"})
        assert (page["online"], page["next"], page["count"]) == ([], None, 14)
        assert last.close_code is None
        for client in clients:
            await client.close()


async def test_a_join_storm_sends_bounded_diffs_and_leaves_lower_the_count_on_every_node(db):
    tokens = await room_and_tokens(24)
    with three_nodes() as nodes:
        watcher = await Client(nodes[0], "r0", tokens[0]).connect()
        assert await watcher.wait_for(lambda c: of_type(c, "presence"))
        # 23 members join at once over the three nodes
        joiners = await asyncio.gather(
            *(Client(nodes[i % 3], "r0", token).connect() for i, token in enumerate(tokens[1:], start=1))
        )

        def counted(n):
            return lambda c: any(f.get("count") == n for f in of_type(c, "presence.diff"))

        assert await watcher.wait_for(counted(24), timeout=10), of_type(watcher, "presence.diff")
        await asyncio.sleep(1.5)  # every node's batch has gone out
        diffs = of_type(watcher, "presence.diff")
        assert all(len(d["joins"]) <= NAMES and len(d["leaves"]) <= NAMES for d in diffs), diffs
        assert all(isinstance(d["count"], int) and isinstance(d["partial"], bool) for d in diffs)
        assert any(d["partial"] for d in diffs), diffs  # more joined than a diff names
        assert len(diffs) <= 3 * 4, diffs  # one per node per batch, not one per join
        # only joins among the first names (what a page shows without "show all") are named
        assert sum(len(d["joins"]) for d in diffs) < 23, diffs

        # members on node-2 and node-3 leave: the watcher on node-1 sees the count fall
        leaving = [c for c in joiners if c.node is not nodes[0]]
        staying = [c for c in joiners if c.node is nodes[0]]
        for client in leaving:
            await client.close()
        remaining = 1 + len(staying)
        assert await watcher.wait_for(counted(remaining), timeout=10), of_type(watcher, "presence.diff")[-3:]
        members, _ = await all_pages(watcher)
        assert len(members) == remaining
        expected = {"u00"} | {f"u{tokens.index(c.token):02d}" for c in staying}
        assert {u["username"] for u in members} == expected
        # a joiner on node-3 now sees the lower count too
        again = await Client(nodes[2], "r0", tokens[1]).connect()
        assert await again.wait_for(lambda c: of_type(c, "presence"))
        assert of_type(again, "presence")[0]["count"] in (remaining, remaining + 1)
        for client in [watcher, again, *staying]:
            await client.close()


async def test_presence_list_is_a_read_frame_under_the_read_rate(ws, room, user, settings):
    """Over ``WS_READ_RATE`` a ``presence.list`` gets ``rate_limited`` (with ``retry_after`` and
    ``"frame": "presence.list"``) and nothing else; the socket stays open."""
    settings.WS_READ_RATE = "2/m"
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)  # presence and diffs skipped
    assert await conn.connect()
    await conn.receive_type("hello")
    for _ in range(2):
        await conn.send({"type": "presence.list"})
        page = await conn.receive_type("presence.page")
        assert page["count"] == 1 and [u["username"] for u in page["online"]] == ["alice"]
    await conn.send({"type": "presence.list"})
    error = await conn.receive_type("error")
    assert error["code"] == "rate_limited" and error["frame"] == "presence.list" and error["retry_after"] > 0
    await conn.send({"type": "presence.list", "limit": "x"})  # bad frames are answered before the rate
    error = await conn.receive_type("error")
    assert (error["code"], error["field"]) == ("invalid_field", "limit")
    await conn.close()
