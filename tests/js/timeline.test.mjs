// The room page's pure timeline logic (static/rooms/room/timeline.js) under Node's test runner:
// `node --test tests/js/` (tests/test_room_timeline.py runs it in pytest, with TZ set).
import test from "node:test";
import assert from "node:assert/strict";
import * as T from "../../static/rooms/room/timeline.js";

const MIN = 60 * 1000;

function shuffled(values, seed) {
  const out = values.slice();
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

test("insertionIndex finds the place of a seq and -1 for one already there", () => {
  assert.equal(T.insertionIndex([], 5), 0);
  assert.equal(T.insertionIndex([2, 4, 6], 1), 0);
  assert.equal(T.insertionIndex([2, 4, 6], 5), 2);
  assert.equal(T.insertionIndex([2, 4, 6], 7), 3);
  assert.equal(T.insertionIndex([2, 4, 6], 4), -1);
});

test("merging pages, live frames and replays in any interleaving shows 1..250 once, in order", () => {
  // The sources the page mixes: the rendered last 50, scroll-back pages of 100 before the oldest,
  // live frames (some repeated by a resume replay), a gap repair page overlapping the live ones.
  const message = (seq) => ({ seq, body: `m${seq}` });
  const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => message(a + i));
  const batches = [
    range(151, 200), range(51, 150), range(1, 50), range(201, 210), range(205, 230),
    [message(231), message(233), message(232), message(233)], range(220, 250), range(100, 160),
  ];
  for (let seed = 1; seed <= 50; seed++) {
    const seqs = [];
    for (const batch of shuffled(batches, seed)) {
      for (const m of T.mergeBySeq(seqs, shuffled(batch, seed + 7))) {
        const index = T.insertionIndex(seqs, m.seq);
        assert.notEqual(index, -1);
        seqs.splice(index, 0, m.seq);
      }
    }
    assert.deepEqual(seqs, Array.from({ length: 250 }, (_, i) => i + 1), `seed ${seed}`);
  }
  assert.deepEqual(T.mergeBySeq([1, 2], [message(3), message(2), { seq: "x" }, null, message(3)]).map((m) => m.seq), [3]);
});

test("day labels are Today, Yesterday (also across a daylight-saving change), else the date", () => {
  const now = new Date(2026, 2, 30, 0, 30); // Europe/Berlin switched to summer time on 29 March
  assert.equal(T.dayLabel(new Date(2026, 2, 30, 0, 1), now), "Today");
  assert.equal(T.dayLabel(new Date(2026, 2, 29, 23, 59), now), "Yesterday");
  assert.equal(T.dayLabel(new Date(2026, 2, 29, 0, 0), now), "Yesterday");
  assert.equal(T.dayLabel(new Date(2026, 2, 28, 23, 59), now), "2026-03-28");
  assert.equal(T.dayLabel(new Date(2025, 2, 30, 12), now, (d) => `on ${d.getFullYear()}`), "on 2025");
});

test("layout puts date dividers at day changes and groups one author's messages within minutes", () => {
  const day1 = new Date(2026, 0, 10, 23, 50).getTime();
  const day2 = new Date(2026, 0, 11, 0, 5).getTime();
  const items = [
    { seq: 1, authorId: 7, time: day1 },
    { seq: 2, authorId: 7, time: day1 + 2 * MIN }, // same author, 2 min later: grouped
    { seq: 3, authorId: 8, time: day1 + 3 * MIN }, // another author
    { seq: 4, authorId: 8, time: day2 }, // same author but a new day: divider, new group
    { seq: 5, authorId: 8, time: day2 + 6 * MIN }, // over 5 minutes later: new group
    { seq: 6, authorId: 8, time: day2 + 7 * MIN },
    { seq: 7, authorId: 8, time: day2 + 6 * MIN }, // earlier than the one before: new group
  ];
  const plan = T.layout(items, { now: day2 + 10 * MIN, format: () => "10 January" });
  assert.deepEqual(plan.map((e) => e.dayDivider), ["Yesterday", null, null, "Today", null, null, null]);
  const later = T.layout(items, { now: day2 + 3 * 24 * 60 * MIN, format: (d) => `${d.getDate()} January` });
  assert.deepEqual(later.map((e) => e.dayDivider), ["10 January", null, null, "11 January", null, null, null]);
  assert.deepEqual(plan.map((e) => e.groupStart), [true, false, true, true, true, false, true]);
  assert.deepEqual(plan.map((e) => e.newDivider), [false, false, false, false, false, false, false]);
});

test("the New messages divider goes before the first unread message that is not the reader's", () => {
  const t = new Date(2026, 0, 10, 12).getTime();
  const items = [1, 2, 3, 4, 5].map((seq) => ({ seq, authorId: seq === 3 ? 1 : 2, time: t + seq * 1000 }));
  const at = (lastReadSeq) =>
    T.layout(items, { now: t, lastReadSeq, myId: 1 }).filter((e) => e.newDivider).map((e) => e.seq);
  assert.deepEqual(at(1), [2]);
  assert.deepEqual(at(2), [4]); // 3 is the reader's own
  assert.deepEqual(at(5), []);
  assert.deepEqual(at(null), []);
  assert.deepEqual(at(undefined), []);
  // the divider also starts a group
  const plan = T.layout(items, { now: t, lastReadSeq: 3, myId: 1 });
  assert.equal(plan[3].newDivider, true);
  assert.equal(plan[3].groupStart, true);
  assert.equal(plan[4].groupStart, false);
  assert.equal(T.firstUnreadSeq(items, 0, 2), 3);
});
