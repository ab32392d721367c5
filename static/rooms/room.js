/*
 * chatsite room page: live messages over a WebSocket, an outbox that survives reconnects, and
 * gap repair through the history API. No dependencies.
 *
 * Frame contract (rooms/consumers.py):
 *   server → client  {"type":"hello","server_id","room","last_seq"}            first frame
 *   client → server  {"type":"message.send","body","client_msg_id"}
 *   server → sender  {"type":"ack","client_msg_id","id","seq"}                 once stored
 *   server → all     {"type":"message","message":{id,room,seq,author,body,created_at,server_id}}
 *   server → client  {"type":"error","code","detail"[,"client_msg_id"][,"field"][,"until"][,"frame"]}
 *   server → all     {"type":"message.updated","message":{…, edited_at, deleted}}  after an edit
 *   server → all     {"type":"message.deleted","id","room","seq"}              after a delete
 *   server → all     {"type":"room.archived","room"}                           then close 4410
 *   server → client  {"type":"resumed","last_seq"}      after the replay asked by ?after_seq=N
 *   server → client  {"type":"resync","latest_seq"}     instead, when over 1,000 are missing
 *   server → client  {"type":"history","messages","has_more"}  answer to a fetch frame (unused)
 *   server → client  {"type":"presence","online":[{id,username},…]}   after hello: who is online
 *   server → all     {"type":"presence.diff","joins":[…],"leaves":[…]} later changes, any node
 *   client → server  {"type":"typing"}                 while composing; at most one every 2 s
 *   server → others  {"type":"typing","user":{id,username}}   never to the typist's own sockets
 *   close 4000: you left the room (a "Rejoin" button reconnects) · 4401: not signed in ·
 *   4403: banned · 4404: no such room · 4410: archived (none of these is retried by itself)
 *   close 1012: the node is restarting: reconnect at once (the balancer picks another node);
 *   4008: too slow a reader · 4429: this user has too many sockets open (other tabs) · 4503:
 *   the node cannot reach its database or Redis · anything else (1006 …): reconnect with
 *   backoff. Error rate_limited: resend after retry_after s. (The page sends no fetch or resume
 *   frames, so the server's per-user read limit never answers it.)
 *
 * Edits and deletes go through the REST API (PATCH / DELETE <history>/<id>/, session auth with
 * the X-CSRFToken header); their result arrives for everyone as message.updated / message.deleted.
 * Applying a message's state is idempotent and never goes back: deleted beats edited, a later
 * edited_at beats an earlier one, so the HTTP answer and the live frame may come in any order.
 *
 * Guarantees kept here: messages are shown ordered by seq and at most once; every send stays in
 * the outbox until acked and is resent with the same client_msg_id after a reconnect; every
 * socket resumes with ?after_seq=<lastSeq> (the server replays what was missed, then "resumed";
 * "resync" when too much is missing, and the page reads the history API instead); any gap seen in
 * live frames (dropped by the at-most-once channel layer) is filled from
 * GET <history>?after_seq=N before later live messages are shown.
 *
 * Scroll-back (the section "scroll-back, date dividers, groups …" below; its pure logic is in
 * static/rooms/timeline.js, loaded first as window.ChatTimeline): the shown seqs run without a
 * gap from the oldest loaded to lastSeq; scrolling near the top (or "Load older messages")
 * reads GET <history>?before_seq=<oldest>&limit=50 and prepends it, the first visible message
 * kept in place. Date dividers, author groups and the "New messages" divider (before the first
 * message of someone else after the config's optional last_read_seq, where the page opens) are
 * recomputed from the list after each change. A live message moves the view only when it was at
 * the bottom; otherwise "Jump to latest (N new)" shows.
 *
 * Who is here: the "Online (N)" list is the set (by user id) of the last presence frame of the
 * current socket, with the presence.diff frames after it applied (idempotent: a join of someone
 * listed or a leave of someone absent changes nothing); greyed while there is no live socket,
 * emptied when the page stops. Typing hints last TYPING_SHOW_MS after a user's last typing frame
 * and end at once when a message of theirs arrives or they go offline.
 */
