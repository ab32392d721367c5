/*
 * chatsite room page: replies and threads (rooms/replies.py).
 *
 * - A reply shows its parent as a quote above its body ("↪ alice: the start of it", or
 *   "message deleted"): parent.excerpt, the parent's text without Markdown made by the server,
 *   put in as text; clicking the quote jumps to the parent, loading older history down to
 *   it (before_seq pages, as scroll-back does) when it is not shown yet, then highlights it.
 * - "Reply" on a message puts its quote above the composer (× cancels, Escape too); the next
 *   send carries "reply_to": its seq (outbox.js keeps it across resends and reloads).
 * - A message with replies shows "N replies" (reply_count; thread.updated frames keep it
 *   live); clicking it opens the thread panel: the message and its replies from
 *   GET <history>/<id>/replies/, refreshed while open when its count changes.
 * User text goes in as text; bodies as the server's sanitised body_html (dom.js setSafeHtml).
 */

import { config, els, state, urls } from "./context.js";
import { actionButton, element, formatLocal, setSafeHtml } from "./dom.js";
import { on, registerMessagePart } from "./hooks.js";
import { apiRequest } from "./http.js";
import { loadOlder } from "./render.js";
import { showNotice } from "./status.js";
import { gettext, interpolate, ngettext } from "./i18n.js";

export const JUMP_MAX_PAGES = 40; // older pages (50 each) loaded at most to reach a quoted parent
const HIGHLIGHT_MS = 2000;

// --- the quote of a reply's parent -----------------------------------------------------------

function nameOf(user) {
  return (user && (user.display_name || user.username)) || gettext("unknown");
}

// The start of a shown body's text as the server makes a reply's parent.excerpt
// (rooms.formatting.plain_text): no markup (textContent), white space and line breaks one space.
export const EXCERPT_LENGTH = 120;

export function plainExcerpt(text) {
  return Array.from(text.replace(/\s+/g, " ").trim()).slice(0, EXCERPT_LENGTH).join("");
}

function quoteText(parent) {
  const author = nameOf(parent.author);
  return parent.deleted ? interpolate(gettext("%(author)s: message deleted"), { author }) : `${author}: ${parent.excerpt}`;
}

function renderQuote(li, message) {
  let quote = li.querySelector(".reply-quote");
  if (message.deleted) {
    if (quote) quote.remove();
    return;
  }
  if (!Number.isInteger(message.reply_to) || !message.parent) return; // a partial state keeps it
  if (!quote) {
    quote = element("button", "reply-quote");
    quote.type = "button";
    quote.addEventListener("click", () => jumpTo(Number(quote.dataset.seq)));
    li.querySelector(".message__body").before(quote);
  }
  quote.dataset.seq = String(message.reply_to);
  li.dataset.replyTo = String(message.reply_to);
  quote.classList.toggle("reply-quote--deleted", Boolean(message.parent.deleted));
  quote.title = interpolate(gettext("Go to the message this answers (#%(seq)s)"), { seq: message.reply_to });
  quote.replaceChildren(element("span", "reply-quote__mark", "↪ "), element("span", "reply-quote__text", quoteText(message.parent)));
}

// The parent was deleted: every quote of it says so (message.deleted frames).
function markQuotesDeleted(seq) {
  for (const quote of document.querySelectorAll(`.reply-quote[data-seq="${seq}"]`)) {
    quote.classList.add("reply-quote--deleted");
    const text = quote.querySelector(".reply-quote__text");
    const author = text.textContent.split(":")[0];
    text.textContent = interpolate(gettext("%(author)s: message deleted"), { author });
  }
}

// Shows the message `seq`, loading older pages down to it (the list stays contiguous), then
// scrolls it into view and highlights it for a moment.
export async function jumpTo(seq) {
  let li = state.shown.get(seq);
  if (!li) {
    state.landing = true; // no bottom pinning, no scroll-triggered loads meanwhile
    try {
      for (let pages = 0; !li && pages < JUMP_MAX_PAGES; pages++) {
        if (!state.older.hasMore || !state.seqs.length || state.seqs[0] <= seq) break;
        if (!(await loadOlder({ keepPlace: false }))) break;
        li = state.shown.get(seq);
      }
    } catch (err) {
      li = null;
    } finally {
      state.landing = false;
    }
  }
  if (!li) {
    showNotice("reply", interpolate(gettext("Message #%(seq)s could not be loaded here."), { seq }));
    return;
  }
  li.scrollIntoView({ block: "center" });
  li.classList.add("message--highlight");
  setTimeout(() => li.classList.remove("message--highlight"), HIGHLIGHT_MS);
}

// --- replying ------------------------------------------------------------------------------

let bar = null;

function replyBar() {
  if (!bar) {
    bar = element("div", "reply-bar");
    bar.hidden = true;
    els.fieldset.before(bar);
  }
  return bar;
}

