/*
 * chatsite room page: live messages over a WebSocket, an outbox that survives reconnects, and
 * gap repair through the history API. No dependencies.
 *
 * Frame contract (rooms/consumers.py):
 *   server → client  {"type":"hello","server_id","room","last_seq"}            first frame
 *   client → server  {"type":"message.send","body","client_msg_id"}
 *   server → sender  {"type":"ack","client_msg_id","id","seq"}                 once stored
 *   server → all     {"type":"message","message":{id,room,seq,author,body,created_at,server_id}}
 *   server → client  {"type":"error","code","detail"[,"client_msg_id"][,"field"]}
 *   close 4401: not signed in · 4404: no such room (neither is retried)
 *
 * Guarantees kept here: messages are shown ordered by seq and at most once; every send stays in
 * the outbox until acked and is resent with the same client_msg_id after a reconnect; any gap in
 * seq (missed while offline, or dropped by the at-most-once channel layer) is filled from
 * GET <history>?after_seq=N before later live messages are shown.
 */
(function () {
  "use strict";

  const BODY_MAX_LENGTH = 4000; // characters (code points), as the server counts
  const CHAR_COUNT_FROM = 3500; // show the counter from this length on
  const HISTORY_PAGE_SIZE = 200;
  const HISTORY_TIMEOUT_MS = 15000;
  const CATCH_UP_RETRY_MS = 5000;
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const ACK_GRACE_MS = 1500; // after an ack, how long the live message may take before we fetch it
  const NEAR_BOTTOM_PX = 80;
  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_NOT_FOUND = 4404;
  // Error codes after which a resend of the same body cannot succeed.
  const RETRY_LATER_CODES = new Set(["unavailable"]);
  const RETRY_BY_HAND_CODES = new Set(["internal_error"]);

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
  };

  const state = {
    socket: null,
    helloReceived: false,
    stopped: false, // after close 4401 / 4404: never reconnect
    attempt: 0, // reconnect attempts since the last hello
    reconnectTimer: null,
    countdownTimer: null,
    lastSeq: 0, // highest seq shown
    shown: new Map(), // seq → <li> in the message list
    buffered: new Map(), // seq → message, live messages held back until a gap is filled
    catchUp: { running: false, again: false, retryTimer: null },
    outbox: new Map(), // client_msg_id → {id, body, el, status, retries, retryTimer}
    ackedAwaitingMessage: new Map(), // seq → outbox <li> whose ack came before the message
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

  function formatTime(timeEl, iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return;
    const today = new Date().toDateString() === date.toDateString();
    timeEl.dateTime = iso;
    timeEl.textContent = (today ? timeOnly : dateAndTime).format(date);
    timeEl.title = fullDate.format(date);
  }

  // --- scrolling -----------------------------------------------------------------------------

  function isNearBottom() {
    const log = els.log;
    return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_BOTTOM_PX;
  }

  function scrollToBottom() {
    els.log.scrollTop = els.log.scrollHeight;
  }

  // Runs `change` (which adds to the log) and keeps the view pinned to the bottom if it was.
  function keepingBottom(change) {
    const wasNearBottom = isNearBottom();
    change();
    if (wasNearBottom) scrollToBottom();
  }

  // --- the message list ----------------------------------------------------------------------

  function buildMessageElement(message) {
    const li = element("li", "message" + (isMine(message) ? " message--mine" : ""));
    li.dataset.seq = String(message.seq);
    li.id = "message-" + message.seq;

    const meta = element("div", "message__meta");
    const author = (message.author && message.author.username) || "unknown";
    const time = element("time", "message__time");
    formatTime(time, message.created_at);
    meta.append(
      element("span", "message__author", author),
      time,
      element("span", "message__via", "via " + message.server_id)
    );
    li.append(meta, element("p", "message__body", message.body));
    return li;
  }

  function insertInSeqOrder(li, seq) {
    let before = els.list.lastElementChild;
    while (before && Number(before.dataset.seq) > seq) before = before.previousElementSibling;
    if (before) before.after(li);
    else els.list.prepend(li);
  }

  function removeEmptyState() {
    const empty = document.getElementById("messages-empty");
    if (empty) empty.remove();
  }

  // Shows a stored message unless its seq is already shown. The only way into the list.
  function showMessage(message) {
    const seq = message.seq;
    if (state.shown.has(seq)) return;
    const li = buildMessageElement(message);
    keepingBottom(() => {
      removeEmptyState();
      insertInSeqOrder(li, seq);
    });
    state.shown.set(seq, li);
    state.buffered.delete(seq);
    if (seq > state.lastSeq) state.lastSeq = seq;

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

  // The page was rendered with the latest history: adopt those elements instead of redrawing.
  function adoptRenderedHistory() {
    for (const li of els.list.querySelectorAll("li[data-seq]")) {
      const seq = Number(li.dataset.seq);
      state.shown.set(seq, li);
      if (seq > state.lastSeq) state.lastSeq = seq;
      const time = li.querySelector("time");
      if (time) formatTime(time, time.getAttribute("datetime"));
    }
    for (const message of config.history || []) {
      if (isValidMessage(message)) showMessage(message);
    }
    scrollToBottom();
  }

  // --- live messages and gap repair ----------------------------------------------------------

  function handleLiveMessage(message) {
    if (!isValidMessage(message) || state.shown.has(message.seq)) return;
    if (state.catchUp.running || message.seq > state.lastSeq + 1) {
      state.buffered.set(message.seq, message);
      requestCatchUp();
      return;
    }
    showMessage(message);
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

  async function fetchHistoryPage(afterSeq) {
    const url = `${urls.history}?after_seq=${afterSeq}&limit=${HISTORY_PAGE_SIZE}`;
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
      for (const message of page.results) {
        if (isValidMessage(message) && !state.shown.has(message.seq)) {
          showMessage(message);
          added += 1;
        }
      }
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

  // Acked outbox entries whose seq is covered by history but was never shown (cannot happen
  // unless the message was removed) must not stay on screen forever.
  function forgetAckedBelowLastSeq() {
    for (const [seq, li] of state.ackedAwaitingMessage) {
      if (seq <= state.lastSeq) {
        li.remove();
        state.ackedAwaitingMessage.delete(seq);
      }
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

  function actionButton(label, onClick) {
    const button = element("button", "link-button", label);
    button.type = "button";
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
    if (!entry) {
      showFormError(text);
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

  // --- connection ----------------------------------------------------------------------------

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + location.host + config.ws_path;
  }

  function connect() {
    if (state.stopped) return;
    clearReconnectTimers();
    if (state.socket) state.socket.close(); // a stale one; its events are ignored from now on
    setStatus("connecting", "connecting…");
    const socket = new WebSocket(socketUrl());
    state.socket = socket;
    state.helloReceived = false;
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
        handleLiveMessage(frame.message);
        break;
      case "ack":
        onAck(frame);
        break;
      case "error":
        onErrorFrame(frame);
        break;
      default:
        break; // unknown frame types are ignored, so the server can add some
    }
  }

  function onHello(frame) {
    state.helloReceived = true;
    state.attempt = 0;
    setStatus("connected", `connected to ${frame.server_id}`);
    if (frame.last_seq > state.lastSeq || state.buffered.size > 0) requestCatchUp();
    resendOutbox();
  }

  function onClose(event) {
    state.socket = null;
    state.helloReceived = false;
    if (event.code === CLOSE_UNAUTHENTICATED) {
      stop("signed-out");
    } else if (event.code === CLOSE_NOT_FOUND) {
      stop("not-found");
    } else {
      scheduleReconnect();
    }
  }

  function stop(reason) {
    state.stopped = true;
    clearReconnectTimers();
    clearTimeout(state.catchUp.retryTimer);
    els.fieldset.disabled = true;
    if (reason === "signed-out") {
      const login = element("a", "", "Log in");
      login.href = `${urls.login}?next=${encodeURIComponent(location.pathname)}`;
      setStatus("stopped", "You are not signed in. ", login, " to keep chatting.");
    } else {
      const rooms = element("a", "", "All rooms");
      rooms.href = urls.rooms;
      setStatus("stopped", "This room does not exist (any more). ", rooms);
    }
  }

  // 1 s, 2 s, 4 s … capped at 30 s, each with ±20 % jitter so clients do not return in step.
  function backoffDelay(attempt) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
    const jittered = base * (0.8 + Math.random() * 0.4);
    return Math.min(BACKOFF_MAX_MS, Math.round(jittered));
  }

  function scheduleReconnect() {
    if (state.stopped) return;
    clearReconnectTimers();
    state.attempt += 1;
    const delay = backoffDelay(state.attempt);
    const reconnectAt = Date.now() + delay;
    state.reconnectTimer = setTimeout(connect, delay);

    const countdown = element("span");
    const showCountdown = () => {
      const seconds = Math.max(1, Math.ceil((reconnectAt - Date.now()) / 1000));
      countdown.textContent = `reconnecting in ${seconds} s…`;
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
    if (!els.formError.hidden && !els.formError.classList.contains("composer__error--notice")) {
      clearFormError();
    }
  }

  // --- start ---------------------------------------------------------------------------------

  function init() {
    adoptRenderedHistory();
    restoreOutbox();
    scrollToBottom();
    els.form.addEventListener("submit", onSubmit);
    els.input.addEventListener("keydown", onKeydown);
    els.input.addEventListener("input", onInput);
    window.addEventListener("online", reconnectIfWaiting);
    els.fieldset.disabled = false;
    connect();
  }

  init();
})();
