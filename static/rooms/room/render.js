/*
 * chatsite room page: the message list (render.js): one <li> per stored message, in seq order and
 * at most once (showMessage is the only way in); edits and deletes applied in place, never going
 * back to an older state; scroll-back (older pages by before_seq), date dividers, author groups,
 * "Jump to latest" and the landing at the first unread message.
 */

import { nameOf } from "./avatar.js";
import { config, els, NEAR_BOTTOM_PX, state } from "./context.js";
import { element, formatTime, fullDate, isMine, setSafeHtml, versionOfElement } from "./dom.js";
import { renderMessageParts } from "./hooks.js";
import { fetchHistoryPage } from "./http.js";
import { isNewer, versionOf } from "./seq.js";
import { clearNotice, showNotice } from "./status.js";
import * as Timeline from "./timeline.js";
import { gettext, interpolate, ngettext, pageLanguage } from "./i18n.js";

// --- scrolling -----------------------------------------------------------------------------

export function isNearBottom() {
  const log = els.log;
  return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_BOTTOM_PX;
}

export function scrollToBottom() {
  els.log.scrollTop = els.log.scrollHeight;
}

// Runs `change` (which adds to the log) and keeps the view pinned to the bottom if it was
// (never while the page is landing at the first unread message). Returns whether it was.
export function keepingBottom(change) {
  const wasNearBottom = !state.landing && isNearBottom();
  change();
  if (wasNearBottom) scrollToBottom();
  return wasNearBottom;
}

// --- the message list ----------------------------------------------------------------------

// A message's body source (Markdown, what an edit starts from), by its <li>; what is shown is
// the server's sanitised body_html (dom.js's setSafeHtml checks it against an allow-list again).
const bodySources = new WeakMap();

export function bodySource(li) {
  const known = bodySources.get(li);
  return known !== undefined ? known : li.querySelector(".message__body").textContent;
}

// Fills a message's body element: body_html as HTML (sanitised by the server, allow-listed
// again here), or the source as text when a message has no body_html.
export function fillBody(bodyEl, li, message) {
  bodySources.set(li, message.body);
  bodyEl.classList.add("message__body--html");
  if (typeof message.body_html === "string" && message.body_html) setSafeHtml(bodyEl, message.body_html);
  else bodyEl.textContent = message.body;
}

export function buildMessageElement(message) {
  const li = element("li", "message" + (isMine(message) ? " message--mine" : ""));
  li.dataset.seq = String(message.seq);
  li.id = "message-" + message.seq;
  if (Number.isInteger(message.id)) li.dataset.id = String(message.id);
  if (message.author && Number.isInteger(message.author.id)) li.dataset.authorId = String(message.author.id);

  const meta = element("div", "message__meta");
  const author = element("span", "message__author", nameOf(message.author)); // display name, else username
  if (message.author && message.author.username) author.title = `@${message.author.username}`;
  const time = element("time", "message__time");
  formatTime(time, message.created_at);
  meta.append(
    author,
    time,
  );
  // Node names are for operators: staff (or SHOW_NODE_NAMES=1) see them, other users do not.
  if (config.show_node_names) meta.append(element("span", "message__via", interpolate(gettext("via %(node)s"), { node: message.server_id })));
  const body = element("div", "message__body");
  fillBody(body, li, message);
  li.append(meta, body);
  if (message.deleted) markDeleted(li);
  else if (message.edited_at) markEdited(li, message.edited_at);
  // hooks.js: the parts modules add (actions.js: Edit / Delete; features: reactions, …)
  renderMessageParts(li, message);
  return li;
}

// "(edited)" after the time, with the edit's local time as its tooltip.
export function markEdited(li, editedAt) {
  li.dataset.editedAt = editedAt;
  let mark = li.querySelector(".message__edited");
  if (!mark) {
    mark = element("span", "message__edited", gettext("(edited)"));
    li.querySelector(".message__time").after(mark);
  }
  const date = new Date(editedAt);
  mark.title = interpolate(gettext("edited %(time)s"), { time: Number.isNaN(date.getTime()) ? editedAt : fullDate.format(date) });
}

// The message keeps its place; its body is replaced by a muted "message deleted".
export function markDeleted(li) {
  li.dataset.deleted = "true";
  delete li.dataset.editedAt;
  li.classList.add("message--deleted");
  const mark = li.querySelector(".message__edited");
  if (mark) mark.remove();
  const body = li.querySelector(".message__body");
  body.classList.add("message__body--deleted");
  body.textContent = gettext("message deleted");
  body.hidden = false;
}

