/*
 * chatsite room page: edit and delete controls of a shown message (REST PATCH / DELETE; the
 * result comes back live for everyone as message.updated / message.deleted).
 */

import { BODY_MAX_LENGTH, chat, config, els, state, urls } from "./context.js";
import { actionButton, characterCount, element } from "./dom.js";
import { registerMessagePart, when } from "./hooks.js";
import { apiRequest } from "./http.js";
import { applyMessageState, bodySource, isValidMessage } from "./render.js";
import { gettext, interpolate } from "./i18n.js";

// --- editing and deleting (REST; the result comes back live for everyone) -------------------

export function canModerate() {
  return Boolean(config.can_moderate) || config.role === "owner" || config.role === "moderator";
}

// The small "Edit" / "Delete" controls of a shown message: Edit on your own, Delete on your own
// and, for the room's owner and moderators, on every message. None on a deleted message, and
// none once the page is read-only (banned, removed, left: the server would refuse them).
export function renderMessageActions(li) {
  const meta = li.querySelector(".message__meta");
  let actions = meta.querySelector(".message__actions");
  if (!actions) {
    actions = element("span", "message__actions");
    meta.append(actions);
  }
  actions.replaceChildren();
  if (li.dataset.deleted || !li.dataset.id || state.banned || state.readOnly) return;
  const mine = Number(li.dataset.authorId) === config.user.id;
  if (mine && !state.archived && !li.querySelector(".message__editor")) {
    actions.append(actionButton(gettext("Edit"), () => openEditor(li), gettext("Edit this message")));
  }
  if (mine || canModerate()) {
    const button = actionButton(gettext("Delete"), () => deleteMessage(li), gettext("Delete this message"));
    button.classList.add("link-button--danger");
    actions.append(button);
  }
}

let drawnReadOnly = false; // the controls were last drawn for a read-only page

export function renderAllMessageActions() {
  drawnReadOnly = state.readOnly;
  for (const li of state.shown.values()) {
    if (state.archived || state.banned || state.readOnly) closeEditor(li);
    renderMessageActions(li);
  }
}

export function messageUrl(li) {
  return `${urls.history}${encodeURIComponent(li.dataset.id)}/`; // <history> is .../messages/
}

export function setMessageError(li, text) {
  let error = li.querySelector(".message__error");
  if (text === null) {
    if (error) error.remove();
    return;
  }
  if (!error) {
    error = element("p", "message__error");
    error.setAttribute("role", "alert");
    li.append(error);
  }
  error.textContent = text;
}

export function openEditor(li) {
  if (li.querySelector(".message__editor") || li.dataset.deleted) return;
  const body = li.querySelector(".message__body");
  const form = element("form", "message__editor");
  const textarea = element("textarea", "message__edit-input");
  textarea.value = bodySource(li); // the Markdown source, not the shown text
  textarea.rows = Math.min(8, Math.max(2, textarea.value.split("\n").length));
  textarea.setAttribute("aria-label", gettext("Edit message"));
  const save = element("button", "button button--small", gettext("Save"));
  save.type = "submit";
  const buttons = element("div", "message__editor-buttons");
  buttons.append(save, actionButton(gettext("Cancel"), () => closeEditor(li)));
  form.append(textarea, buttons);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveEdit(li, form);
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      closeEditor(li);
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  setMessageError(li, null);
  body.hidden = true;
  body.after(form);
  renderMessageActions(li);
  textarea.focus();
  textarea.setSelectionRange(textarea.value.length, textarea.value.length);
}

export function closeEditor(li) {
  const form = li.querySelector(".message__editor");
  if (!form) return;
  const hadFocus = form.contains(document.activeElement);
  form.remove();
  li.querySelector(".message__body").hidden = false;
  setMessageError(li, null);
  renderMessageActions(li);
  if (hadFocus) els.input.focus();
}

export async function saveEdit(li, form) {
  const textarea = form.querySelector("textarea");
  const save = form.querySelector("button[type=submit]");
  const body = textarea.value;
  if (!body.trim()) {
    setMessageError(li, gettext("Write a message first (or delete it)."));
    return;
  }
  const count = characterCount(body);
  if (count > BODY_MAX_LENGTH) {
    setMessageError(li, interpolate(gettext("The message is %(count)s characters long; the limit is %(limit)s."), { count, limit: BODY_MAX_LENGTH }));
    return;
  }
  if (body === bodySource(li)) {
    closeEditor(li); // nothing changed: nothing to send
    return;
  }
  textarea.readOnly = true;
  save.disabled = true;
  setMessageError(li, null);
  try {
    const message = await apiRequest("PATCH", messageUrl(li), { body });
    if (isValidMessage(message)) applyMessageState(li, message); // no-op if the frame was first
    if (form.isConnected) closeEditor(li);
  } catch (err) {
    textarea.readOnly = false;
    save.disabled = false;
    if (li.isConnected && !li.dataset.deleted) setMessageError(li, err.message);
  }
}

export async function deleteMessage(li) {
  const mine = Number(li.dataset.authorId) === config.user.id;
  const question = mine
    ? gettext("Delete your message? Everyone will see “message deleted” in its place.")
    : gettext("Delete this message for everyone? Everyone will see “message deleted” in its place.");
  if (!window.confirm(question)) return;
  setMessageError(li, null);
  try {
    await apiRequest("DELETE", messageUrl(li));
    applyMessageState(li, { deleted: true }); // no-op if message.deleted came first
  } catch (err) {
    if (!li.dataset.deleted) setMessageError(li, err.message);
  }
}

// Django's CSRF token: the csrftoken cookie, or the {% csrf_token %} input of the page when

// Every message's controls follow its state (render.js calls the parts on build and on each
// newer state); a deleted message loses its editor and error line.
registerMessagePart((li, message) => {
  if (message.deleted) {
    closeEditor(li);
    setMessageError(li, null);
  }
  renderMessageActions(li);
});
when("stopped", renderAllMessageActions);
when("hello", () => {
  if (drawnReadOnly && !state.readOnly) renderAllMessageActions(); // rejoined after leaving
});

// A read-only page offers no reaction or reply (style.css hides "☺+", "Reply" and the thread's
// "Reply"); the reaction chips stay as counts, and a click on one (or on anything hidden that
// still has focus) does nothing instead of sending what the server would refuse.
chat.addEventListener("click", (event) => {
  if (!state.readOnly || !(event.target instanceof Element)) return;
  if (event.target.closest(".reaction, .reply-button, .thread > .link-button")) {
    event.preventDefault();
    event.stopPropagation();
  }
}, { capture: true });
