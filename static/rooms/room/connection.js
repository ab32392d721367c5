/*
 * chatsite room page: the socket: connect with ?after_seq=<lastSeq> (resume) and ?tab=<id>
 * (tab.js: this tab's read reports are not echoed back to it), hello / resumed /
 * resync, close codes, reconnect with backoff, stop; send(frame) for every module; frames go to
 * hooks.js handlers.
 */

import {
  chat,
  CLOSE_ARCHIVED,
  CLOSE_BANNED,
  CLOSE_LEFT,
  CLOSE_NOT_FOUND,
  CLOSE_SERVICE_RESTART,
  CLOSE_SESSION_RENEWED,
  CLOSE_UNAUTHENTICATED,
  config,
  els,
  RETRY_CLOSE_LABELS,
  state,
  urls,
} from "./context.js";
import { actionButton, element } from "./dom.js";
import { dispatch, emit, on } from "./hooks.js";
import { backoffDelay, restartDelay } from "./seq.js";
import { setStatus } from "./status.js";
import { gettext, interpolate } from "./i18n.js";
import { tabId } from "./tab.js";

// --- connection ----------------------------------------------------------------------------

// Every socket resumes after the last seq shown (shown seqs have no gap below it): the server
// replays what came since, then says "resumed", so nothing is missed while we were away.
export function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return `${scheme}${location.host}${config.ws_path}?after_seq=${state.lastSeq}&tab=${tabId}`;
}

export function connect() {
  if (state.stopped) return;
  clearReconnectTimers();
  if (state.socket) state.socket.close(); // a stale one; its events are ignored from now on
  setStatus("connecting", gettext("connecting…"));
  emit("connecting");
  const socket = new WebSocket(socketUrl());
  state.socket = socket;
  state.helloReceived = false;
  state.resuming = true;
  socket.addEventListener("message", (event) => {
    if (socket === state.socket) onFrame(event.data);
  });
  socket.addEventListener("close", (event) => {
    if (socket === state.socket) onClose(event);
  });
}

// Sends `frame` (an object, sent as JSON) on the live socket; false (nothing sent) before the
// socket said hello or while there is none. Exported as `send` too, the extension point.
export function sendFrame(frame) {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN || !state.helloReceived) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

export function onFrame(data) {
  let frame;
  try {
    frame = JSON.parse(data);
  } catch (err) {
    return; // not ours to fix; the server only sends JSON
  }
  if (!frame || typeof frame !== "object") return;
  if (typeof frame.type !== "string") return;
  dispatch(frame); // hooks.js: the handlers each module registered with on(type, …)
}

export function onHello(frame) {
  state.helloReceived = true;
  state.attempt = 0;
  state.sessionRenewedAt = null; // signed in with the renewed cookie: a later 4401 is a sign-out
  els.status.dataset.serverId = frame.server_id || ""; // for operators' tools; shown to staff only
  setStatus("connected", config.show_node_names ? interpolate(gettext("connected to %(node)s"), { node: frame.server_id }) : gettext("connected"));
  const reconnect = state.everConnected;
  state.everConnected = true;
  // presence.js notes "not known yet", sync.js repairs gaps, outbox.js resends what is unacked
  emit("hello", { frame, reconnect });
}

// After a 4001 (this session changed its password: Django renewed its cookie), the socket can
// close before the page that changed it has received the new cookie, so a reconnect may still
// carry the old one and be refused 4401: within this long after a 4001, that is retried with
// backoff instead of stopping.
const SESSION_RENEWAL_GRACE_MS = 15_000;

export function onClose(event) {
  state.socket = null;
  state.helloReceived = false;
  state.resuming = false;
  emit("disconnected");
  if (event.code === CLOSE_SESSION_RENEWED) state.sessionRenewedAt = Date.now();
  const renewing = state.sessionRenewedAt !== null && Date.now() - state.sessionRenewedAt < SESSION_RENEWAL_GRACE_MS;
  if (renewing && (event.code === CLOSE_SESSION_RENEWED || event.code === CLOSE_UNAUTHENTICATED)) {
    if (!state.stopped) scheduleReconnect(gettext("session renewed"));
    return;
  }
  const reason = {
    [CLOSE_LEFT]: "left",
    [CLOSE_UNAUTHENTICATED]: "signed-out",
    [CLOSE_BANNED]: "banned",
    [CLOSE_NOT_FOUND]: "not-found",
    [CLOSE_ARCHIVED]: "archived",
  }[event.code];
  if (reason) stop(reason);
  else if (state.stopped) return;
  else if (event.code === CLOSE_SERVICE_RESTART && state.attempt === 0) {
    // Node restarting: the same URL reaches another node through the balancer, after a wait
    // drawn from 0 to 2 s (seq.js restartDelay: every member of the node got this close at the
    // same instant). Once only: if that fails too, the next close waits with backoff as usual.
    state.attempt += 1;
    clearReconnectTimers();
    setStatus("connecting", gettext("reconnecting…"));
    state.reconnectTimer = setTimeout(connect, restartDelay());
  } else scheduleReconnect(RETRY_CLOSE_LABELS[event.code]);
}

