/*
 * chatsite room page: small DOM and time helpers: element() puts user text in as text only;
 * times are shown in the reader's time zone.
 */

import { config } from "./context.js";
import { isoMicros } from "./seq.js";
import { pageLanguage } from "./i18n.js";

// --- small helpers -------------------------------------------------------------------------

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // user text only ever goes in as text
  return node;
}

// The server's body_html is sanitised there (nh3, an allow-list); it is parsed here in an inert
// <template> (no script runs, nothing loads) and checked against the same allow-list again
// before it enters the page: any other element is replaced by its text, any other attribute
// dropped, and a link keeps its href only for http, https and mailto.
const SAFE_TAGS = {
  P: [], BR: [], STRONG: [], EM: [], S: [], DEL: [], CODE: [], PRE: [], BLOCKQUOTE: [], UL: [], LI: [],
  OL: ["start"], A: ["href"], SPAN: ["class", "data-user"],
};
const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);

export function setSafeHtml(target, html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  for (const node of Array.from(template.content.querySelectorAll("*"))) {
    if (!node.isConnected && !template.content.contains(node)) continue; // inside a replaced node
    const allowed = SAFE_TAGS[node.tagName];
    if (!allowed) {
      node.replaceWith(document.createTextNode(node.textContent));
      continue;
    }
    for (const attr of Array.from(node.attributes)) {
      if (!allowed.includes(attr.name)) node.removeAttribute(attr.name);
    }
    if (node.tagName === "A") {
      let scheme = "";
      try {
        scheme = new URL(node.getAttribute("href") || "", "http://invalid.invalid/").protocol;
      } catch (err) {
        scheme = "";
      }
      if (!node.getAttribute("href") || !SAFE_SCHEMES.has(scheme) || !/^(https?:|mailto:)/i.test(node.getAttribute("href"))) {
        node.removeAttribute("href");
      }
      node.setAttribute("rel", "noopener noreferrer");
      node.setAttribute("target", "_blank");
    }
  }
  target.replaceChildren(template.content);
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

// In the page's language (<html lang>: "14:32" / "오후 2:32"), in the reader's time zone.
export const timeOnly = new Intl.DateTimeFormat(pageLanguage, { hour: "2-digit", minute: "2-digit" });
export const dateAndTime = new Intl.DateTimeFormat(pageLanguage, { dateStyle: "medium", timeStyle: "short" });
export const fullDate = new Intl.DateTimeFormat(pageLanguage, { dateStyle: "full", timeStyle: "long" });

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