(function () {
  "use strict";

  const Timeline = window.ChatTimeline; // static/rooms/timeline.js: the pure timeline logic
  const BODY_MAX_LENGTH = 4000; // characters (code points), as the server counts
  const CHAR_COUNT_FROM = 3500; // show the counter from this length on
  const HISTORY_PAGE_SIZE = 200;
  const HISTORY_TIMEOUT_MS = 15000;
  const CATCH_UP_RETRY_MS = 5000;
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const ACK_GRACE_MS = 1500; // after an ack, how long the live message may take before we fetch it
  const NEAR_BOTTOM_PX = 80;
  const CLOSE_LEFT = 4000;
  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_BANNED = 4403;
  const CLOSE_NOT_FOUND = 4404;
  const CLOSE_ARCHIVED = 4410;
  const CLOSE_SERVICE_RESTART = 1012; // the node is shutting down: reconnect at once
  const CLOSE_TOO_SLOW = 4008; // we read too slowly: reconnect with backoff (and resume)
  const CLOSE_UNAVAILABLE = 4503; // the node cannot reach its database or Redis: backoff
  const CLOSE_TOO_MANY_SOCKETS = 4429; // over the per-user socket cap: backoff until a slot frees
  const RETRY_CLOSE_LABELS = {
    [CLOSE_TOO_SLOW]: "connection too slow",
    [CLOSE_TOO_MANY_SOCKETS]: "too many open tabs or connections",
    [CLOSE_UNAVAILABLE]: "server unavailable",
  };
  // Error codes that end the socket (the close follows), and how the page stops for them.
  const STOP_ERROR_CODES = { archived: "archived", banned: "banned", not_found: "not-found" };
  // Error codes after which a resend of the same body cannot succeed.
  const RETRY_LATER_CODES = new Set(["unavailable"]);
  const RETRY_BY_HAND_CODES = new Set(["internal_error"]);
  const MIN_RATE_LIMIT_WAIT_MS = 100; // rate_limited: resend after retry_after, never sooner
  // The server relays one typing frame per socket every 2 s and drops the rest; a little over 2 s
  // here, so network jitter does not make it drop one of ours (and the others' hint flicker).
  const TYPING_SEND_INTERVAL_MS = 2100;
  const TYPING_SHOW_MS = 4000; // a typing hint lasts this long after the user's last typing frame
  const NARROW_SCREEN = "(max-width: 760px)"; // as in style.css: the online list starts collapsed

  const config = JSON.parse(document.getElementById("room-config").textContent);
  const chat = document.querySelector(".chat");
  const urls = {
    history: chat.dataset.historyUrl,
    login: chat.dataset.loginUrl,
    rooms: chat.dataset.roomsUrl,
  };
  const els = {
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

  const state = {
    socket: null,
    helloReceived: false,
    resuming: false, // the socket asked for a replay (?after_seq) and "resumed" has not come yet
    stopped: false, // after close 4000 / 4401 / 4403 / 4404 / 4410: no reconnect by itself
    stopReason: null,
    archived: Boolean(config.archived), // no new messages, no edits
    banned: false,
    everConnected: false, // a hello was received before (the next one is a reconnect)
    attempt: 0, // reconnect attempts since the last hello
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
    online: new Map(), // user id → username: who is online in the room
    presenceLive: false, // `online` comes from this socket's presence frame (diffs apply to it)
    typists: new Map(), // user id → {username, timer}: whose typing frame came in the last 4 s
    typingSentAt: 0, // Date.now() of our last typing frame
    typingText: "", // the composer's text when we last looked (typing is sent on a change only)
  };

  // --- small helpers -------------------------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text; // user text only ever goes in as text
    return node;
  }

  function newClientMsgId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID(); // only in secure contexts (https, localhost)
    }
    const bytes = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(bytes);
    } else {
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function isMine(message) {
    return Boolean(message.author) && message.author.id === config.user.id;
  }

  function characterCount(text) {
    return Array.from(text).length; // code points, like the server; not UTF-16 units
  }

  // --- time ----------------------------------------------------------------------------------

  const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dateAndTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

  // A message's time: "14:32" (its day is on the date divider above it), the full date and time
  // as the tooltip.
  function formatTime(timeEl, iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return;
    timeEl.dateTime = iso;
    timeEl.textContent = timeOnly.format(date);
    timeEl.title = fullDate.format(date);
  }

  // "14:32" today, "3 Mar 2025, 14:32" otherwise, in the reader's time zone.
  function formatLocal(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    const today = new Date().toDateString() === date.toDateString();
    return (today ? timeOnly : dateAndTime).format(date);
  }

  // An ISO 8601 time as microseconds since the epoch (Date keeps only milliseconds, and the
  // server omits ".000000"), so two edits in the same millisecond still compare in order.
  function isoMicros(iso) {
    const match = /^(.*?)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?$/.exec(String(iso));
    const ms = match ? Date.parse(match[1] + (match[3] || "Z")) : NaN;
    if (Number.isNaN(ms)) return 1; // edited at an unreadable time: still newer than unedited
    const micro = Number((match[2] || "").padEnd(6, "0").slice(0, 6));
    return ms * 1000 + micro;
  }

  // How new a state of a message is: deleted beats any edit, a later edit an earlier one.
  function versionOf(message) {
    if (message.deleted) return Infinity;
    return message.edited_at ? isoMicros(message.edited_at) : 0;
  }

  function versionOfElement(li) {
    if (li.dataset.deleted) return Infinity;
    return li.dataset.editedAt ? isoMicros(li.dataset.editedAt) : 0;
  }

  // --- scrolling -----------------------------------------------------------------------------

  function isNearBottom() {
    const log = els.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    els.log.scrollTop = els.log.scrollHeight;
  }

  // Runs `change` (which adds to the log) and keeps the view pinned to the bottom if it was
  // (never while the page is landing at the first unread message). Returns whether it was.
  function keepingBottom(change) {
    const wasNearBottom = !state.landing && isNearBottom();
    change();
    if (wasNearBottom) scrollToBottom();
    return wasNearBottom;
  }

  // --- the message list ----------------------------------------------------------------------

  function buildMessageElement(message) {
    const li = element("li", "message" + (isMine(message) ? " message--mine" : ""));
    li.dataset.seq = String(message.seq);
    li.id = "message-" + message.seq;
    if (Number.isInteger(message.id)) li.dataset.id = String(message.id);
    if (message.author && Number.isInteger(message.author.id)) li.dataset.authorId = String(message.author.id);

    const meta = element("div", "message__meta");
    const author = (message.author && message.author.username) || "unknown";
    const time = element("time", "message__time");
    formatTime(time, message.created_at);
    meta.append(
      element("span", "message__author", author),
      time,
    );
    // Node names are for operators: staff (or SHOW_NODE_NAMES=1) see them, other users do not.
    if (config.show_node_names) meta.append(element("span", "message__via", "via " + message.server_id));
    li.append(meta, element("p", "message__body", message.body));
    if (message.deleted) markDeleted(li);
    else if (message.edited_at) markEdited(li, message.edited_at);
    renderMessageActions(li);
    return li;
  }

  // "(edited)" after the time, with the edit's local time as its tooltip.
  function markEdited(li, editedAt) {
    li.dataset.editedAt = editedAt;
    let mark = li.querySelector(".message__edited");
    if (!mark) {
      mark = element("span", "message__edited", "(edited)");
      li.querySelector(".message__time").after(mark);
    }
    const date = new Date(editedAt);
    mark.title = "edited " + (Number.isNaN(date.getTime()) ? editedAt : fullDate.format(date));
  }

  // The message keeps its place; its body is replaced by a muted "message deleted".
  function markDeleted(li) {
    li.dataset.deleted = "true";
    delete li.dataset.editedAt;
    li.classList.add("message--deleted");
    const mark = li.querySelector(".message__edited");
    if (mark) mark.remove();
    closeEditor(li);
    setMessageError(li, null);
    const body = li.querySelector(".message__body");
    body.classList.add("message__body--deleted");
    body.textContent = "message deleted";
    body.hidden = false;
  }

  // Shows `message` (a newer state of the shown <li>): an edit or a delete. Returns whether it
  // changed anything; an older or equal state (a repeat, or one overtaken) changes nothing.
  function applyMessageState(li, message) {
    if (versionOf(message) <= versionOfElement(li)) return false;
    keepingBottom(() => {
      if (message.deleted) {
        markDeleted(li);
      } else {
        li.querySelector(".message__body").textContent = message.body;
        markEdited(li, message.edited_at);
      }
      renderMessageActions(li);
    });
    return true;
  }

  // Right after the shown message before it (so before that one's dividers), or first.
  function insertInSeqOrder(li, seq) {
    const index = Timeline.insertionIndex(state.seqs, seq);
    if (index === -1) return; // cannot happen: showMessage checked `shown`
    const before = index > 0 ? state.shown.get(state.seqs[index - 1]) : null;
    if (before) before.after(li);
    else els.list.prepend(li);
    state.seqs.splice(index, 0, seq);
  }

  function removeEmptyState() {
    const empty = document.getElementById("messages-empty");
    if (empty) empty.remove();
  }

  // Shows a stored message unless its seq is already shown. The only way into the list.
  function showMessage(message) {
    const seq = message.seq;
    if (state.shown.has(seq)) return;
    if (state.deletedAhead.delete(seq) && !message.deleted) message = deletedVersion(message);
    const li = buildMessageElement(message);
    const newer = seq > state.lastSeq;
    const insert = () => {
      removeEmptyState();
      insertInSeqOrder(li, seq);
      state.shown.set(seq, li);
      listChanged();
    };
    let wasNearBottom;
    if (state.batch > 0) {
      insert(); // batched() keeps the bottom and redraws the dividers once, at its end
      wasNearBottom = state.batchNearBottom;
    } else {
      wasNearBottom = keepingBottom(insert);
    }
    state.buffered.delete(seq);
    if (newer) {
      state.lastSeq = seq;
      if (!wasNearBottom && !isMine(message)) countUnseenBelow();
    }

    const pending = state.ackedAwaitingMessage.get(seq);
    if (pending) {
      pending.remove();
      state.ackedAwaitingMessage.delete(seq);
    }
  }

  function isValidMessage(message) {
    return (
      message !== null &&
      typeof message === "object" &&
      Number.isInteger(message.seq) &&
      message.room === config.slug &&
      typeof message.body === "string"
    );
  }

  function deletedVersion(message) {
    return Object.assign({}, message, { body: "", deleted: true });
  }

  // The page was rendered with the latest history: adopt those elements instead of redrawing.
  function adoptRenderedHistory() {
    for (const li of els.list.querySelectorAll("li[data-seq]")) {
      const seq = Number(li.dataset.seq);
      if (state.shown.has(seq)) continue;
      state.shown.set(seq, li);
      state.seqs.splice(Timeline.insertionIndex(state.seqs, seq), 0, seq); // rendered in order
      if (seq > state.lastSeq) state.lastSeq = seq;
      const time = li.querySelector("time");
      if (time) formatTime(time, time.getAttribute("datetime"));
      if (li.dataset.editedAt && !li.dataset.deleted) markEdited(li, li.dataset.editedAt);
      renderMessageActions(li);
    }
    batched(() => {
      for (const message of config.history || []) {
        if (isValidMessage(message)) showMessage(message);
      }
    });
    state.older.hasMore = state.seqs.length > 0 && state.seqs[0] > 1; // seqs start at 1
    scrollToBottom();
  }

  // --- scroll-back, date dividers, groups, "Jump to latest", first-unread landing -------------
  //
  // The list holds the shown messages in seq order (`state.seqs`), contiguous from seqs[0] to
  // lastSeq: live frames, gap repair and resume extend it upward (above), scroll-back extends it
  // downward with GET <history>?before_seq=seqs[0]. Every way in is showMessage, which shows a
  // seq at most once and in its place, so any interleaving of these keeps the list in order.
  // Dividers (<li class="divider">, no data-seq) and groups are recomputed from the list by
  // Timeline.layout after each change (once per batch).

  const OLDER_PAGE_SIZE = 50;
  const LOAD_OLDER_WITHIN_PX = 400; // scrolled this close to the top: load the next older page
  const OLDER_RETRY_MS = 5000; // after a failed load, scrolling does not retry sooner
  const LANDING_MAX_PAGES = 10; // first unread further back than this: land at the oldest loaded
  const LANDING_CONTEXT = 5; // read messages shown above the "New messages" divider
  const dayFormat = new Intl.DateTimeFormat(undefined, {
    weekday: "long", year: "numeric", month: "long", day: "numeric",
  });
  const dividers = new Map(); // "day:<key>" | "new" → <li class="divider">

  // Runs `change` (several showMessage calls) with one redraw of dividers and groups at the end,
  // keeping the view pinned to the bottom if it was.
  function batched(change) {
    if (state.batch > 0) return change();
    state.batchNearBottom = !state.landing && isNearBottom();
    state.batch += 1;
    try {
      return change();
    } finally {
      state.batch -= 1;
      decorate();
      if (state.batchNearBottom) scrollToBottom();
    }
  }

  function listChanged() {
    if (state.batch === 0) decorate();
  }

  const timelineItems = new WeakMap(); // <li> → its {seq, authorId, time} (they never change)

  function timelineItem(seq) {
    const li = state.shown.get(seq);
    let item = timelineItems.get(li);
    if (!item) {
      const time = li.querySelector(".message__time");
      const iso = time ? time.getAttribute("datetime") : null;
      const authorId = li.dataset.authorId ? Number(li.dataset.authorId) : null;
      item = { seq, authorId, time: iso ? Date.parse(iso) : NaN };
      timelineItems.set(li, item);
    }
    return item;
  }

  function dividerElement(key, label, modifier) {
    let li = dividers.get(key);
    if (!li) {
      li = element("li", `divider divider--${modifier}`);
      li.dataset.divider = key;
      li.append(element("span", "divider__label"));
      dividers.set(key, li);
    }
    const text = li.firstChild;
    if (text.textContent !== label) text.textContent = label;
    return li;
  }

  // Puts each divider right before its message and marks where groups continue.
  function decorate() {
    const items = state.seqs.map(timelineItem);
    const plan = Timeline.layout(items, {
      format: (date) => dayFormat.format(date),
      lastReadSeq: state.lastReadSeq,
      myId: config.user.id,
    });
    const wanted = new Set();
    for (const entry of plan) {
      const li = state.shown.get(entry.seq);
      li.classList.toggle("message--continued", !entry.groupStart);
      let anchor = li;
      if (entry.newDivider) {
        const el = dividerElement("new", "New messages", "new");
        wanted.add("new");
        if (anchor.previousElementSibling !== el) anchor.before(el);
        anchor = el;
      }
      if (entry.dayDivider !== null) {
        const key = `day:${entry.day}`;
        const el = dividerElement(key, entry.dayDivider, "day");
        wanted.add(key);
        if (anchor.previousElementSibling !== el) anchor.before(el);
      }
    }
    for (const [key, el] of dividers) {
      if (!wanted.has(key)) {
        el.remove();
        dividers.delete(key);
      }
    }
    renderHistoryTop();
  }

  // The first message at least partly in view, and where it is: restored after older messages
  // went in above it, so the reader's place does not move.
  function captureAnchor() {
    const top = els.log.getBoundingClientRect().top;
    for (const seq of state.seqs) {
      const li = state.shown.get(seq);
      const rect = li.getBoundingClientRect();
      if (rect.bottom > top) return { li, offset: rect.top - top };
    }
    return null;
  }

  function restoreAnchor(anchor) {
    if (!anchor || !anchor.li.isConnected) return;
    const offset = anchor.li.getBoundingClientRect().top - els.log.getBoundingClientRect().top;
    els.log.scrollTop += offset - anchor.offset;
  }

  // The control above the list: "Load older messages" (for keyboards and screen readers; the
  // same load runs by itself when scrolling near the top), "Loading…", or the room's start.
  function renderHistoryTop() {
    const older = state.older;
    els.loadOlder.hidden = !older.hasMore;
    els.loadOlder.disabled = older.loading;
    els.loadOlder.textContent = older.loading ? "Loading older messages…" : "Load older messages";
    els.historyStart.hidden = older.hasMore || state.seqs.length === 0;
  }

  // One page of messages before the oldest shown. Resolves with whether it added any.
  async function loadOlder({ keepPlace = true } = {}) {
    const older = state.older;
    if (older.loading || !older.hasMore || state.seqs.length === 0) return false;
    older.loading = true;
    renderHistoryTop();
    let added = 0;
    try {
      const page = await fetchHistoryPage(undefined, state.seqs[0], OLDER_PAGE_SIZE);
      const messages = Timeline.mergeBySeq(state.seqs, page.results.filter(isValidMessage));
      const anchor = keepPlace && !state.landing ? captureAnchor() : null;
      older.hasMore = Boolean(page.has_more) && page.results.length > 0;
      older.loading = false;
      batched(() => {
        for (const message of messages) showMessage(message);
        for (const [seq, update] of older.updates) {
          const li = state.shown.get(seq);
          if (li) applyMessageState(li, update); // newer states only
        }
      }); // redraws the control above the list too, before the place is restored
      restoreAnchor(anchor);
      added = messages.length;
      older.failedAt = 0;
      els.historyStatus.textContent = added ? `${added} older messages loaded` : "";
      clearNotice("older");
    } catch (err) {
      older.failedAt = Date.now();
      showNotice("older", "Could not load older messages; scroll up or press the button to try again.");
    } finally {
      older.loading = false;
      older.updates.clear();
      renderHistoryTop();
    }
    if (added && !state.landing) setTimeout(loadOlderIfNearTop, 0); // the view may still be short
    return added > 0;
  }

  // An edit or delete of a message below the shown ones: if an older page is on its way, it may
  // have been read before the change, so the change is applied after the page is shown.
  function noteOlderUpdate(message) {
    const older = state.older;
    if (!older.loading) return; // not loaded yet: the page that loads it will have this state
    const held = older.updates.get(message.seq);
    if (!held || versionOf(message) > versionOf(held)) older.updates.set(message.seq, message);
  }

  function loadOlderIfNearTop() {
    const older = state.older;
    if (state.landing || older.loading || !older.hasMore) return;
    if (Date.now() - older.failedAt < OLDER_RETRY_MS) return;
    if (els.log.scrollTop < LOAD_OLDER_WITHIN_PX) loadOlder().catch(() => {});
  }

  // "Jump to latest (N new)": shown while the reader is away from the bottom.
  function countUnseenBelow() {
    state.unseenBelow += 1;
    renderJump();
  }

  function renderJump() {
    const away = !isNearBottom();
    if (!away) state.unseenBelow = 0;
    els.jump.hidden = !away;
    const count = state.unseenBelow;
    els.jumpCount.textContent = count ? ` (${count} new)` : "";
  }

  function jumpToLatest() {
    state.landing = false;
    scrollToBottom();
    state.unseenBelow = 0;
    renderJump();
    els.log.focus({ preventScroll: true });
  }

  function onLogScroll() {
    renderJump();
    loadOlderIfNearTop();
  }

  // Opening the room: with the config's last_read_seq below the newest message, load back to
  // it (at most LANDING_MAX_PAGES pages), then show the "New messages" divider near the top of
  // the view. Without it (or nothing unread) the page stays at the bottom, as before.
  async function landAtFirstUnread() {
    const lastRead = state.lastReadSeq;
    if (lastRead === null || lastRead >= state.lastSeq || state.seqs.length === 0) return;
    state.landing = true;
    try {
      for (let pages = 0; pages < LANDING_MAX_PAGES; pages++) {
        if (state.seqs[0] <= Math.max(1, lastRead - LANDING_CONTEXT) || !state.older.hasMore) break;
        if (!(await loadOlder({ keepPlace: false }))) break;
      }
    } catch (err) {
      // the divider goes where it can; scrolling up loads the rest
    }
    const divider = dividers.get("new");
    if (state.landing && divider) {
      const logTop = els.log.getBoundingClientRect().top;
      els.log.scrollTop += divider.getBoundingClientRect().top - logTop - 8;
    } else if (state.landing) {
      scrollToBottom(); // nothing unread from others
    }
    state.landing = false;
    renderJump();
  }

  // --- editing and deleting (REST; the result comes back live for everyone) -------------------

  function canModerate() {
    return Boolean(config.can_moderate) || config.role === "owner" || config.role === "moderator";
  }

  // The small "Edit" / "Delete" controls of a shown message: Edit on your own, Delete on your own
  // and, for the room's owner and moderators, on every message. None on a deleted message.
  function renderMessageActions(li) {
    const meta = li.querySelector(".message__meta");
    let actions = meta.querySelector(".message__actions");
    if (!actions) {
      actions = element("span", "message__actions");
      meta.append(actions);
    }
    actions.replaceChildren();
    if (li.dataset.deleted || !li.dataset.id || state.banned) return;
    const mine = Number(li.dataset.authorId) === config.user.id;
    if (mine && !state.archived && !li.querySelector(".message__editor")) {
      actions.append(actionButton("Edit", () => openEditor(li), "Edit this message"));
    }
    if (mine || canModerate()) {
      const button = actionButton("Delete", () => deleteMessage(li), "Delete this message");
      button.classList.add("link-button--danger");
      actions.append(button);
    }
  }

  function renderAllMessageActions() {
    for (const li of state.shown.values()) {
      if (state.archived || state.banned) closeEditor(li);
      renderMessageActions(li);
    }
  }

  function messageUrl(li) {
    return `${urls.history}${encodeURIComponent(li.dataset.id)}/`; // <history> is .../messages/
  }

  function setMessageError(li, text) {
    let error = li.querySelector(".message__error");
    if (text === null) {
      if (error) error.remove();
      return;
    }
    if (!error) {
      error = element("p", "message__error");
      error.setAttribute("role", "alert");
      li.append(error);
    }
    error.textContent = text;
  }

  function openEditor(li) {
    if (li.querySelector(".message__editor") || li.dataset.deleted) return;
    const body = li.querySelector(".message__body");
    const form = element("form", "message__editor");
    const textarea = element("textarea", "message__edit-input");
    textarea.value = body.textContent;
    textarea.rows = Math.min(8, Math.max(2, body.textContent.split("\n").length));
    textarea.setAttribute("aria-label", "Edit message");
    const save = element("button", "button button--small", "Save");
    save.type = "submit";
    const buttons = element("div", "message__editor-buttons");
    buttons.append(save, actionButton("Cancel", () => closeEditor(li)));
    form.append(textarea, buttons);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveEdit(li, form);
    });
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        closeEditor(li);
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    setMessageError(li, null);
    body.hidden = true;
    body.after(form);
    renderMessageActions(li);
    textarea.focus();
    textarea.setSelectionRange(textarea.value.length, textarea.value.length);
  }

  function closeEditor(li) {
    const form = li.querySelector(".message__editor");
    if (!form) return;
    const hadFocus = form.contains(document.activeElement);
    form.remove();
    li.querySelector(".message__body").hidden = false;
    setMessageError(li, null);
    renderMessageActions(li);
    if (hadFocus) els.input.focus();
  }

  async function saveEdit(li, form) {
    const textarea = form.querySelector("textarea");
    const save = form.querySelector("button[type=submit]");
    const body = textarea.value;
    if (!body.trim()) {
      setMessageError(li, "Write a message first (or delete it).");
      return;
    }
    const count = characterCount(body);
    if (count > BODY_MAX_LENGTH) {
      setMessageError(li, `The message is ${count} characters long; the limit is ${BODY_MAX_LENGTH}.`);
      return;
    }
    if (body === li.querySelector(".message__body").textContent) {
      closeEditor(li); // nothing changed: nothing to send
      return;
    }
    textarea.readOnly = true;
    save.disabled = true;
    setMessageError(li, null);
    try {
      const message = await apiRequest("PATCH", messageUrl(li), { body });
      if (isValidMessage(message)) applyMessageState(li, message); // no-op if the frame was first
      if (form.isConnected) closeEditor(li);
    } catch (err) {
      textarea.readOnly = false;
      save.disabled = false;
      if (li.isConnected && !li.dataset.deleted) setMessageError(li, err.message);
    }
  }

  async function deleteMessage(li) {
    const mine = Number(li.dataset.authorId) === config.user.id;
    const question = mine ? "Delete your message?" : "Delete this message for everyone?";
    if (!window.confirm(question + " Everyone will see “message deleted” in its place.")) return;
    setMessageError(li, null);
    try {
      await apiRequest("DELETE", messageUrl(li));
      applyMessageState(li, { deleted: true }); // no-op if message.deleted came first
    } catch (err) {
      if (!li.dataset.deleted) setMessageError(li, err.message);
    }
  }

  // Django's CSRF token: the csrftoken cookie, or the {% csrf_token %} input of the page when
  // the cookie cannot be read (CSRF_COOKIE_HTTPONLY, CSRF_USE_SESSIONS).
  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // A same-origin JSON request with the session and the CSRF token. Resolves with the answer's
  // JSON (null for 204); rejects with an Error whose message is fit to show.
  async function apiRequest(method, url, data) {
    const headers = { Accept: "application/json", "X-CSRFToken": csrfToken() };
    const options = { method, credentials: "same-origin", headers };
    if (data !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(data);
    }
    if (typeof AbortSignal !== "undefined" && AbortSignal.timeout) {
      options.signal = AbortSignal.timeout(HISTORY_TIMEOUT_MS);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new Error("Could not reach the server; try again.");
    }
    let payload = null;
    if (response.status !== 204) {
      try {
        payload = await response.json();
      } catch (err) {
        payload = null;
      }
    }
    if (!response.ok) throw new Error(errorText(payload, response.status));
    return payload;
  }

  // {"detail": str} (401, 403, 404, 409, 429) or field errors {"body": [str]} (400).
  function errorText(payload, status) {
    if (payload && typeof payload.detail === "string") return payload.detail;
    if (payload && typeof payload === "object") {
      for (const [field, errors] of Object.entries(payload)) {
        const first = Array.isArray(errors) ? errors[0] : errors;
        if (typeof first === "string") return field === "non_field_errors" ? first : `${field}: ${first}`;
      }
    }
    return `The server answered ${status}; try again.`;
  }

  // --- live messages and gap repair ----------------------------------------------------------

  function handleLiveMessage(message) {
    if (!isValidMessage(message) || state.shown.has(message.seq)) return;
    if (state.catchUp.running || message.seq > state.lastSeq + 1) {
      const held = state.buffered.get(message.seq);
      // an edit or delete may overtake the original message: hold the newest state
      if (!held || versionOf(message) > versionOf(held)) state.buffered.set(message.seq, message);
      if (!state.resuming) requestCatchUp(); // while resuming, the replay fills the gap
      return;
    }
    showMessage(message);
  }

  // message.updated: the full current state of a message. Shown: update it in place. Not here
  // yet (seq above lastSeq): it is a message we have not seen, so it goes the way of a live
  // one. Older than the page's history, or a seq the history said does not exist: ignored.
  function onMessageUpdated(message) {
    if (!isValidMessage(message)) return;
    const li = state.shown.get(message.seq);
    if (li) applyMessageState(li, message);
    else if (message.seq > state.lastSeq) handleLiveMessage(message);
    else noteOlderUpdate(message);
  }

  // message.deleted {id, room, seq}: shown → "message deleted" in its place; held back → held
  // as deleted; above lastSeq and unseen → remembered, so it is shown deleted when it comes.
  function onMessageDeleted(frame) {
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
  function flushBuffered(acceptGaps) {
    const seqs = Array.from(state.buffered.keys()).sort((a, b) => a - b);
    for (const seq of seqs) {
      if (seq <= state.lastSeq) {
        state.buffered.delete(seq);
        continue;
      }
      if (seq > state.lastSeq + 1 && !acceptGaps) break;
      showMessage(state.buffered.get(seq));
    }
  }

  async function fetchHistoryPage(afterSeq, beforeSeq, limit = HISTORY_PAGE_SIZE) {
    const where = beforeSeq === undefined ? `after_seq=${afterSeq}` : `before_seq=${beforeSeq}`;
    const url = `${urls.history}?${where}&limit=${limit}`;
    const options = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (typeof AbortSignal !== "undefined" && AbortSignal.timeout) {
      options.signal = AbortSignal.timeout(HISTORY_TIMEOUT_MS);
    }
    const response = await fetch(url, options);
    if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
    const page = await response.json();
    if (!page || !Array.isArray(page.results)) throw new Error("history: unexpected answer");
    return page;
  }

  // Fetches every message after lastSeq, page by page; returns how many were new.
  async function fetchMissing() {
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

  async function catchUp() {
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
        if (state.buffered.size > 0) {
          const firstHeld = Math.min(...state.buffered.keys());
          // A gap the history cannot fill, for a message held before we asked: it is not stored.
          if (added === 0 && heldBeforeFetch.has(firstHeld)) flushBuffered(true);
          else run.again = true;
        }
      } while (run.again);
      forgetAckedBelowLastSeq();
      clearNotice("catch-up");
    } catch (err) {
      run.again = false;
      showNotice("catch-up", "Could not load missed messages; trying again shortly.");
      if (!state.stopped) run.retryTimer = setTimeout(requestCatchUp, CATCH_UP_RETRY_MS);
    } finally {
      run.running = false;
    }
    if (!state.catchUp.running) flushBuffered(false);
  }

  function requestCatchUp() {
    catchUp().catch(() => {}); // catchUp handles its own errors; never an unhandled rejection
  }

  // After a reconnect: edits and deletes made while we were away do not come again, so read the
  // newest shown messages' current state once (best effort; newer states only, see above).
  async function refreshShown() {
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
  function forgetAckedBelowLastSeq() {
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

  // --- outbox --------------------------------------------------------------------------------

  const OUTBOX_LABELS = {
    sending: "sending…",
    retrying: "not stored yet, retrying…",
    failed: "not sent",
    sent: "sent",
  };

  function renderOutboxEntry(entry) {
    const li = element("li", "message message--mine message--pending");
    li.dataset.clientMsgId = entry.id;
    const meta = element("div", "message__meta");
    meta.append(
      element("span", "message__author", config.user.username),
      element("span", "message__state")
    );
    const actions = element("span", "message__actions");
    meta.append(actions);
    li.append(meta, element("p", "message__body", entry.body));
    return li;
  }

  function setEntryStatus(entry, status, reason) {
    entry.status = status;
    entry.el.dataset.status = status;
    const label = OUTBOX_LABELS[status] + (reason ? ` (${reason})` : "");
    entry.el.querySelector(".message__state").textContent = label;
    const actions = entry.el.querySelector(".message__actions");
    actions.replaceChildren();
    if (status === "failed") {
      if (entry.retryByHand) actions.append(actionButton("Retry", () => retryEntry(entry)));
      actions.append(
        actionButton("Edit", () => editEntry(entry)),
        actionButton("Discard", () => discardEntry(entry))
      );
    }
  }

  function actionButton(label, onClick, accessibleName) {
    const button = element("button", "link-button", label);
    button.type = "button";
    if (accessibleName) button.setAttribute("aria-label", accessibleName);
    button.addEventListener("click", onClick);
    return button;
  }

  function addToOutbox(id, body) {
    const entry = { id, body, el: null, status: "", retries: 0, retryTimer: null };
    entry.el = renderOutboxEntry(entry);
    state.outbox.set(entry.id, entry);
    setEntryStatus(entry, "sending");
    els.outbox.append(entry.el);
    return entry;
  }

  function enqueue(body) {
    const entry = addToOutbox(newClientMsgId(), body);
    saveOutbox();
    scrollToBottom();
    sendEntry(entry);
  }

  // The outbox survives a reload of this tab (sessionStorage): unacked sends are resent with
  // their client_msg_id after the next hello, and the server stores each one only once.
  const outboxKey = `chatsite.outbox.${config.slug}.${config.user.id}`;

  function saveOutbox() {
    const unsent = [];
    for (const entry of state.outbox.values()) {
      if (entry.status !== "failed") unsent.push({ id: entry.id, body: entry.body });
    }
    try {
      if (unsent.length) sessionStorage.setItem(outboxKey, JSON.stringify(unsent));
      else sessionStorage.removeItem(outboxKey);
    } catch (err) {
      // storage full or disabled: the outbox still works for this page's lifetime
    }
  }

  function restoreOutbox() {
    let saved = [];
    try {
      saved = JSON.parse(sessionStorage.getItem(outboxKey) || "[]");
    } catch (err) {
      return;
    }
    if (!Array.isArray(saved)) return;
    for (const item of saved) {
      if (item && typeof item.id === "string" && typeof item.body === "string") {
        addToOutbox(item.id, item.body);
      }
    }
  }

  // Sends (or resends, with the same client_msg_id) once the socket said hello; otherwise the
  // entry waits for the next hello.
  function sendEntry(entry) {
    clearTimeout(entry.retryTimer);
    entry.retryTimer = null;
    sendFrame({ type: "message.send", body: entry.body, client_msg_id: entry.id });
  }

  function resendOutbox() {
    for (const entry of state.outbox.values()) {
      if (entry.status === "failed") continue;
      if (entry.status === "retrying") setEntryStatus(entry, "sending");
      sendEntry(entry);
    }
  }

  function retryEntry(entry) {
    entry.retryByHand = false;
    setEntryStatus(entry, "sending");
    saveOutbox();
    sendEntry(entry);
  }

  function editEntry(entry) {
    if (!els.input.value.trim()) {
      els.input.value = entry.body;
      autoGrow();
      updateCharCount();
    }
    discardEntry(entry);
    els.input.focus();
  }

  function discardEntry(entry) {
    clearTimeout(entry.retryTimer);
    state.outbox.delete(entry.id);
    entry.el.remove();
    saveOutbox();
  }

  function onAck(frame) {
    const entry = state.outbox.get(frame.client_msg_id);
    if (!entry) return; // a second ack for a resend: already done
    clearTimeout(entry.retryTimer);
    state.outbox.delete(entry.id);
    saveOutbox();
    const seq = frame.seq;
    if (state.shown.has(seq) || !Number.isInteger(seq)) {
      entry.el.remove();
      return;
    }
    // Stored, but its live message is not here yet: keep the text visible until it is, and
    // fetch it if the broadcast was lost.
    setEntryStatus(entry, "sent");
    state.ackedAwaitingMessage.set(seq, entry.el);
    setTimeout(() => {
      if (!state.shown.has(seq)) requestCatchUp();
    }, ACK_GRACE_MS);
  }

  function onErrorFrame(frame) {
    const text = `${frame.code}: ${frame.detail}`;
    const entry = frame.client_msg_id ? state.outbox.get(frame.client_msg_id) : null;
    const stopReason = STOP_ERROR_CODES[frame.code];
    if (stopReason) {
      // the close follows; the text stays in the outbox, not sent (stop marks every entry)
      stop(stopReason);
      return;
    }
    if (frame.code === "muted") {
      // Not stored; sending again cannot work before `until`: failed, with Edit / Discard.
      if (entry) {
        entry.retryByHand = false;
        setEntryStatus(entry, "failed", "muted");
        saveOutbox();
      }
      showFormError(
        typeof frame.until === "string" ? `You are muted until ${formatLocal(frame.until)}.` : frame.detail
      );
      return;
    }
    if (frame.code === "unavailable" && frame.frame === "resume") {
      // The replay asked with ?after_seq could not be read now (database unavailable): no
      // "resumed" will come, so reconnect with backoff, which asks for the replay again.
      if (state.socket) state.socket.close();
      return;
    }
    if (!entry) {
      showFormError(text);
      return;
    }
    if (frame.code === "rate_limited") {
      // Not stored: we sent too fast. Keep it and resend with the same id after retry_after.
      const seconds = Number(frame.retry_after);
      const wait = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : backoffDelay(entry.retries + 1);
      setEntryStatus(entry, "retrying", "rate limited");
      clearTimeout(entry.retryTimer);
      entry.retryTimer = setTimeout(() => sendEntry(entry), Math.max(MIN_RATE_LIMIT_WAIT_MS, wait));
      showFormError(`Sending too fast; retrying in ${Math.max(1, Math.ceil(wait / 1000))} s.`, true);
      return;
    }
    if (RETRY_LATER_CODES.has(frame.code)) {
      // Not stored: keep it, resend with the same id after a pause (and after any reconnect).
      entry.retries += 1;
      setEntryStatus(entry, "retrying");
      entry.retryTimer = setTimeout(() => sendEntry(entry), backoffDelay(entry.retries));
      showFormError(text);
      return;
    }
    entry.retryByHand = RETRY_BY_HAND_CODES.has(frame.code);
    setEntryStatus(entry, "failed", frame.code);
    saveOutbox();
    showFormError(text);
  }

  // --- who is online, who is typing ----------------------------------------------------------

  function isUser(user) {
    return user !== null && typeof user === "object" && Number.isInteger(user.id) && typeof user.username === "string";
  }

  function displayName(user) {
    return user.username || `user ${user.id}`;
  }

  // {"type":"presence","online":[…]}: the whole list (after every hello): replaces ours.
  function onPresence(frame) {
    if (!Array.isArray(frame.online)) return;
    state.online.clear();
    for (const user of frame.online) {
      if (isUser(user)) state.online.set(user.id, displayName(user));
    }
    state.presenceLive = true;
    renderPresence();
  }

  // {"type":"presence.diff","joins":[…],"leaves":[…]}: applied to the list of this socket's
  // presence frame (before it, or without one, there is nothing up to date to apply it to).
  function onPresenceDiff(frame) {
    if (!state.presenceLive) return;
    for (const user of Array.isArray(frame.joins) ? frame.joins : []) {
      if (isUser(user)) state.online.set(user.id, displayName(user));
    }
    for (const user of Array.isArray(frame.leaves) ? frame.leaves : []) {
      if (!isUser(user)) continue;
      state.online.delete(user.id);
      stopTyping(user.id);
    }
    renderPresence();
  }

  // No live socket (or no presence from it): the list is greyed (`note` says why), or emptied
  // when the page stops for good; typing hints end (their end would not reach us).
  function presenceNotLive(note, clear) {
    state.presenceLive = false;
    if (clear) state.online.clear();
    els.presenceNote.textContent = ` · ${note}`;
    clearTyping();
    renderPresence();
  }

  function renderPresence() {
    const members = Array.from(state.online, ([id, username]) => ({ id, username }));
    members.sort((a, b) => a.username.localeCompare(b.username) || a.id - b.id);
    els.presenceList.replaceChildren(
      ...members.map((member) => {
        const li = element("li", "presence__member");
        li.dataset.userId = String(member.id);
        li.append(element("span", "presence__name", member.username));
        if (member.id === config.user.id) li.append(element("span", "presence__you", "(you)"));
        return li;
      })
    );
    els.presenceCount.textContent = String(members.length);
    els.presence.classList.toggle("presence--stale", !state.presenceLive);
  }

  // {"type":"typing","user":{…}}: someone else is composing; shown for TYPING_SHOW_MS.
  function onTyping(frame) {
    const user = frame.user;
    if (!isUser(user) || user.id === config.user.id) return; // the server never sends our own
    const typist = state.typists.get(user.id);
    if (typist) clearTimeout(typist.timer);
    state.typists.set(user.id, {
      username: displayName(user),
      timer: setTimeout(() => stopTyping(user.id), TYPING_SHOW_MS),
    });
    renderTyping();
  }

  function stopTyping(userId) {
    const typist = state.typists.get(userId);
    if (!typist) return;
    clearTimeout(typist.timer);
    state.typists.delete(userId);
    renderTyping();
  }

  function clearTyping() {
    for (const typist of state.typists.values()) clearTimeout(typist.timer);
    state.typists.clear();
    renderTyping();
  }

  function renderTyping() {
    const names = Array.from(state.typists.values(), (typist) => typist.username);
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names.length} people are typing…`;
    els.typingHint.textContent = text;
  }

  // The composer's text changed: tell the room we are typing, at most once every 2 s, and only
  // for a non-empty text on a connected socket (sendFrame sends nothing before hello).
  function noteTyping() {
    const text = els.input.value;
    if (text === state.typingText) return;
    state.typingText = text;
    if (!text.trim() || state.stopped) return;
    const now = Date.now();
    if (now - state.typingSentAt < TYPING_SEND_INTERVAL_MS) return;
    if (sendFrame({ type: "typing" })) state.typingSentAt = now;
  }

  // --- connection ----------------------------------------------------------------------------

  // Every socket resumes after the last seq shown (shown seqs have no gap below it): the server
  // replays what came since, then says "resumed", so nothing is missed while we were away.
  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return `${scheme}${location.host}${config.ws_path}?after_seq=${state.lastSeq}`;
  }

  function connect() {
    if (state.stopped) return;
    clearReconnectTimers();
    if (state.socket) state.socket.close(); // a stale one; its events are ignored from now on
    setStatus("connecting", "connecting…");
    presenceNotLive("not connected", false);
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

  function sendFrame(frame) {
    const socket = state.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || !state.helloReceived) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (err) {
      return; // not ours to fix; the server only sends JSON
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "hello":
        onHello(frame);
        break;
      case "message":
        // their message is here: they are no longer typing it
        if (frame.message && frame.message.author) stopTyping(frame.message.author.id);
        handleLiveMessage(frame.message);
        break;
      case "ack":
        onAck(frame);
        break;
      case "error":
        onErrorFrame(frame);
        break;
      case "message.updated":
        onMessageUpdated(frame.message);
        break;
      case "message.deleted":
        onMessageDeleted(frame);
        break;
      case "room.archived":
        if (frame.room === config.slug) stop("archived"); // the close 4410 follows
        break;
      case "resumed":
        onResumed();
        break;
      case "resync":
        onResync();
        break;
      case "history":
        break; // answers a fetch frame, which this page does not send (gaps go through REST)
      case "presence":
        onPresence(frame);
        break;
      case "presence.diff":
        onPresenceDiff(frame);
        break;
      case "typing":
        onTyping(frame);
        break;
      default:
        break; // unknown frame types are ignored, so the server can add some
    }
  }

  function onHello(frame) {
    state.helloReceived = true;
    state.attempt = 0;
    els.status.dataset.serverId = frame.server_id || ""; // for operators' tools; shown to staff only
    setStatus("connected", config.show_node_names ? `connected to ${frame.server_id}` : "connected");
    if (!state.presenceLive) els.presenceNote.textContent = " · not known yet"; // until presence
    // Missed messages come as the replay that follows (then "resumed"); held-back live ones
    // still need the history API.
    if (state.buffered.size > 0) requestCatchUp();
    if (state.everConnected) refreshShown();
    state.everConnected = true;
    resendOutbox();
  }

  // The replay asked with ?after_seq is complete: anything still missing goes through REST.
  function onResumed() {
    state.resuming = false;
    flushBuffered(false);
    if (state.buffered.size > 0) requestCatchUp();
  }

  // Over 1,000 messages were missed: the server replayed none; read them from the history API.
  function onResync() {
    state.resuming = false;
    requestCatchUp();
  }

  function onClose(event) {
    state.socket = null;
    state.helloReceived = false;
    state.resuming = false;
    presenceNotLive("not connected", false);
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
      // Node restarting: the same URL reaches another node through the balancer. Once only:
      // if that fails too, the next close waits with backoff as usual.
      state.attempt += 1;
      connect();
    } else scheduleReconnect(RETRY_CLOSE_LABELS[event.code]);
  }

  // Ends the connection for good (until a reload, or "Rejoin" after leaving). Sends that can
  // never succeed here (banned, archived, no such room) stay in the outbox as not sent.
  function stop(reason) {
    state.stopped = true;
    state.stopReason = reason;
    clearReconnectTimers();
    presenceNotLive("not connected", true);
    clearTimeout(state.catchUp.retryTimer);
    els.fieldset.disabled = true;
    const rooms = element("a", "", "All rooms");
    rooms.href = urls.rooms;
    if (reason === "signed-out") {
      const login = element("a", "", "Log in");
      login.href = `${urls.login}?next=${encodeURIComponent(location.pathname)}`;
      setStatus("stopped", "You are not signed in. ", login, " to keep chatting.");
    } else if (reason === "left") {
      setStatus("stopped", "You left this room (perhaps in another tab). ", actionButton("Rejoin", rejoin));
    } else if (reason === "banned") {
      state.banned = true;
      setStatus("stopped", "You are banned from this room. ", rooms);
    } else if (reason === "archived") {
      state.archived = true;
      els.banner.hidden = false;
      els.input.placeholder = "This room is archived: no new messages";
      setStatus("stopped", "archived");
    } else {
      setStatus("stopped", "This room does not exist (any more). ", rooms);
    }
    if (reason === "banned" || reason === "archived" || reason === "not-found") {
      const label = { banned: "banned", archived: "room archived", "not-found": "no such room" }[reason];
      for (const entry of state.outbox.values()) {
        if (entry.status === "failed") continue;
        clearTimeout(entry.retryTimer);
        entry.retryByHand = false;
        setEntryStatus(entry, "failed", label);
      }
      saveOutbox();
    }
    renderAllMessageActions();
  }

  // After leaving (close 4000): connect again, which joins a public room again.
  function rejoin() {
    if (state.stopReason !== "left") return;
    state.stopped = false;
    state.stopReason = null;
    state.attempt = 0;
    els.fieldset.disabled = false;
    connect();
  }

  // 1 s, 2 s, 4 s … capped at 30 s, each with ±20 % jitter so clients do not return in step.
  function backoffDelay(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
    const jittered = base * (0.8 + Math.random() * 0.4);
    return Math.min(BACKOFF_MAX_MS, Math.round(jittered));
  }

  function scheduleReconnect(why) {
    if (state.stopped) return;
    clearReconnectTimers();
    state.attempt += 1;
    const delay = backoffDelay(state.attempt);
    const reconnectAt = Date.now() + delay;
    state.reconnectTimer = setTimeout(connect, delay);

    const countdown = element("span");
    const showCountdown = () => {
      const seconds = Math.max(1, Math.ceil((reconnectAt - Date.now()) / 1000));
      countdown.textContent = `${why ? why + ": " : ""}reconnecting in ${seconds} s…`;
    };
    showCountdown();
    setStatus("waiting", countdown, " ", actionButton("Reconnect now", connect));
    state.countdownTimer = setInterval(showCountdown, 1000);
  }

  function clearReconnectTimers() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    state.reconnectTimer = null;
    state.countdownTimer = null;
  }

  function reconnectIfWaiting() {
    if (state.reconnectTimer !== null) connect();
  }

  // --- status line and notices ---------------------------------------------------------------

  function setStatus(kind, ...parts) {
    els.status.className = `status status--${kind}`;
    const text = els.status.querySelector(".status__text");
    text.replaceChildren(...parts);
  }

  const notices = new Map(); // source → text, shown in the form's error line when no error is

  function showNotice(source, text) {
    notices.set(source, text);
    if (els.formError.hidden) showFormError(text, true);
  }

  function clearNotice(source) {
    const text = notices.get(source);
    notices.delete(source);
    if (text !== undefined && els.formError.textContent === text) clearFormError();
  }

  // --- the send form -------------------------------------------------------------------------

  function showFormError(text, isNotice) {
    els.formError.textContent = text;
    els.formError.classList.toggle("composer__error--notice", Boolean(isNotice));
    els.formError.hidden = false;
  }

  function clearFormError() {
    els.formError.textContent = "";
    els.formError.hidden = true;
  }

  function updateCharCount() {
    const count = characterCount(els.input.value);
    els.charCount.textContent = count >= CHAR_COUNT_FROM ? `${count} / ${BODY_MAX_LENGTH}` : "";
    els.charCount.classList.toggle("composer__count--over", count > BODY_MAX_LENGTH);
  }

  function autoGrow() {
    els.input.style.height = "auto";
    els.input.style.height = `${els.input.scrollHeight + 2}px`;
  }

  function onSubmit(event) {
    event.preventDefault();
    const body = els.input.value;
    if (!body.trim()) {
      showFormError("Write a message first.");
      return;
    }
    const count = characterCount(body);
    if (count > BODY_MAX_LENGTH) {
      showFormError(`The message is ${count} characters long; the limit is ${BODY_MAX_LENGTH}.`);
      return;
    }
    clearFormError();
    enqueue(body);
    els.input.value = "";
    autoGrow();
    updateCharCount();
    els.input.focus();
  }

  function onKeydown(event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    els.form.requestSubmit();
  }

  function onInput() {
    autoGrow();
    updateCharCount();
    noteTyping();
    if (!els.formError.hidden && !els.formError.classList.contains("composer__error--notice")) {
      clearFormError();
    }
  }

  // --- start ---------------------------------------------------------------------------------

  function init() {
    if (window.matchMedia && window.matchMedia(NARROW_SCREEN).matches) els.presenceDetails.open = false;
    renderPresence();
    adoptRenderedHistory();
    restoreOutbox();
    scrollToBottom();
    renderHistoryTop();
    els.loadOlder.addEventListener("click", () => loadOlder().catch(() => {}));
    els.jumpButton.addEventListener("click", jumpToLatest);
    els.log.addEventListener("scroll", onLogScroll, { passive: true });
    setInterval(decorate, 60 * 1000); // "Today" becomes "Yesterday" at midnight
    landAtFirstUnread().catch(() => {});
    if (!state.landing) setTimeout(loadOlderIfNearTop, 0); // a short first page fills the view
    els.form.addEventListener("submit", onSubmit);
    els.input.addEventListener("keydown", onKeydown);
    els.input.addEventListener("input", onInput);
    window.addEventListener("online", reconnectIfWaiting);
    if (state.archived) {
      stop("archived"); // history only: no socket (it would be closed with 4410 at once)
      return;
    }
    els.fieldset.disabled = false;
    connect();
  }

  init();
})();