// Shows `message` (a newer state of the shown <li>): an edit or a delete. Returns whether it
// changed anything; an older or equal state (a repeat, or one overtaken) changes nothing.
export function applyMessageState(li, message) {
  if (versionOf(message) <= versionOfElement(li)) return false;
  keepingBottom(() => {
    if (message.deleted) {
      markDeleted(li);
    } else {
      fillBody(li.querySelector(".message__body"), li, message);
      markEdited(li, message.edited_at);
    }
    renderMessageParts(li, message); // `message` may be only {deleted: true}
  });
  return true;
}

// Right after the shown message before it (so before that one's dividers), or first.
export function insertInSeqOrder(li, seq) {
  const index = Timeline.insertionIndex(state.seqs, seq);
  if (index === -1) return; // cannot happen: showMessage checked `shown`
  const before = index > 0 ? state.shown.get(state.seqs[index - 1]) : null;
  if (before) before.after(li);
  else els.list.prepend(li);
  state.seqs.splice(index, 0, seq);
}

export function removeEmptyState() {
  const empty = document.getElementById("messages-empty");
  if (empty) empty.remove();
}

// Shows a stored message unless its seq is already shown. The only way into the list.
export function showMessage(message) {
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

export function isValidMessage(message) {
  return (
    message !== null &&
    typeof message === "object" &&
    Number.isInteger(message.seq) &&
    message.room === config.slug &&
    typeof message.body === "string"
  );
}

export function deletedVersion(message) {
  return Object.assign({}, message, { body: "", deleted: true });
}

// The page was rendered with the latest history: adopt those elements instead of redrawing.
export function adoptRenderedHistory() {
  const adopted = new Map(); // seq → <li> drawn by the server
  for (const li of els.list.querySelectorAll("li[data-seq]")) {
    const seq = Number(li.dataset.seq);
    if (state.shown.has(seq)) continue;
    state.shown.set(seq, li);
    state.seqs.splice(Timeline.insertionIndex(state.seqs, seq), 0, seq); // rendered in order
    if (seq > state.lastSeq) state.lastSeq = seq;
    const time = li.querySelector("time");
    if (time) formatTime(time, time.getAttribute("datetime"));
    if (li.dataset.editedAt && !li.dataset.deleted) markEdited(li, li.dataset.editedAt);
    adopted.set(seq, li);
  }
  batched(() => {
    for (const message of config.history || []) {
      if (!isValidMessage(message)) continue;
      const rendered = adopted.get(message.seq);
      if (rendered) {
        if (!message.deleted) bodySources.set(rendered, message.body); // the source, for editing
        renderMessageParts(rendered, message); // drawn by the server: add the parts
        adopted.delete(message.seq);
      } else {
        showMessage(message);
      }
    }
  });
  for (const [seq, li] of adopted) renderMessageParts(li, { seq, deleted: Boolean(li.dataset.deleted) });
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

export const OLDER_PAGE_SIZE = 50;
export const LOAD_OLDER_WITHIN_PX = 400; // scrolled this close to the top: load the next older page
export const OLDER_RETRY_MS = 5000; // after a failed load, scrolling does not retry sooner
export const LANDING_MAX_PAGES = 10; // first unread further back than this: land at the oldest loaded
export const LANDING_CONTEXT = 5; // read messages shown above the "New messages" divider
export const SEQ_LANDING_PAGE_SIZE = 200; // landing at a search result: pages of the API's largest size
export const SEQ_LANDING_MAX_PAGES = 25; // … up to 5,000 messages back; further: the oldest loaded
export const dayFormat = new Intl.DateTimeFormat(pageLanguage, {
  weekday: "long", year: "numeric", month: "long", day: "numeric",
});
export const dividers = new Map(); // "day:<key>" | "new" → <li class="divider">

// Runs `change` (several showMessage calls) with one redraw of dividers and groups at the end,
// keeping the view pinned to the bottom if it was.
export function batched(change) {
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

export function listChanged() {
  if (state.batch === 0) decorate();
}

export const timelineItems = new WeakMap(); // <li> → its {seq, authorId, time} (they never change)

export function timelineItem(seq) {
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

export function dividerElement(key, label, modifier) {
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
export function decorate() {
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
      const el = dividerElement("new", gettext("New messages"), "new");
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
export function captureAnchor() {
  const top = els.log.getBoundingClientRect().top;
  for (const seq of state.seqs) {
    const li = state.shown.get(seq);
    const rect = li.getBoundingClientRect();
    if (rect.bottom > top) return { li, offset: rect.top - top };
  }
  return null;
}

export function restoreAnchor(anchor) {
  if (!anchor || !anchor.li.isConnected) return;
  const offset = anchor.li.getBoundingClientRect().top - els.log.getBoundingClientRect().top;
  els.log.scrollTop += offset - anchor.offset;
}

// The control above the list: "Load older messages" (for keyboards and screen readers; the
// same load runs by itself when scrolling near the top), "Loading…", or the room's start.
export function renderHistoryTop() {
  const older = state.older;
  els.loadOlder.hidden = !older.hasMore;
  els.loadOlder.disabled = older.loading;
  els.loadOlder.textContent = older.loading ? gettext("Loading older messages…") : gettext("Load older messages");
  els.historyStart.hidden = older.hasMore || state.seqs.length === 0;
}

// One page of messages before the oldest shown. Resolves with whether it added any.
export async function loadOlder({ keepPlace = true, limit = OLDER_PAGE_SIZE } = {}) {
  const older = state.older;
  if (older.loading || !older.hasMore || state.seqs.length === 0) return false;
  older.loading = true;
  renderHistoryTop();
  let added = 0;
  try {
    const page = await fetchHistoryPage(undefined, state.seqs[0], limit);
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
    els.historyStatus.textContent = added
      ? interpolate(ngettext("%(count)s older message loaded", "%(count)s older messages loaded", added), { count: added })
      : "";
    clearNotice("older");
  } catch (err) {
    older.failedAt = Date.now();
    showNotice("older", gettext("Could not load older messages; scroll up or press the button to try again."));
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
export function noteOlderUpdate(message) {
  const older = state.older;
  if (!older.loading) return; // not loaded yet: the page that loads it will have this state
  const held = older.updates.get(message.seq);
  if (isNewer(message, held)) older.updates.set(message.seq, message);
}

export function loadOlderIfNearTop() {
  const older = state.older;
  if (state.landing || older.loading || !older.hasMore) return;
  if (Date.now() - older.failedAt < OLDER_RETRY_MS) return;
  if (els.log.scrollTop < LOAD_OLDER_WITHIN_PX) loadOlder().catch(() => {});
}

// "Jump to latest (N new)": shown while the reader is away from the bottom.
export function countUnseenBelow() {
  state.unseenBelow += 1;
  renderJump();
}

export function renderJump() {
  const away = !isNearBottom();
  if (!away) state.unseenBelow = 0;
  els.jump.hidden = !away;
  const count = state.unseenBelow;
  els.jumpCount.textContent = count ? ` ${interpolate(ngettext("(%(count)s new)", "(%(count)s new)", count), { count })}` : "";
}

export function jumpToLatest() {
  state.landing = false;
  scrollToBottom();
  state.unseenBelow = 0;
  renderJump();
  els.log.focus({ preventScroll: true });
}

export function onLogScroll() {
  renderJump();
  loadOlderIfNearTop();
}

// Opening the room: with the config's last_read_seq below the newest message, load back to
// it (at most LANDING_MAX_PAGES pages), then show the "New messages" divider near the top of
// the view. Without it (or nothing unread) the page stays at the bottom, as before.
export async function landAtFirstUnread() {
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

// Opening the room at a message (?seq=N, a search result's link; the config's land_seq): load
// back to it and a few before it (pages of SEQ_LANDING_PAGE_SIZE, at most SEQ_LANDING_MAX_PAGES),
// then scroll it to the middle of the view and mark it (class message--landed). The list stays
// contiguous down to the newest message, as everywhere else. A message further back than the
// pages allow, or deleted since: the view stays at the oldest loaded, with a notice.
export async function landAtSeq(seq) {
  if (!Number.isInteger(seq) || seq < 1 || state.seqs.length === 0) return;
  state.landing = true;
  try {
    for (let pages = 0; pages < SEQ_LANDING_MAX_PAGES; pages++) {
      if (state.seqs[0] <= Math.max(1, seq - LANDING_CONTEXT) || !state.older.hasMore) break;
      if (!(await loadOlder({ keepPlace: false, limit: SEQ_LANDING_PAGE_SIZE }))) break;
    }
  } catch (err) {
    // land where we can; scrolling up loads the rest
  }
  const li = state.shown.get(seq);
  if (state.landing && li) {
    li.classList.add("message--landed");
    const logRect = els.log.getBoundingClientRect();
    const rect = li.getBoundingClientRect();
    els.log.scrollTop += rect.top - logRect.top - Math.max(8, (logRect.height - rect.height) / 2);
  } else if (state.landing) {
    els.log.scrollTop = 0;
    showNotice("landing", gettext("That message is further back than the page loaded; scroll up to load older messages."));
  }
  state.landing = false;
  renderJump();
}
