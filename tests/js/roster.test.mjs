// The room page's online list (static/rooms/room/roster.js) under Node's test runner:
// `node --test tests/js/` (tests/test_room_timeline.py runs it in pytest).
import test from "node:test";
import assert from "node:assert/strict";
import * as R from "../../static/rooms/room/roster.js";

const u = (id, username) => ({ id, username });
const names = (roster, limit) => R.visible(roster, limit).members.map((m) => m.username);

test("a small room's presence frame is the whole list, with or without count (old servers)", () => {
  const roster = R.fromSnapshot({ type: "presence", online: [u(2, "bob"), u(1, "alice")] });
  assert.equal(roster.count, 2);
  assert.equal(roster.complete, true);
  assert.deepEqual(names(roster), ["alice", "bob"]);
  assert.equal(R.visible(roster).hidden, 0);
  const counted = R.fromSnapshot({ type: "presence", count: 2, online: [u(1, "alice"), u(2, "bob")], next: null });
  assert.equal(counted.complete, true);
});

test("a large room shows the count, the first names and how many are left out", () => {
  const first = Array.from({ length: 3 }, (_, i) => u(i + 1, `m${i}`));
  const roster = R.fromSnapshot({ type: "presence", count: 10, online: first, next: "m2\u00003" });
  assert.equal(roster.count, 10);
  assert.equal(roster.complete, false);
  assert.deepEqual(R.visible(roster), { members: first, hidden: 7 });
  assert.deepEqual(names(roster, 2), ["m0", "m1"]); // drawn up to the limit
  assert.equal(R.visible(roster, 2).hidden, 8);
});

test("diffs add and remove, carry the count, and a partial one marks the list incomplete", () => {
  const roster = R.fromSnapshot({ type: "presence", count: 2, online: [u(1, "alice"), u(2, "bob")], next: null });
  const left = R.applyDiff(roster, { joins: [u(3, "carol")], leaves: [u(1, "alice")], count: 2, partial: false });
  assert.deepEqual(left, [1]);
  assert.deepEqual(names(roster), ["bob", "carol"]);
  assert.equal(roster.complete, true);
  R.applyDiff(roster, { joins: [], leaves: [], count: 500, partial: true });
  assert.equal(roster.count, 500);
  assert.equal(roster.complete, false);
  assert.equal(R.visible(roster).hidden, 498);
  // an old server's diff has no count: the list is the count
  const old = R.fromSnapshot({ online: [u(1, "a")] });
  R.applyDiff(old, { joins: [u(2, "b")], leaves: [] });
  assert.equal(old.count, 2);
  assert.equal(old.complete, true);
  // junk is ignored
  R.applyDiff(old, { joins: [null, { id: "x" }, 5], leaves: "no" });
  assert.deepEqual(names(old), ["a", "b"]);
});

test("show all pages with the cursor until next is null, then shows everyone once", () => {
  const roster = R.fromSnapshot({ type: "presence", count: 5, online: [u(1, "a"), u(2, "b")], next: "b\u00002" });
  const ask = R.startPaging(roster);
  assert.deepEqual(ask, { type: "presence.list", after: null, limit: R.PAGE_LIMIT });
  const second = R.applyPage(roster, { type: "presence.page", count: 5, online: [u(1, "a"), u(2, "b"), u(3, "c")], next: "c\u00003" });
  assert.deepEqual(second, { type: "presence.list", after: "c\u00003", limit: R.PAGE_LIMIT });
  assert.equal(roster.expanded, false);
  // a diff meanwhile reaches the pages being gathered too
  R.applyDiff(roster, { joins: [u(9, "z")], leaves: [u(1, "a")], count: 5, partial: false });
  assert.equal(R.applyPage(roster, { type: "presence.page", count: 5, online: [u(4, "d"), u(5, "e")], next: null }), null);
  assert.equal(roster.paging, null);
  assert.equal(roster.expanded, true);
  assert.equal(roster.complete, true);
  assert.deepEqual(names(roster, 2), ["b", "c", "d", "e", "z"]); // expanded: the limit no longer applies
  assert.equal(R.visible(roster).hidden, 0);
  // a page nobody asked for (a new hello reset the roster) changes nothing
  const fresh = R.fromSnapshot({ count: 1, online: [u(1, "a")] });
  assert.equal(R.applyPage(fresh, { online: [u(7, "q")], next: null }), null);
  assert.deepEqual(names(fresh), ["a"]);
});

test("a diff read before the state we hold (its v) changes nothing it is older for", () => {
  // node-1 read alice online at v 10 (snapshot); node-2 read bob online at v 12, node-1 read
  // alice's own change at v 11 while bob was between two sockets (count 1): v 11 arrives last.
  const roster = R.fromSnapshot({ type: "presence", count: 1, online: [u(1, "alice")], next: null, v: 10 });
  R.applyDiff(roster, { joins: [u(2, "bob")], leaves: [], count: 2, partial: false, v: 12 });
  R.applyDiff(roster, { joins: [u(1, "alice")], leaves: [u(2, "bob")], count: 1, partial: false, v: 11 });
  assert.deepEqual(names(roster), ["alice", "bob"]);
  assert.equal(roster.count, 2);
  assert.equal(roster.complete, true);
  // a newer one applies: bob really left at v 13
  R.applyDiff(roster, { joins: [], leaves: [u(2, "bob")], count: 1, partial: false, v: 13 });
  assert.deepEqual(names(roster), ["alice"]);
  assert.equal(roster.count, 1);
  // older than the snapshot: nothing
  const fresh = R.fromSnapshot({ type: "presence", count: 1, online: [u(1, "alice")], next: null, v: 20 });
  R.applyDiff(fresh, { joins: [u(2, "bob")], leaves: [u(1, "alice")], count: 5, partial: false, v: 19 });
  assert.deepEqual(names(fresh), ["alice"]);
  assert.equal(fresh.count, 1);
  // a page's count only when newer
  R.startPaging(fresh);
  R.applyPage(fresh, { type: "presence.page", count: 7, online: [u(1, "alice")], next: null, v: 18 });
  assert.equal(fresh.count, 1);
});
