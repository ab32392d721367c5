/*
 * chatsite room page: who is online (presence, presence.diff) and who is typing (typing frames,
 * sent at most once every 2.1 s while the composer's text changes).
 */

import { sendFrame } from "./connection.js";
import { config, els, state, TYPING_SEND_INTERVAL_MS, TYPING_SHOW_MS } from "./context.js";
import { element } from "./dom.js";
import { on, when } from "./hooks.js";
import { gettext, interpolate, ngettext } from "./i18n.js";

// --- who is online, who is typing ----------------------------------------------------------

export function isUser(user) {
  return user !== null && typeof user === "object" && Number.isInteger(user.id) && typeof user.username === "string";
}

export function displayName(user) {
  return user.username || interpolate(gettext("user %(id)s"), { id: user.id });
}

// {"type":"presence","online":[…]}: the whole list (after every hello): replaces ours.
export function onPresence(frame) {
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
export function onPresenceDiff(frame) {
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
export function presenceNotLive(note, clear) {
  state.presenceLive = false;
  if (clear) state.online.clear();
  els.presenceNote.textContent = ` · ${note}`; // `note` is translated by the caller
  clearTyping();
  renderPresence();
}

export function renderPresence() {
  const members = Array.from(state.online, ([id, username]) => ({ id, username }));
  members.sort((a, b) => a.username.localeCompare(b.username) || a.id - b.id);
  els.presenceList.replaceChildren(
    ...members.map((member) => {
      const li = element("li", "presence__member");
      li.dataset.userId = String(member.id);
      li.append(element("span", "presence__name", member.username));
      if (member.id === config.user.id) li.append(element("span", "presence__you", gettext("(you)")));
      return li;
    })
  );
  els.presenceCount.textContent = String(members.length);
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
