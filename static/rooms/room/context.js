/*
 * chatsite room page: the page's shared context: the config (the json_script block #room-config:
 * slug, name (what the page's texts call the room: the slug is the URL's only), user, ws_path, role, can_moderate, archived, history, last_read_seq, show_node_names),
 * the URLs from .chat's data attributes, the page's elements, the shared state, and the
 * constants (ms unless named otherwise; the server's numbers are the ones docs/protocol.md
 * gives).
 */

import { gettext } from "./i18n.js";

export const BODY_MAX_LENGTH = 4000; // characters (code points), as the server counts
export const CHAR_COUNT_FROM = 3500; // show the counter from this length on
export const HISTORY_PAGE_SIZE = 200;
export const HISTORY_TIMEOUT_MS = 15000;
export const CATCH_UP_RETRY_MS = 5000;
export const ACK_GRACE_MS = 1500; // after an ack, how long the live message may take before we fetch it
export const NEAR_BOTTOM_PX = 80;
export const CLOSE_LEFT = 4000;
export const CLOSE_UNAUTHENTICATED = 4401;
export const CLOSE_BANNED = 4403;
export const CLOSE_NOT_FOUND = 4404;
export const CLOSE_ARCHIVED = 4410;
export const CLOSE_SERVICE_RESTART = 1012; // the node is shutting down: reconnect within 0-2 s (seq.js restartDelay)
export const CLOSE_SESSION_RENEWED = 4001; // this session changed its password (new cookie): reconnect (connection.js)
export const CLOSE_TOO_SLOW = 4008; // we read too slowly: reconnect with backoff (and resume)
export const CLOSE_UNAVAILABLE = 4503; // the node cannot reach its database or Redis: backoff
export const CLOSE_TOO_MANY_SOCKETS = 4429; // over the per-user socket cap: backoff until a slot frees
export const RETRY_CLOSE_LABELS = {
  [CLOSE_TOO_SLOW]: gettext("connection too slow"),
  [CLOSE_TOO_MANY_SOCKETS]: gettext("too many open tabs or connections"),
  [CLOSE_UNAVAILABLE]: gettext("server unavailable"),
};
// The server relays one typing frame per socket every 2 s and drops the rest; a little over 2 s
// here, so network jitter does not make it drop one of ours (and the others' hint flicker).
export const TYPING_SEND_INTERVAL_MS = 2100;
export const TYPING_SHOW_MS = 4000; // a typing hint lasts this long after the user's last typing frame
export const NARROW_SCREEN = "(max-width: 760px)"; // as in style.css: the online list starts collapsed

export const config = JSON.parse(document.getElementById("room-config").textContent);
export const chat = document.querySelector(".chat");
export const urls = {
  history: chat.dataset.historyUrl,
  login: chat.dataset.loginUrl,
  rooms: chat.dataset.roomsUrl,
};
export const els = {
  log: document.getElementById("chat-log"),
  list: document.getElementById("message-list"),
  outbox: document.getElementById("outbox"),
  status: document.getElementById("connection-status"),
  form: document.getElementById("send-form"),
  fieldset: document.getElementById("send-fieldset"),
  input: document.getElementById("message-body"),
  formError: document.getElementById("form-error"),
  charCount: document.getElementById("char-count"),
  banner: document.getElementById("room-banner"),
  presence: document.getElementById("presence"),
  presenceDetails: document.getElementById("presence-details"),
  presenceCount: document.getElementById("presence-count"),
  presenceNote: document.getElementById("presence-note"),
  presenceList: document.getElementById("presence-list"),
  typingHint: document.getElementById("typing-hint"),
  loadOlder: document.getElementById("load-older"),
  historyStart: document.getElementById("history-start"),
  historyStatus: document.getElementById("history-status"),
  jump: document.getElementById("jump-latest"),
  jumpButton: document.getElementById("jump-latest-button"),
  jumpCount: document.getElementById("jump-latest-count"),
};

export const state = {
  socket: null,
  helloReceived: false,
  resuming: false, // the socket asked for a replay (?after_seq) and "resumed" has not come yet
  stopped: false, // after close 4000 / 4401 / 4403 / 4404 / 4410: no reconnect by itself
  stopReason: null,
  archived: Boolean(config.archived), // no new messages, no edits
  banned: false,
  // stopped (banned, removed, left, signed out, archived): every action here would be refused,
  // so none is offered (no reaction, reply, edit or delete) until a rejoin (connection.js)
  readOnly: false,
  everConnected: false, // a hello was received before (the next one is a reconnect)
  attempt: 0, // reconnect attempts since the last hello
  sessionRenewedAt: null, // Date.now() of the last close 4001 (connection.js)
  reconnectTimer: null,
  countdownTimer: null,
  lastSeq: 0, // highest seq shown
  shown: new Map(), // seq → <li> in the message list
  seqs: [], // the shown seqs, ascending (the list's order; dividers sit between them)
  // scroll-back below seqs[0]; `updates`: seq → newest edit/delete of a message not shown yet
  // that came while a page was loading (the page may have been read before it)
  older: { hasMore: false, loading: false, failedAt: 0, updates: new Map() },
  lastReadSeq: Number.isInteger(config.last_read_seq) ? config.last_read_seq : null,
  landing: false, // loading and scrolling to the first unread message (no bottom pinning)
  unseenBelow: 0, // others' messages that arrived while the reader was scrolled up
  batch: 0, // >0: inside batched(): dividers and groups are redrawn once at its end
  batchNearBottom: false, // the view was at the bottom when the outermost batch began
  buffered: new Map(), // seq → message, live messages held back until a gap is filled
  catchUp: { running: false, again: false, retryTimer: null },
  outbox: new Map(), // client_msg_id → {id, body, el, status, retries, retryTimer}
  ackedAwaitingMessage: new Map(), // seq → outbox <li> whose ack came before the message
  deletedAhead: new Set(), // seqs above lastSeq deleted before their message was shown
  roster: { members: new Map(), count: 0, complete: true, expanded: false, paging: null }, // roster.js
  online: new Map(), // user id → username: the online users we know (roster.members)
  presenceLive: false, // the roster comes from this socket's presence frame (diffs apply to it)
  typists: new Map(), // user id → {username, timer}: whose typing frame came in the last 4 s
  typingSentAt: 0, // Date.now() of our last typing frame
  typingText: "", // the composer's text when we last looked (typing is sent on a change only)
  replyTo: null, // {seq, author, excerpt}: the message the composer's next send answers (replies.js)
  thread: null, // {id, seq}: the message whose thread panel is open (replies.js)
};
