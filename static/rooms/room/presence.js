/*
 * chatsite room page: who is online (presence, presence.diff, presence.page: "N online", the first
 * names, "Show all") and who is typing (typing frames, sent at most once every 2.1 s while the
 * composer's text changes).
 */

import { sendFrame } from "./connection.js";
import { config, els, state, TYPING_SEND_INTERVAL_MS, TYPING_SHOW_MS } from "./context.js";
import { element } from "./dom.js";
import { on, when } from "./hooks.js";
import { applyDiff, applyPage, displayName, emptyRoster, fromSnapshot, isUser, startPaging, stopPaging, visible } from "./roster.js";
import { gettext, interpolate, ngettext } from "./i18n.js";

// --- who is online, who is typing ----------------------------------------------------------
// The list's state lives in roster.js (pure); here it is fed the frames and drawn: "Online (N)",
// the first SHOWN_NAMES names, and "Show all" paging the rest through presence.list.

export { isUser, displayName };

let pageRetry = null; // the timer of a presence.list resent after rate_limited
let pageAsked = null; // the presence.list frame last sent (resent as it was after rate_limited)

function askPage(frame) {
  pageAsked = frame;
  if (!sendFrame(frame)) stopPaging(state.roster);
}

// {"type":"presence","count":N,"online":[first names],"next":…} (after every hello): replaces ours.
export function onPresence(frame) {
  if (!Array.isArray(frame.online)) return;
  clearTimeout(pageRetry);
  state.roster = fromSnapshot(frame);
  state.online = state.roster.members;
  state.presenceLive = true;
  renderPresence();
}

// {"type":"presence.diff",…}: applied to the list of this socket's presence frame (before it,
// or without one, there is nothing up to date to apply it to).
export function onPresenceDiff(frame) {
  if (!state.presenceLive) return;
  for (const id of applyDiff(state.roster, frame)) stopTyping(id);
  state.online = state.roster.members;
  renderPresence();
}

// {"type":"presence.page",…}: one page of a "Show all"; asks for the next until none is left.
export function onPresencePage(frame) {
  const next = applyPage(state.roster, frame);
  state.online = state.roster.members;
  if (next) askPage(next);
  renderPresence();
}

export function showAll() {
  if (!state.presenceLive || state.roster.paging) return;
  askPage(startPaging(state.roster));
  renderPresence();
}

// An error answering presence.list: retried after `retry_after` when rate limited, else given up.
function onPresenceError(frame) {
  if (frame.frame !== "presence.list" || !state.roster.paging) return;
  const roster = state.roster;
  if (frame.code === "rate_limited" || frame.code === "unavailable") {
    const wait = Math.max(0.2, Number(frame.retry_after) || 1) * 1000;
    pageRetry = setTimeout(() => {
      if (state.roster === roster && roster.paging && pageAsked) {
        askPage(pageAsked); // the same page again: the cursor still holds
        renderPresence();
      }
    }, wait);
    return;
  }
  stopPaging(roster);
  renderPresence();
}

// No live socket (or no presence from it): the list is greyed (`note` says why), or emptied
// when the page stops for good; typing hints end (their end would not reach us).
export function presenceNotLive(note, clear) {
  state.presenceLive = false;
  if (clear) {
    state.roster = emptyRoster();
    state.online = state.roster.members;
  }
  stopPaging(state.roster);
  els.presenceNote.textContent = ` · ${note}`; // `note` is translated by the caller
  clearTyping();
  renderPresence();
}

export function renderPresence() {
  const roster = state.roster;
  const { members, hidden } = visible(roster);
  const items = members.map((member) => {
    const li = element("li", "presence__member");
    li.dataset.userId = String(member.id);
    li.append(element("span", "presence__name", member.username));
    if (member.id === config.user.id) li.append(element("span", "presence__you", gettext("(you)")));
    return li;
  });
  if (hidden > 0 || roster.paging || (roster.expanded && !roster.complete)) {
    const li = element("li", "presence__more");
    if (roster.paging) {
      li.append(element("span", "", interpolate(gettext("Loading %(done)s of %(count)s…"), { done: roster.paging.size, count: roster.count })));
    } else if (state.presenceLive) {
      if (hidden > 0) li.append(element("span", "", interpolate(ngettext("and %(n)s more", "and %(n)s more", hidden), { n: hidden }) + " "));
      const button = element("button", "presence__show-all", hidden > 0 ? gettext("Show all") : gettext("Refresh list"));
      button.type = "button";
      button.addEventListener("click", showAll);
      li.append(button);
    } else if (hidden > 0) {
      li.append(element("span", "", interpolate(ngettext("and %(n)s more", "and %(n)s more", hidden), { n: hidden })));
    }
    items.push(li);
  }
  els.presenceList.replaceChildren(...items);
  els.presenceCount.textContent = String(roster.count);
  els.presence.classList.toggle("presence--stale", !state.presenceLive);
}

// {"type":"typing","user":{…}}: someone else is composing; shown for TYPING_SHOW_MS.
export function onTyping(frame) {
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

export function stopTyping(userId) {
  const typist = state.typists.get(userId);
  if (!typist) return;
  clearTimeout(typist.timer);
  state.typists.delete(userId);
  renderTyping();
}

export function clearTyping() {
  for (const typist of state.typists.values()) clearTimeout(typist.timer);
  state.typists.clear();
  renderTyping();
}

export function renderTyping() {
  const names = Array.from(state.typists.values(), (typist) => typist.username);
  let text = "";
  if (names.length === 1) text = interpolate(gettext("%(name)s is typing…"), { name: names[0] });
  else if (names.length === 2) text = interpolate(gettext("%(first)s and %(second)s are typing…"), { first: names[0], second: names[1] });
  else if (names.length > 2) text = interpolate(ngettext("%(count)s person is typing…", "%(count)s people are typing…", names.length), { count: names.length });
  els.typingHint.textContent = text;
}

// The composer's text changed: tell the room we are typing, at most once every 2 s, and only
// for a non-empty text on a connected socket (sendFrame sends nothing before hello).
export function noteTyping() {
  const text = els.input.value;
  if (text === state.typingText) return;
  state.typingText = text;
  if (!text.trim() || state.stopped) return;
  const now = Date.now();
  if (now - state.typingSentAt < TYPING_SEND_INTERVAL_MS) return;
  if (sendFrame({ type: "typing" })) state.typingSentAt = now;
}

on("presence", onPresence);
on("presence.diff", onPresenceDiff);
on("presence.page", onPresencePage);
on("error", onPresenceError);
on("typing", onTyping);
// their message is here: they are no longer typing it
on("message", (frame) => {
  if (frame.message && frame.message.author) stopTyping(frame.message.author.id);
});
when("connecting", () => presenceNotLive(gettext("not connected"), false));
when("disconnected", () => presenceNotLive(gettext("not connected"), false));
when("stopped", () => presenceNotLive(gettext("not connected"), true));
when("hello", () => {
  if (!state.presenceLive) els.presenceNote.textContent = ` · ${gettext("not known yet")}`; // until presence
});
