/*
 * chatsite room page: the pure seq logic (no DOM, no network, no clock of its own), tested under
 * Node by tests/js/seq.test.mjs. The rules it decides (docs/protocol.md "Delivery contract"):
 *
 * - liveAction(seq, {lastSeq, shown, catchingUp}): what a live `message` frame for `seq` does:
 *   "ignore" (already shown: at most once), "hold" (it is beyond lastSeq + 1, so a seq between
 *   is missing, or a catch-up is running: kept until the gap is filled), or "show".
 * - flushPlan(heldSeqs, lastSeq, acceptGaps): which held seqs are shown now, in order, and which
 *   are dropped (at or below lastSeq: shown meanwhile). Without acceptGaps it stops at the
 *   first gap; with it (the history said the missing seqs do not exist) it shows all.
 * - catchUpVerdict({added, heldBefore, held}): after one pass of reading history past lastSeq
 *   and flushing: "done" (nothing held), "accept-gaps" (the first held seq was held before the
 *   pass and the history had nothing new: the missing ones were never stored), else "again".
 * - isoMicros(iso), versionOf(message), isNewer(message, than): how new a state of a message is
 *   (deleted beats any edit, a later edited_at an earlier one; microseconds, as the server
 *   writes them), so states arriving in any order never go back.
 * - backoffDelay(attempt, random): reconnect and resend delays in ms: 1 s, 2 s, 4 s … capped at
 *   30 s, each with ±20 % jitter so clients do not come back in step (`random` is Math.random
 *   by default; tests pass their own).
 * - restartDelay(random): the wait before the first reconnect after close 1012 (the node is
 *   stopping), in ms: drawn from 0 to RESTART_SPREAD_MS (2 s), so that the thousands of
 *   members of a stopped node reach the other nodes spread over 2 s, not in one instant
 *   (each handshake costs the node that takes it a database hop: bench/RESULTS.md,
 *   "Reconnect storm"); one reader waits 1 s on average.
 */

export const BACKOFF_BASE_MS = 1000;
export const BACKOFF_MAX_MS = 30000;
export const RESTART_SPREAD_MS = 2000;

export function liveAction(seq, { lastSeq, shown, catchingUp }) {
  if (shown) return "ignore";
  if (catchingUp || seq > lastSeq + 1) return "hold";
  return "show";
}

export function flushPlan(heldSeqs, lastSeq, acceptGaps) {
  const show = [];
  const drop = [];
  let last = lastSeq;
  for (const seq of Array.from(heldSeqs).sort((a, b) => a - b)) {
    if (seq <= last) {
      drop.push(seq);
      continue;
    }
    if (seq > last + 1 && !acceptGaps) break;
    show.push(seq);
    last = seq;
  }
  return { show, drop };
}

export function catchUpVerdict({ added, heldBefore, held }) {
  const seqs = Array.from(held);
  if (seqs.length === 0) return "done";
  const firstHeld = Math.min(...seqs);
  return added === 0 && heldBefore.has(firstHeld) ? "accept-gaps" : "again";
}

// An ISO 8601 time as microseconds since the epoch (Date keeps only milliseconds, and the
// server omits ".000000"), so two edits in the same millisecond still compare in order.
export function isoMicros(iso) {
  const match = /^(.*?)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$/.exec(String(iso));
  const ms = match ? Date.parse(match[1] + (match[3] || "Z")) : NaN;
  if (Number.isNaN(ms)) return 1; // edited at an unreadable time: still newer than unedited
  const micro = Number((match[2] || "").padEnd(6, "0").slice(0, 6));
  return ms * 1000 + micro;
}

// How new a state of a message is: deleted beats any edit, a later edit an earlier one.
export function versionOf(message) {
  if (message.deleted) return Infinity;
  return message.edited_at ? isoMicros(message.edited_at) : 0;
}

export function isNewer(message, than) {
  return !than || versionOf(message) > versionOf(than);
}

export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
  const jittered = base * (0.8 + random() * 0.4);
  return Math.min(BACKOFF_MAX_MS, Math.round(jittered));
}

export function restartDelay(random = Math.random) {
  return Math.min(RESTART_SPREAD_MS, Math.floor(random() * RESTART_SPREAD_MS));
}