// What the disabled composer says, per stop reason: why nothing can be sent from here.
const STOPPED_PLACEHOLDERS = {
  "signed-out": gettext("Log in again to write here"),
  left: gettext("You left this room: rejoin to write here"),
  banned: gettext("You are banned from this room"),
  archived: gettext("This room is archived: no new messages"),
  "not-found": gettext("This room is no longer open to you"),
};
const WRITE_PLACEHOLDER = gettext("Write a message…");

// Ends the connection for good (until a reload, or "Rejoin" after leaving). Sends that can
// never succeed here (banned, archived, no such room) stay in the outbox as not sent. The page
// turns read-only: the composer says why it is disabled, and the messages offer no action that
// the server would refuse (.chat--read-only in style.css; actions.js drops edit and delete).
export function stop(reason) {
  state.stopped = true;
  state.stopReason = reason;
  clearReconnectTimers();
  clearTimeout(state.catchUp.retryTimer);
  els.fieldset.disabled = true;
  state.readOnly = true;
  chat.classList.add("chat--read-only");
  els.input.placeholder = STOPPED_PLACEHOLDERS[reason] || STOPPED_PLACEHOLDERS["not-found"];
  const rooms = element("a", "", gettext("All rooms"));
  rooms.href = urls.rooms;
  if (reason === "signed-out") {
    const login = element("a", "", gettext("Log in"));
    login.href = `${urls.login}?next=${encodeURIComponent(location.pathname)}`;
    setStatus("stopped", gettext("You are not signed in."), " ", login);
  } else if (reason === "left") {
    setStatus("stopped", gettext("You left this room (perhaps in another tab)."), " ", actionButton(gettext("Rejoin"), rejoin));
  } else if (reason === "banned") {
    state.banned = true;
    setStatus("stopped", gettext("You are banned from this room."), " ", rooms);
  } else if (reason === "archived") {
    state.archived = true;
    els.banner.hidden = false;
    setStatus("stopped", gettext("archived"));
  } else {
    setStatus("stopped", gettext("This room does not exist (any more)."), " ", rooms);
  }
  // presence.js empties the list, outbox.js fails what cannot be sent, actions.js hides controls
  emit("stopped", { reason });
}

// After leaving (close 4000): connect again, which joins a public room again.
export function rejoin() {
  if (state.stopReason !== "left") return;
  state.stopped = false;
  state.stopReason = null;
  state.attempt = 0;
  state.readOnly = false;
  chat.classList.remove("chat--read-only");
  els.input.placeholder = WRITE_PLACEHOLDER;
  els.fieldset.disabled = false;
  connect();
}

export function scheduleReconnect(why) {
  if (state.stopped) return;
  clearReconnectTimers();
  state.attempt += 1;
  const delay = backoffDelay(state.attempt);
  const reconnectAt = Date.now() + delay;
  state.reconnectTimer = setTimeout(connect, delay);

  const countdown = element("span");
  const showCountdown = () => {
    const seconds = Math.max(1, Math.ceil((reconnectAt - Date.now()) / 1000));
    const waiting = interpolate(gettext("reconnecting in %(seconds)s s…"), { seconds });
    countdown.textContent = why ? interpolate(gettext("%(why)s: %(waiting)s"), { why, waiting }) : waiting;
  };
  showCountdown();
  setStatus("waiting", countdown, " ", actionButton(gettext("Reconnect now"), connect));
  state.countdownTimer = setInterval(showCountdown, 1000);
}

export function clearReconnectTimers() {
  clearTimeout(state.reconnectTimer);
  clearInterval(state.countdownTimer);
  state.reconnectTimer = null;
  state.countdownTimer = null;
}

export function reconnectIfWaiting() {
  if (state.reconnectTimer !== null) connect();
}

export { sendFrame as send };

on("hello", onHello);
on("room.archived", (frame) => {
  if (frame.room === config.slug) stop("archived"); // the close 4410 follows
});
// "history" answers a fetch frame, which this page does not send (gaps go through REST).
