/*
 * chatsite room page: the send form: Enter sends (Shift+Enter for a new line), a character
 * counter near the limit, auto-growing text area, typing frames; the uploaded files
 * (attachments.js) go with the message.
 */

import { clearPending, pendingIds, pendingNames, uploadsInFlight } from "./attachments.js";
import { BODY_MAX_LENGTH, CHAR_COUNT_FROM, els, state } from "./context.js";
import { characterCount } from "./dom.js";
import { when } from "./hooks.js";
import { enqueue } from "./outbox.js";
import { clearReplyTarget } from "./replies.js";
import { noteTyping } from "./presence.js";
import { clearFormError, showFormError } from "./status.js";
import { gettext, interpolate } from "./i18n.js";

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
  if (uploadsInFlight()) {
    showFormError(gettext("Wait until the files are uploaded."));
    return;
  }
  const attachments = pendingIds();
  let body = els.input.value;
  if (!body.trim() && attachments.length) body = pendingNames().join("\n"); // a file alone: its name says it
  if (!body.trim()) {
    showFormError(gettext("Write a message first."));
    return;
  }
  const count = characterCount(body);
  if (count > BODY_MAX_LENGTH) {
    showFormError(interpolate(gettext("The message is %(count)s characters long; the limit is %(limit)s."), { count, limit: BODY_MAX_LENGTH }));
    return;
  }
  clearFormError();
  enqueue(body, { replyTo: state.replyTo ? state.replyTo.seq : null, attachments });
  clearReplyTarget();
  clearPending();
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

// A stopped page sends nothing (connection.js disables the form and says why in its
// placeholder): the reply it was composing is dropped with its bar.
when("stopped", clearReplyTarget);
