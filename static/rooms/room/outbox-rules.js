import { backoffDelay } from "./seq.js";
import { gettext, interpolate } from "./i18n.js";

/*
 * chatsite room page: the pure outbox rules (no DOM, no socket, no timers), tested under Node by
 * tests/js/outbox.test.mjs. outbox.js applies them to the page.
 *
 * - errorPlan(frame, entry, random): what an error frame ({"type":"error","code","detail",
 *   "client_msg_id"?, "retry_after"?, "until"?, "frame"?}; codes in docs/protocol.md) does to
 *   the send it names (`entry`: {retries}, or null when it names none of ours). One of
 *     {action: "stop", reason}         archived / banned / not_found: the socket closes next and
 *                                      the page stops; the text stays, not sent
 *     {action: "muted"}                not stored; cannot succeed before `until`: failed by hand
 *     {action: "reconnect"}            unavailable answering the resume: reconnect with backoff
 *     {action: "ignore"}               about a presence.list or a read report: presence.js and
 *                                      reads.js handle their own
 *     {action: "show"}                 about no send of ours: shown in the form's error line
 *     {action: "retry", waitMs, label} rate_limited: resend the same client_msg_id after
 *                                      retry_after s (never sooner than 100 ms), else backoff
 *     {action: "retry-later", waitMs}  unavailable: resend after backoff(retries + 1)
 *     {action: "fail", retryByHand}    anything else: failed; internal_error may be retried by
 *                                      hand, the rest only edited or discarded
 *   A send is resent only with its own client_msg_id, so the server stores it at most once.
 * - savedOutbox(entries): what survives a reload (sessionStorage): [{id, body}] of the entries
 *   not failed, or null when there are none. parseSavedOutbox(text): the valid ones back.
 * - statusLabel(status, reason): "sending…", "not stored yet, retrying…", "not sent", "sent".
 */


export const STOP_ERROR_CODES = { archived: "archived", banned: "banned", not_found: "not-found" };
export const RETRY_LATER_CODES = new Set(["unavailable"]);
export const RETRY_BY_HAND_CODES = new Set(["internal_error"]);
export const MIN_RATE_LIMIT_WAIT_MS = 100;

export const OUTBOX_LABELS = {
  sending: gettext("sending…"),
  retrying: gettext("not stored yet, retrying…"),
  failed: gettext("not sent"),
  sent: gettext("sent"),
};

export function statusLabel(status, reason) {
  return reason ? interpolate(gettext("%(status)s (%(reason)s)"), { status: OUTBOX_LABELS[status], reason }) : OUTBOX_LABELS[status];
}

export function errorPlan(frame, entry, random = Math.random) {
  const stopReason = STOP_ERROR_CODES[frame.code];
  if (stopReason) return { action: "stop", reason: stopReason };
  if (frame.code === "muted") return { action: "muted" };
  if (frame.code === "unavailable" && frame.frame === "resume") return { action: "reconnect" };
  if (frame.frame === "presence.list") return { action: "ignore" }; // presence.js's own (Show all)
  if (frame.frame === "read") return { action: "ignore" }; // reads.js's own (reported again)
  if (!entry) return { action: "show" };
  if (frame.code === "rate_limited") {
    const seconds = Number(frame.retry_after);
    const wait = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : backoffDelay(entry.retries + 1, random);
    return { action: "retry", waitMs: Math.max(MIN_RATE_LIMIT_WAIT_MS, wait), label: gettext("rate limited") };
  }
  if (RETRY_LATER_CODES.has(frame.code)) {
    return { action: "retry-later", waitMs: backoffDelay(entry.retries + 1, random) };
  }
  return { action: "fail", retryByHand: RETRY_BY_HAND_CODES.has(frame.code) };
}

export function savedOutbox(entries) {
  const unsent = [];
  for (const entry of entries) {
    if (entry.status === "failed") continue;
    const item = { id: entry.id, body: entry.body };
    if (Number.isInteger(entry.replyTo)) item.replyTo = entry.replyTo; // a reply keeps its parent
    if (Array.isArray(entry.attachments) && entry.attachments.length) item.attachments = entry.attachments.slice();
    unsent.push(item);
  }
  return unsent.length ? unsent : null;
}

export function parseSavedOutbox(text) {
  let saved;
  try {
    saved = JSON.parse(text || "[]");
  } catch (err) {
    return [];
  }
  if (!Array.isArray(saved)) return [];
  return saved
    .filter((item) => item && typeof item.id === "string" && typeof item.body === "string")
    .map((item) => {
      const attachments = Array.isArray(item.attachments) ? item.attachments.filter(Number.isInteger) : [];
      return { ...item, attachments };
    });
}
