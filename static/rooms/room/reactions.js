/*
 * chatsite room page: emoji reactions (rooms/reactions.py). Under each message, one chip per
 * emoji with its count, who reacted as the chip's title, pressed when one of them is you; a
 * click toggles your reaction. "☺+" opens a small picker: a fixed set of common emoji, and a
 * field for any other (one emoji; the server answers invalid_emoji otherwise).
 *
 * Frames (docs/protocol.md): client → server {"type":"reaction.add"|"reaction.remove","seq","emoji"};
 * server → sender {"type":"reaction.ack","action","seq","emoji","changed","reactions"};
 * server → all {"type":"reaction.updated","room","seq","reactions"}. Without a live socket the
 * REST route is used (POST / DELETE <history>/<id>/reactions/). Every answer carries the
 * message's whole list, which replaces the chips (the message shape's "reactions" too).
 */

import { config, state, urls } from "./context.js";
import { element } from "./dom.js";
import { send } from "./connection.js";
import { on, registerMessagePart } from "./hooks.js";
import { apiRequest } from "./http.js";
import { showNotice } from "./status.js";
import { gettext, interpolate, ngettext } from "./i18n.js";

export const COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀", "✅", "🔥"];

function chipsOf(li) {
  let chips = li.querySelector(".reactions");
  if (!chips) {
    chips = element("div", "reactions");
    const body = li.querySelector(".message__body");
    body.after(chips);
  }
  return chips;
}

// Draws the chips of `li` from a message's reactions list ([{emoji, count, users}]).
export function renderReactions(li, reactions) {
  const chips = chipsOf(li);
  chips.replaceChildren();
  if (li.dataset.deleted) return;
  const seq = Number(li.dataset.seq);
  for (const reaction of reactions || []) {
    if (!reaction || typeof reaction.emoji !== "string") continue;
    const users = Array.isArray(reaction.users) ? reaction.users : [];
    const mine = users.some((u) => u && u.id === config.user.id);
    const chip = element("button", "reaction" + (mine ? " reaction--mine" : ""));
    chip.type = "button";
    chip.dataset.emoji = reaction.emoji;
    chip.setAttribute("aria-pressed", mine ? "true" : "false");
    const names = users.map((u) => u.username).join(", ");
    const others = reaction.count - users.length;
    chip.title = others > 0
      ? interpolate(ngettext("%(names)s and %(count)s other reacted with %(emoji)s", "%(names)s and %(count)s others reacted with %(emoji)s", others), { names, count: others, emoji: reaction.emoji })
      : interpolate(gettext("%(names)s reacted with %(emoji)s"), { names, emoji: reaction.emoji });
    chip.append(element("span", "reaction__emoji", reaction.emoji), element("span", "reaction__count", String(reaction.count)));
    chip.addEventListener("click", () => toggle(li, seq, reaction.emoji, !mine));
    chips.append(chip);
  }
  if (!state.archived && !state.banned) chips.append(pickerButton(li, seq));
}

function pickerButton(li, seq) {
  const button = element("button", "reaction reaction--add", "☺+");
  button.type = "button";
  button.title = gettext("Add a reaction");
  button.setAttribute("aria-label", gettext("Add a reaction"));
  button.addEventListener("click", () => openPicker(li, seq, button));
  return button;
}

function closePickers() {
  for (const picker of document.querySelectorAll(".reaction-picker")) picker.remove();
}

export function openPicker(li, seq, anchor) {
  const open = li.querySelector(".reaction-picker");
  closePickers();
  if (open) return; // the button toggles it
  const picker = element("div", "reaction-picker");
  picker.setAttribute("role", "dialog");
  picker.setAttribute("aria-label", gettext("Pick a reaction"));
  for (const emoji of COMMON_EMOJI) {
    const choice = element("button", "reaction-picker__choice", emoji);
    choice.type = "button";
    choice.addEventListener("click", () => {
      closePickers();
      toggle(li, seq, emoji, true);
    });
    picker.append(choice);
  }
  const form = element("form", "reaction-picker__form");
  const input = element("input", "reaction-picker__input");
  input.placeholder = gettext("any emoji");
  input.setAttribute("aria-label", gettext("Any emoji"));
  input.maxLength = 32;
  form.append(input);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const emoji = input.value.trim();
    if (!emoji) return;
    closePickers();
    toggle(li, seq, emoji, true);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closePickers();
  });
  picker.append(form);
  anchor.after(picker);
}

// Adds (add=true) or removes your reaction: over the socket when it is live, else over REST.
export async function toggle(li, seq, emoji, add) {
  const frame = { type: add ? "reaction.add" : "reaction.remove", seq, emoji };
  if (send(frame)) return;
  if (!li.dataset.id) return;
  const url = `${urls.history}${encodeURIComponent(li.dataset.id)}/reactions/`;
  try {
    const answer = add
      ? await apiRequest("POST", url, { emoji })
      : await apiRequest("DELETE", `${url}?emoji=${encodeURIComponent(emoji)}`);
    if (answer && Array.isArray(answer.reactions)) renderReactions(li, answer.reactions);
  } catch (err) {
    showNotice("reaction", err.message);
  }
}

function applyFrame(frame) {
  if (!Number.isInteger(frame.seq) || !Array.isArray(frame.reactions)) return;
  const li = state.shown.get(frame.seq);
  if (li) renderReactions(li, frame.reactions);
}

on("reaction.updated", (frame) => {
  if (frame.room === config.slug) applyFrame(frame);
});
on("reaction.ack", applyFrame);
// Error frames of a reaction (invalid_emoji, muted, …) are shown by outbox.js like any other.

// Each message shows its reactions (message.reactions) when built and at each newer state.
registerMessagePart((li, message) => {
  if (message.deleted) {
    renderReactions(li, []);
  } else if (Array.isArray(message.reactions)) {
    renderReactions(li, message.reactions);
  } else if (!li.querySelector(".reactions")) {
    renderReactions(li, []);
  }
});

document.addEventListener("click", (event) => {
  if (!event.target.closest(".reaction-picker") && !event.target.closest(".reaction--add")) closePickers();
});