export function setReplyTarget(li) {
  if (li.dataset.deleted) return;
  const author = li.querySelector(".message__author");
  const body = li.querySelector(".message__body");
  state.replyTo = {
    seq: Number(li.dataset.seq),
    author: author ? author.textContent : "",
    excerpt: plainExcerpt(body ? body.textContent : ""),
  };
  const target = replyBar();
  const cancel = actionButton("×", clearReplyTarget, gettext("Cancel the reply"));
  cancel.classList.add("reply-bar__cancel");
  target.replaceChildren(
    element("span", "reply-bar__label", gettext("Replying to") + " "),
    element("span", "reply-bar__quote", `${state.replyTo.author}: ${state.replyTo.excerpt}`),
    cancel,
  );
  target.hidden = false;
  els.input.focus();
}

export function clearReplyTarget() {
  state.replyTo = null;
  if (bar) {
    bar.hidden = true;
    bar.replaceChildren();
  }
}

function renderReplyButton(li) {
  const meta = li.querySelector(".message__meta");
  if (!meta) return;
  let button = meta.querySelector(".reply-button");
  const wanted = !li.dataset.deleted && !state.archived && !state.banned && Boolean(li.dataset.id);
  if (!wanted) {
    if (button) button.remove();
    return;
  }
  if (!button) {
    button = actionButton(gettext("Reply"), () => setReplyTarget(li), gettext("Reply to this message"));
    button.classList.add("reply-button");
    meta.append(button);
  }
}

// --- reply counts and the thread panel ---------------------------------------------------------

function renderReplyCount(li, count) {
  let link = li.querySelector(".reply-count");
  if (!Number.isInteger(count)) return;
  li.dataset.replyCount = String(count);
  if (count <= 0 || li.dataset.deleted) {
    if (link) link.remove();
    return;
  }
  if (!link) {
    link = element("button", "reply-count");
    link.type = "button";
    link.addEventListener("click", () => openThread(li));
    li.append(link);
  }
  link.textContent = interpolate(ngettext("%(count)s reply", "%(count)s replies", count), { count });
}

let panel = null;

function threadItem(message) {
  const item = element("li", "thread__item" + (message.deleted ? " thread__item--deleted" : ""));
  const meta = element("div", "message__meta");
  meta.append(
    element("span", "message__author", nameOf(message.author)),
    element("span", "message__time", formatLocal(message.created_at)),
  );
  const body = element("div", "message__body message__body--html");
  if (message.deleted) body.textContent = gettext("message deleted");
  else setSafeHtml(body, message.body_html || "");
  item.append(meta, body);
  return item;
}

export async function openThread(li) {
  if (!li.dataset.id) return;
  state.thread = { id: li.dataset.id, seq: Number(li.dataset.seq) };
  if (!panel) {
    panel = element("aside", "thread");
    panel.setAttribute("aria-label", gettext("Thread"));
    document.querySelector(".chat__body").append(panel);
  }
  panel.hidden = false;
  await refreshThread();
}

export function closeThread() {
  state.thread = null;
  if (panel) {
    panel.hidden = true;
    panel.replaceChildren();
  }
}

export async function refreshThread() {
  const thread = state.thread;
  if (!thread || !panel) return;
  let page;
  try {
    page = await apiRequest("GET", `${urls.history}${encodeURIComponent(thread.id)}/replies/?limit=200`);
  } catch (err) {
    showNotice("thread", err.message);
    return;
  }
  if (state.thread !== thread) return; // closed or another opened meanwhile
  const header = element("div", "thread__header");
  header.append(element("h2", "thread__title", gettext("Thread")), actionButton(gettext("Close"), closeThread, gettext("Close the thread")));
  const list = element("ol", "thread__list");
  for (const reply of page.results || []) list.append(threadItem(reply));
  const replyHere = actionButton(gettext("Reply"), () => {
    const li = state.shown.get(thread.seq);
    if (li) setReplyTarget(li);
  }, gettext("Reply to this thread"));
  panel.replaceChildren(header, element("ol", "thread__list thread__parent"), list, replyHere);
  panel.querySelector(".thread__parent").append(threadItem(page.parent));
  if (page.has_more) panel.append(element("p", "thread__more", gettext("Older replies than these 200 are in the room's history.")));
}

// --- wiring ----------------------------------------------------------------------------------

registerMessagePart((li, message) => {
  renderQuote(li, message);
  renderReplyButton(li);
  if (message.deleted) renderReplyCount(li, 0);
  else if (Number.isInteger(message.reply_count)) renderReplyCount(li, message.reply_count);
});

on("thread.updated", (frame) => {
  if (frame.room !== config.slug || !Number.isInteger(frame.seq)) return;
  const li = state.shown.get(frame.seq);
  if (li) renderReplyCount(li, frame.reply_count);
  if (state.thread && state.thread.seq === frame.seq) refreshThread();
});

on("message.deleted", (frame) => {
  if (!Number.isInteger(frame.seq)) return;
  markQuotesDeleted(frame.seq);
  if (state.replyTo && state.replyTo.seq === frame.seq) clearReplyTarget();
  if (state.thread && state.thread.seq === frame.seq) refreshThread();
});

els.input.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.replyTo) clearReplyTarget();
});
