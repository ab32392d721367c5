/*
 * chatsite room page: small DOM and time helpers: element() puts user text in as text only;
 * times are shown in the reader's time zone.
 */

import { config } from "./context.js";
import { isoMicros } from "./seq.js";

// --- small helpers -------------------------------------------------------------------------

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // user text only ever goes in as text
  return node;
}

export function newClientMsgId() {
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

export function isMine(message) {
  return Boolean(message.author) && message.author.id === config.user.id;
}

export function characterCount(text) {
  return Array.from(text).length; // code points, like the server; not UTF-16 units
}

// --- time ----------------------------------------------------------------------------------

export const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
export const dateAndTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

// A message's time: "14:32" (its day is on the date divider above it), the full date and time
// as the tooltip.
export function formatTime(timeEl, iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return;
  timeEl.dateTime = iso;
  timeEl.textContent = timeOnly.format(date);
  timeEl.title = fullDate.format(date);
}

// "14:32" today, "3 Mar 2025, 14:32" otherwise, in the reader's time zone.
export function formatLocal(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const today = new Date().toDateString() === date.toDateString();
  return (today ? timeOnly : dateAndTime).format(date);
}

export function versionOfElement(li) {
  if (li.dataset.deleted) return Infinity;
  return li.dataset.editedAt ? isoMicros(li.dataset.editedAt) : 0;
}

export function actionButton(label, onClick, accessibleName) {
  const button = element("button", "link-button", label);
  button.type = "button";
  if (accessibleName) button.setAttribute("aria-label", accessibleName);
  button.addEventListener("click", onClick);
  return button;
}
