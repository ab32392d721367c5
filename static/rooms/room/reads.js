/*
 * chatsite room page: read state and mentions (docs/protocol.md, "Sidebar and unread state").
 *
 * - Read reports: {"type":"read","seq":N} on the room socket, for the newest message actually in
 *   view (some of it on screen), only while the tab is visible, debounced: READ_DEBOUNCE_MS
 *   after the last scroll, new message, return to the tab or (re)connect, and at the latest
 *   READ_MAX_WAIT_MS after the first of them (a busy room is reported every 4-6 s, not at each
 *   message: each report is a database write and a read.updated to every socket of the user);
 *   the wait is drawn between 0.8 and 1.2 times READ_MAX_WAIT_MS each time, because with a
 *   fixed one every member of a busy room reports in the same moment: the first message after
 *   a report starts the wait, and they all get that message at once (bench/RESULTS.md, "The
 *   page-like shape's latency");
 *   never for a seq already reported or already read (the server keeps the marker from moving
 *   backward anyway).
 * - A report the server could not store (an error frame with "frame": "read": unavailable,
 *   internal_error, rate_limited) is sent again: after retry_after, else after the reconnect
 *   backoff (seq.js), growing with each refusal in a row; a new hello starts the count again.
 *   not_found closes the socket (outbox-rules.js: stop).
 * - After each report the page's own sidebar is told at once (the "chatsite:read" event on
 *   window, tab.js): the server sends this tab's sockets no read.updated for its own reports.
 * - read.updated for this room (the server's answer to another tab's or device's report, through
 *   the user's group): one that goes beyond what this tab reported came from elsewhere, so the
 *   "New messages" divider moves to it (and goes once nothing unread is left); this tab's own
 *   reports leave the divider where the reader found it.
 * - A message that mentions the reader (@username, or @room) by someone else is highlighted
 *   (class message--mention), as stored and after each edit; a deleted one is not.
 * Mention notifications for a hidden tab are the sidebar's (static/rooms/sidebar.js), on every
 * page.
 */

import { config, els, state } from "./context.js";
import { on, registerMessagePart, when } from "./hooks.js";
import { send } from "./connection.js";
import { decorate } from "./render.js";
import { READ_EVENT } from "./tab.js";
import { backoffDelay } from "./seq.js";

export const READ_DEBOUNCE_MS = 1000;
export const READ_MAX_WAIT_MS = 5000;
const SEEN_PX = 16; // this much of a message on screen counts as seen (all of a shorter one)

const me = config.user.id;
const reads = {
  reported: 0, // highest seq this tab reported
  marker: Number.isInteger(config.last_read_seq) ? config.last_read_seq : 0, // the server's, as known
  timer: null,
  firstAt: 0, // Date.now() of the first event the pending report waits for
  maxWait: READ_MAX_WAIT_MS, // this report's longest wait (ms), drawn at firstAt
  refusals: 0, // reports refused in a row (error frames with "frame": "read") since the last hello
  retryTimer: null,
};

// The codes after which the same report can succeed later (docs/protocol.md, error frames).
const REPORT_AGAIN = new Set(["unavailable", "internal_error", "rate_limited"]);

// The newest shown message some of which is in the log's view, or 0.
export function newestSeqInView() {
  const view = els.log.getBoundingClientRect();
  for (let i = state.seqs.length - 1; i >= 0; i--) {
    const li = state.shown.get(state.seqs[i]);
    const rect = li.getBoundingClientRect();
    if (rect.top >= view.bottom - Math.min(SEEN_PX, rect.height)) continue; // below the view
    return rect.bottom > view.top ? state.seqs[i] : 0;
  }
  return 0;
}

function report() {
  reads.timer = null;
  reads.firstAt = 0;
  if (document.hidden || !config.user || state.stopped) return;
  const seq = newestSeqInView();
  if (seq <= Math.max(reads.reported, reads.marker)) return;
  if (!send({ type: "read", seq })) return; // not live yet: the next hello reports
  reads.reported = seq;
  tellSidebar(seq);
}

// This tab's sockets get no read.updated for its own report (tab.js): the page's sidebar is
// told here, with the counts after `seq` among the messages shown (up to state.lastSeq; the
// sidebar adds what it counted beyond).
function tellSidebar(seq) {
  let unread = 0;
  let mentions = 0;
  for (let i = state.seqs.length - 1; i >= 0 && state.seqs[i] > seq; i--) {
    const li = state.shown.get(state.seqs[i]);
    if (!li || li.dataset.deleted || Number(li.dataset.authorId) === me) continue;
    unread += 1;
    if (li.classList.contains("message--mention")) mentions += 1;
  }
  const detail = { room: config.slug, last_read_seq: seq, unread_count: unread, mention_count: mentions, upto: state.lastSeq };
  window.dispatchEvent(new CustomEvent(READ_EVENT, { detail }));
}

export function scheduleReport() {
  if (document.hidden) return;
  const now = Date.now();
  if (reads.timer !== null) clearTimeout(reads.timer);
  else {
    reads.firstAt = now;
    reads.maxWait = READ_MAX_WAIT_MS * (0.8 + 0.4 * Math.random());
  }
  reads.timer = setTimeout(report, Math.max(0, Math.min(READ_DEBOUNCE_MS, reads.firstAt + reads.maxWait - now)));
}

on("read.updated", (frame) => {
  if (frame.room !== config.slug || !Number.isInteger(frame.last_read_seq)) return;
  if (frame.last_read_seq > reads.marker) reads.marker = frame.last_read_seq;
  if (frame.last_read_seq > reads.reported && frame.last_read_seq > (state.lastReadSeq || 0)) {
    state.lastReadSeq = frame.last_read_seq; // read elsewhere: the divider follows
    decorate();
  }
});

// A report that was not stored: forget that it was sent, and report again after a pause (the
// newest seq in view then, which may be higher).
on("error", (frame) => {
  if (frame.frame !== "read" || !REPORT_AGAIN.has(frame.code)) return;
  reads.reported = 0;
  reads.refusals += 1;
  const seconds = Number(frame.retry_after);
  const wait = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : backoffDelay(reads.refusals);
  clearTimeout(reads.retryTimer);
  reads.retryTimer = setTimeout(scheduleReport, wait);
});

on("message", scheduleReport);
when("hello", () => {
  reads.refusals = 0;
  scheduleReport();
});
els.log.addEventListener("scroll", scheduleReport, { passive: true });
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) scheduleReport();
});
window.addEventListener("focus", scheduleReport);

export function mentionsMe(message) {
  if (!message || message.deleted || !message.author || message.author.id === me) return false;
  if (message.mentions_room) return true;
  return Array.isArray(message.mentions) && message.mentions.some((m) => m && m.id === me);
}

registerMessagePart((li, message) => {
  if (message.deleted) {
    li.classList.remove("message--mention");
  } else if ("mentions" in message || "mentions_room" in message) {
    li.classList.toggle("message--mention", mentionsMe(message));
  }
});
