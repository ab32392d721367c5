// The room page's seq and gap logic (static/rooms/room/seq.js) under Node's test runner:
// `node --test tests/js/` (tests/test_room_timeline.py runs it in pytest).
import test from "node:test";
import assert from "node:assert/strict";
import * as S from "../../static/rooms/room/seq.js";

test("a live seq is shown when it follows lastSeq, held after a gap or during catch-up, ignored when shown", () => {
  assert.equal(S.liveAction(6, { lastSeq: 5, shown: false, catchingUp: false }), "show");
  assert.equal(S.liveAction(8, { lastSeq: 5, shown: false, catchingUp: false }), "hold");
  assert.equal(S.liveAction(6, { lastSeq: 5, shown: false, catchingUp: true }), "hold");
  assert.equal(S.liveAction(5, { lastSeq: 5, shown: true, catchingUp: false }), "ignore");
  // an older seq not shown (below the loaded page, or filled late) goes in its place
  assert.equal(S.liveAction(3, { lastSeq: 5, shown: false, catchingUp: false }), "show");
});

test("held seqs are flushed in order up to the first gap, and those already covered dropped", () => {
  assert.deepEqual(S.flushPlan([9, 7, 6, 4, 5], 5, false), { show: [6, 7], drop: [4, 5] });
  assert.deepEqual(S.flushPlan(new Set([8, 9]), 5, false), { show: [], drop: [] });
  assert.deepEqual(S.flushPlan(new Map([[9, {}], [7, {}]]).keys(), 5, true), { show: [7, 9], drop: [] });
  assert.deepEqual(S.flushPlan([], 5, false), { show: [], drop: [] });
});

test("any arrival order of seqs 1..n, held and flushed, shows each once, in order, without a gap", () => {
  for (let seed = 1; seed <= 50; seed++) {
    const n = 40;
    const order = Array.from({ length: n }, (_, i) => i + 1);
    let x = seed;
    for (let i = n - 1; i > 0; i--) {
      x = (x * 1103515245 + 12345) % 2147483648;
      const j = x % (i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    // each seq arrives twice (a live frame and a replay)
    const arrivals = order.concat(order.slice(0, n / 2));
    let lastSeq = 0;
    const shown = [];
    const held = new Set();
    for (const seq of arrivals) {
      const action = S.liveAction(seq, { lastSeq, shown: shown.includes(seq), catchingUp: false });
      if (action === "show") {
        shown.push(seq);
        lastSeq = Math.max(lastSeq, seq);
      } else if (action === "hold") {
        held.add(seq);
      }
      const plan = S.flushPlan(held, lastSeq, false);
      for (const s of plan.drop) held.delete(s);
      for (const s of plan.show) {
        held.delete(s);
        shown.push(s);
        lastSeq = s;
      }
    }
    assert.deepEqual(shown, Array.from({ length: n }, (_, i) => i + 1), `seed ${seed}`);
    assert.equal(held.size, 0);
  }
});

test("catch-up accepts a gap only when the history had nothing new for a seq held before it asked", () => {
  assert.equal(S.catchUpVerdict({ added: 0, heldBefore: new Set(), held: [] }), "done");
  assert.equal(S.catchUpVerdict({ added: 0, heldBefore: new Set([9]), held: [9, 10] }), "accept-gaps");
  // the history added messages: ask again before giving up on the gap
  assert.equal(S.catchUpVerdict({ added: 3, heldBefore: new Set([9]), held: [9] }), "again");
  // held while we were asking: the history may not have had it yet
  assert.equal(S.catchUpVerdict({ added: 0, heldBefore: new Set(), held: [9] }), "again");
});

test("message versions: deleted beats any edit, later edits beat earlier ones to the microsecond", () => {
  const plain = { seq: 1, body: "a" };
  const edit1 = { seq: 1, body: "b", edited_at: "2026-12-05T10:00:00.000001Z" };
  const edit2 = { seq: 1, body: "c", edited_at: "2026-12-05T10:00:00.000002Z" };
  const editTz = { seq: 1, body: "d", edited_at: "2026-12-05T11:00:00.000003+01:00" };
  const gone = { seq: 1, deleted: true };
  assert.ok(S.isNewer(edit1, plain));
  assert.ok(S.isNewer(edit2, edit1));
  assert.ok(!S.isNewer(edit1, edit2));
  assert.ok(S.isNewer(editTz, edit2));
  assert.ok(S.isNewer(gone, editTz));
  assert.ok(!S.isNewer(edit2, gone));
  assert.ok(S.isNewer(plain, undefined));
  assert.equal(S.isoMicros("2026-12-05T10:00:00Z"), Date.parse("2026-12-05T10:00:00Z") * 1000);
  assert.equal(S.isoMicros("not a time"), 1);
});

test("backoff doubles from 1 s to a 30 s cap with ±20 % jitter", () => {
  assert.equal(S.backoffDelay(1, () => 0.5), 1000);
  assert.equal(S.backoffDelay(2, () => 0.5), 2000);
  assert.equal(S.backoffDelay(4, () => 0.5), 8000);
  assert.equal(S.backoffDelay(20, () => 0.5), 30000);
  assert.equal(S.backoffDelay(1, () => 0), 800);
  assert.equal(S.backoffDelay(1, () => 0.999999), 1200);
  assert.equal(S.backoffDelay(20, () => 0.999999), 30000); // the cap holds with jitter
  assert.equal(S.backoffDelay(0, () => 0.5), 1000);
});

test("the first reconnect after 1012 is drawn from 0 to 2 s, so a stopped node's members spread out", () => {
  assert.equal(S.restartDelay(() => 0), 0);
  assert.equal(S.restartDelay(() => 0.5), 1000);
  assert.equal(S.restartDelay(() => 0.999999), 1999);
  assert.equal(S.restartDelay(() => 1), 2000); // never beyond the spread
  const drawn = Array.from({ length: 1000 }, () => S.restartDelay());
  assert.ok(drawn.every((ms) => ms >= 0 && ms <= S.RESTART_SPREAD_MS));
  assert.ok(Math.min(...drawn) < 200 && Math.max(...drawn) > 1800, "spread over the whole window");
});
