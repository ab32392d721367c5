/*
 * chatsite room page: the pure logic of the message timeline (no DOM, no network), an ES module
 * imported by the page's modules (render.js) and by its unit tests under Node
 * (tests/js/timeline.test.mjs).
 *
 * - insertionIndex(sortedSeqs, seq): where a seq goes in an ascending list (-1 when present).
 * - mergeBySeq(sortedSeqs, messages): the messages to add (not shown yet, each seq once), in
 *   seq order, whatever order and repeats they came in (scroll-back pages, live frames, gap
 *   repair and resume replays may interleave and overlap).
 * - localDayKey(date), dayLabel(date, now, format): "Today", "Yesterday", else `format(date)`,
 *   by the reader's local calendar day.
 * - layout(items, options): for messages in seq order, which get a date divider before them,
 *   which start a group (name and time shown) or continue one, and before which the "New
 *   messages" divider goes.
 * - firstUnreadSeq(items, lastReadSeq, myId): the first message after lastReadSeq that is not
 *   the reader's own (null when none).
 */

import { gettext } from "./i18n.js";


export const GROUP_WINDOW_MS = 5 * 60 * 1000; // one author's messages closer than this form a group

// Binary search in an ascending array of seqs: the index to insert `seq` at, or -1 when it is
// already there.
export function insertionIndex(sortedSeqs, seq) {
  let lo = 0;
  let hi = sortedSeqs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sortedSeqs[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  return sortedSeqs[lo] === seq ? -1 : lo;
}

// The messages of `messages` whose seq is neither in `sortedSeqs` nor repeated earlier in
// `messages`, sorted by seq. (For a repeated seq the first one given wins; states of one
// message are reconciled elsewhere, by edited_at.)
export function mergeBySeq(sortedSeqs, messages) {
  const seen = new Set();
  const added = [];
  for (const message of messages) {
    const seq = message && message.seq;
    if (!Number.isInteger(seq) || seen.has(seq) || insertionIndex(sortedSeqs, seq) === -1) continue;
    seen.add(seq);
    added.push(message);
  }
  return added.sort((a, b) => a.seq - b.seq);
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// "2025-03-03" for the reader's local calendar day of `date` (a Date or milliseconds).
export function localDayKey(date) {
  const d = new Date(date);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// "Today" / "Yesterday" by local calendar day (right across a daylight-saving change),
// otherwise `format(date)`.
export function dayLabel(date, now, format) {
  const day = localDayKey(date);
  const today = new Date(now);
  if (day === localDayKey(today)) return gettext("Today");
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1, 12);
  if (day === localDayKey(yesterday)) return gettext("Yesterday");
  return format ? format(new Date(date)) : day;
}

export function firstUnreadSeq(items, lastReadSeq, myId) {
  if (!Number.isInteger(lastReadSeq)) return null;
  for (const item of items) {
    if (item.seq > lastReadSeq && item.authorId !== myId) return item.seq;
  }
  return null;
}

/*
 * items: [{seq, authorId, time}] in ascending seq (time: milliseconds, NaN when unknown).
 * options: {now, format, lastReadSeq, myId, groupWindowMs}.
 * Returns one entry per item, in the same order:
 *   {seq, day: "2025-03-03", dayDivider: label | null, newDivider: bool, groupStart: bool}
 * A date divider goes before the first item and before every item on another local day than
 * the one before it. A group breaks at a divider, at another author, and when the item is
 * more than groupWindowMs after the one before (or before it: clocks of nodes differ).
 */
export function layout(items, options) {
  const opts = options || {};
  const now = opts.now === undefined ? Date.now() : opts.now;
  const windowMs = opts.groupWindowMs === undefined ? GROUP_WINDOW_MS : opts.groupWindowMs;
  const unread = firstUnreadSeq(items, opts.lastReadSeq, opts.myId);
  const out = [];
  let prev = null;
  let prevDay = null;
  for (const item of items) {
    const known = Number.isFinite(item.time);
    const day = known ? localDayKey(item.time) : prevDay;
    const dayDivider = known && day !== prevDay ? dayLabel(item.time, now, opts.format) : null;
    const newDivider = item.seq === unread;
    const gap = prev && known && Number.isFinite(prev.time) ? item.time - prev.time : NaN;
    const groupStart =
      prev === null ||
      dayDivider !== null ||
      newDivider ||
      item.authorId === undefined ||
      item.authorId === null ||
      item.authorId !== prev.authorId ||
      !(gap >= 0 && gap <= windowMs);
    out.push({ seq: item.seq, day, dayDivider, newDivider, groupStart });
    prev = item;
    if (day !== null) prevDay = day;
  }
  return out;
}
