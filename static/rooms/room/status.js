/*
 * chatsite room page: the status line above the composer and the notices / errors line below it.
 */

import { els } from "./context.js";

// --- status line and notices ---------------------------------------------------------------

export function setStatus(kind, ...parts) {
  els.status.className = `status status--${kind}`;
  const text = els.status.querySelector(".status__text");
  text.replaceChildren(...parts);
}

export const notices = new Map(); // source → text, shown in the form's error line when no error is

export function showNotice(source, text) {
  notices.set(source, text);
  if (els.formError.hidden) showFormError(text, true);
}

export function clearNotice(source) {
  const text = notices.get(source);
  notices.delete(source);
  if (text !== undefined && els.formError.textContent === text) clearFormError();
}

// --- the send form -------------------------------------------------------------------------

export function showFormError(text, isNotice) {
  els.formError.textContent = text;
  els.formError.classList.toggle("composer__error--notice", Boolean(isNotice));
  els.formError.hidden = false;
}

export function clearFormError() {
  els.formError.textContent = "";
  els.formError.hidden = true;
}
