/*
 * chatsite room page: live messages, edits and deletes, and gap repair: a live seq beyond
 * lastSeq + 1 is held and the missing ones read from GET <history>?after_seq=lastSeq before it
 * is shown (seq.js decides; this module applies).
 */

import { CATCH_UP_RETRY_MS, config, state } from "./context.js";
import { on, when } from "./hooks.js";
import { fetchHistoryPage } from "./http.js";
import {
  applyMessageState,
  batched,
  deletedVersion,
  isValidMessage,
  noteOlderUpdate,
  showMessage,
} from "./render.js";
import { catchUpVerdict, flushPlan, isNewer, liveAction } from "./seq.js";
import { clearNotice, showNotice } from "./status.js";
import { gettext } from "./i18n.js";

// --- live messages and gap repair ----------------------------------------------------------

export function handleLiveMessage(message) {
  if (!isValidMessage(message)) return;
  const action = liveAction(message.seq, {
    lastSeq: state.lastSeq,
    shown: state.shown.has(message.seq),
    catchingUp: state.catchUp.running,
  });
  if (action === "ignore") return;
  if (action === "hold") {
    // an edit or delete may overtake the original message: hold the newest state
    if (isNewer(message, state.buffered.get(message.seq))) state.buffered.set(message.seq, message);
    if (!state.resuming) requestCatchUp(); // while resuming, the replay fills the gap
    return;
  }
  showMessage(message);
}

// message.updated: the full current state of a message. Shown: update it in place. Not here
// yet (seq above lastSeq): it is a message we have not seen, so it goes the way of a live
// one. Older than the page's history, or a seq the history said does not exist: ignored.
export function onMessageUpdated(message) {
  if (!isValidMessage(message)) return;
  const li = state.shown.get(message.seq);
  if (li) applyMessageState(li, message);
  else if (message.seq > state.lastSeq) handleLiveMessage(message);
  else noteOlderUpdate(message);
}

// message.deleted {id, room, seq}: shown → "message deleted" in its place; held back → held
// as deleted; above lastSeq and unseen → remembered, so it is shown deleted when it comes.
export function onMessageDeleted(frame) {
  if (frame.room !== config.slug || !Number.isInteger(frame.seq)) return;
  const seq = frame.seq;
  const li = state.shown.get(seq);
  if (li) {
    applyMessageState(li, { deleted: true });
    return;
  }
  if (seq <= state.lastSeq) {
    noteOlderUpdate({ seq, deleted: true });
    return;
  }
  const held = state.buffered.get(seq);
  if (held) {
    state.buffered.set(seq, deletedVersion(held));
  } else {
    state.deletedAhead.add(seq);
    requestCatchUp(); // the message exists and we have not seen it
  }
}

// Shows buffered live messages that now follow lastSeq without a gap. With acceptGaps, shows
// all of them in order (the history said the missing seqs do not exist).
export function flushBuffered(acceptGaps) {
  const plan = flushPlan(state.buffered.keys(), state.lastSeq, acceptGaps);
  for (const seq of plan.drop) state.buffered.delete(seq);
  for (const seq of plan.show) showMessage(state.buffered.get(seq)); // removes it from buffered
}


// Fetches every message after lastSeq, page by page; returns how many were new.
export async function fetchMissing() {
  let added = 0;
  for (;;) {
    const page = await fetchHistoryPage(state.lastSeq);
    batched(() => {
      for (const message of page.results) {
        if (isValidMessage(message) && !state.shown.has(message.seq)) {
          showMessage(message);
          added += 1;
        }
      }
    });
    if (!page.has_more || page.results.length === 0) return added;
  }
}

export async function catchUp() {
  const run = state.catchUp;
  if (run.running) {
    run.again = true;
    return;
  }
  run.running = true;
  clearTimeout(run.retryTimer);
  try {
    do {
      run.again = false;
      const heldBeforeFetch = new Set(state.buffered.keys());
      const added = await fetchMissing();
      flushBuffered(false);
      const verdict = catchUpVerdict({ added, heldBefore: heldBeforeFetch, held: state.buffered.keys() });
      // A gap the history cannot fill, for a message held before we asked: it is not stored.
      if (verdict === "accept-gaps") flushBuffered(true);
      else if (verdict === "again") run.again = true;
    } while (run.again);
    forgetAckedBelowLastSeq();
    clearNotice("catch-up");
  } catch (err) {
    run.again = false;
    showNotice("catch-up", gettext("Could not load missed messages; trying again shortly."));
    if (!state.stopped) run.retryTimer = setTimeout(requestCatchUp, CATCH_UP_RETRY_MS);
  } finally {
    run.running = false;
  }
  if (!state.catchUp.running) flushBuffered(false);
}

export function requestCatchUp() {
  catchUp().catch(() => {}); // catchUp handles its own errors; never an unhandled rejection
}

// After a reconnect: edits and deletes made while we were away do not come again, so read the
// newest shown messages' current state once (best effort; newer states only, see above).
export async function refreshShown() {
  if (state.shown.size === 0) return;
  try {
    const page = await fetchHistoryPage(undefined, state.lastSeq + 1);
    for (const message of page.results) {
      const li = isValidMessage(message) ? state.shown.get(message.seq) : undefined;
      if (li) applyMessageState(li, message);
    }
  } catch (err) {
    // the next reconnect tries again; live edits keep coming meanwhile
  }
}

// Acked outbox entries whose seq is covered by history but was never shown (cannot happen
// unless the message was removed) must not stay on screen forever.
export function forgetAckedBelowLastSeq() {
  for (const [seq, li] of state.ackedAwaitingMessage) {
    if (seq <= state.lastSeq) {
      li.remove();
      state.ackedAwaitingMessage.delete(seq);
    }
  }
  for (const seq of state.deletedAhead) {
    if (seq <= state.lastSeq) state.deletedAhead.delete(seq);
  }
}

on("message", (frame) => handleLiveMessage(frame.message));
on("message.updated", (frame) => onMessageUpdated(frame.message));
on("message.deleted", onMessageDeleted);

// The replay asked with ?after_seq is complete: anything still missing goes through REST.
on("resumed", () => {
  state.resuming = false;
  flushBuffered(false);
  if (state.buffered.size > 0) requestCatchUp();
});
// Over 1,000 messages were missed: the server replayed none; read them from the history API.
on("resync", () => {
  state.resuming = false;
  requestCatchUp();
});
// Missed messages come as the replay that follows hello (then "resumed"); held-back live ones
// still need the history API, and edits made while we were away are read once.
when("hello", ({ reconnect }) => {
  if (state.buffered.size > 0) requestCatchUp();
  if (reconnect) refreshShown();
});
