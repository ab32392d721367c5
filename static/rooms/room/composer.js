/*
 * chatsite room page: the send form: Enter sends (Shift+Enter for a new line), a character
 * counter near the limit, auto-growing text area, typing frames.
 */

import { BODY_MAX_LENGTH, CHAR_COUNT_FROM, els } from "./context.js";
import { characterCount } from "./dom.js";
import { enqueue } from "./outbox.js";
import { noteTyping } from "./presence.js";
import { clearFormError, showFormError } from "./status.js";

export function updateCharCount() {
  const count = characterCount(els.input.value);
  els.charCount.textContent = count >= CHAR_COUNT_FROM ? `${count} / ${BODY_MAX_LENGTH}` : "";
  els.charCount.classList.toggle("composer__count--over", count > BODY_MAX_LENGTH);
}

export function autoGrow() {
  els.input.style.height = "auto";
  els.input.style.height = `${els.input.scrollHeight + 2}px`;
}

export function onSubmit(event) {
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

export function onKeydown(event) {
  if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
  event.preventDefault();
  els.form.requestSubmit();
}

export function onInput() {
  autoGrow();
  updateCharCount();
  noteTyping();
  if (!els.formError.hidden && !els.formError.classList.contains("composer__error--notice")) {
    clearFormError();
  }
}
