/*
 * chatsite room page: the outbox: every send stays until its ack, kept in sessionStorage across
 * reloads and resent with the same client_msg_id after each hello; error frames applied by
 * outbox-rules.js.
 */

import { nameOf } from "./avatar.js";
import { sendFrame, stop } from "./connection.js";
import { ACK_GRACE_MS, config, els, state } from "./context.js";
import { actionButton, element, formatLocal, newClientMsgId } from "./dom.js";
import { on, when } from "./hooks.js";
import { errorPlan, parseSavedOutbox, savedOutbox, statusLabel } from "./outbox-rules.js";
import { scrollToBottom } from "./render.js";
import { showFormError } from "./status.js";
import { requestCatchUp } from "./sync.js";
import { errorReason, errorText } from "./errors.js";
import { gettext, interpolate } from "./i18n.js";

// --- outbox --------------------------------------------------------------------------------


export function renderOutboxEntry(entry) {
  const li = element("li", "message message--mine message--pending");
  li.dataset.clientMsgId = entry.id;
  const meta = element("div", "message__meta");
  meta.append(
    element("span", "message__author", config.user.username),
    element("span", "message__state")
  );
  const actions = element("span", "message__actions");
  meta.append(actions);
  li.append(meta, element("p", "message__body", entry.body));
  return li;
}

export function setEntryStatus(entry, status, reason) {
  entry.status = status;
  entry.el.dataset.status = status;
  const label = statusLabel(status, reason);
  entry.el.querySelector(".message__state").textContent = label;
  const actions = entry.el.querySelector(".message__actions");
  actions.replaceChildren();
  if (status === "failed") {
    if (entry.retryByHand) actions.append(actionButton(gettext("Retry"), () => retryEntry(entry)));
    actions.append(
      actionButton(gettext("Edit"), () => editEntry(entry)),
      actionButton(gettext("Discard"), () => discardEntry(entry))
    );
  }
}



// `replyTo`: the seq of the message this one answers (rooms/replies.py), or null; `attachments`:
// ids of uploads sent with it (attachments.js).
export function addToOutbox(id, body, { replyTo = null, attachments = [] } = {}) {
  const entry = { id, body, replyTo: Number.isInteger(replyTo) ? replyTo : null, attachments, el: null, status: "",
                  retries: 0, retryTimer: null };
  entry.el = renderOutboxEntry(entry);
  state.outbox.set(entry.id, entry);
  setEntryStatus(entry, "sending");
  els.outbox.append(entry.el);
  return entry;
}

export function enqueue(body, { replyTo = null, attachments = [] } = {}) {
  const entry = addToOutbox(newClientMsgId(), body, { replyTo, attachments });
  saveOutbox();
  scrollToBottom();
  sendEntry(entry);
}

// The outbox survives a reload of this tab (sessionStorage): unacked sends are resent with
// their client_msg_id after the next hello, and the server stores each one only once.
export const outboxKey = `chatsite.outbox.${config.slug}.${config.user.id}`;

export function saveOutbox() {
  const unsent = savedOutbox(state.outbox.values());
  try {
    if (unsent) sessionStorage.setItem(outboxKey, JSON.stringify(unsent));
    else sessionStorage.removeItem(outboxKey);
  } catch (err) {
    // storage full or disabled: the outbox still works for this page's lifetime
  }
}

export function restoreOutbox() {
  let text = null;
  try {
    text = sessionStorage.getItem(outboxKey);
  } catch (err) {
    return; // storage disabled: nothing was saved
  }
  for (const item of parseSavedOutbox(text)) {
    addToOutbox(item.id, item.body, { replyTo: item.replyTo, attachments: item.attachments });
  }
}

// Sends (or resends, with the same client_msg_id) once the socket said hello; otherwise the
// entry waits for the next hello.
export function sendEntry(entry) {
  clearTimeout(entry.retryTimer);
  entry.retryTimer = null;
  const frame = { type: "message.send", body: entry.body, client_msg_id: entry.id };
  if (entry.replyTo !== null) frame.reply_to = entry.replyTo;
  if (entry.attachments && entry.attachments.length) frame.attachments = entry.attachments; // attachments.js
  sendFrame(frame);
}

export function resendOutbox() {
  for (const entry of state.outbox.values()) {
    if (entry.status === "failed") continue;
    if (entry.status === "retrying") setEntryStatus(entry, "sending");
    sendEntry(entry);
  }
}

export function retryEntry(entry) {
  entry.retryByHand = false;
  setEntryStatus(entry, "sending");
  saveOutbox();
  sendEntry(entry);
}

export function editEntry(entry) {
  if (!els.input.value.trim()) {
    els.input.value = entry.body;
    els.input.dispatchEvent(new Event("input")); // composer.js: its height and counter follow
  }
  discardEntry(entry);
  els.input.focus();
}

export function discardEntry(entry) {
  clearTimeout(entry.retryTimer);
  state.outbox.delete(entry.id);
  entry.el.remove();
  saveOutbox();
}

export function onAck(frame) {
  const entry = state.outbox.get(frame.client_msg_id);
  if (!entry) return; // a second ack for a resend: already done
  clearTimeout(entry.retryTimer);
  state.outbox.delete(entry.id);
  saveOutbox();
  const seq = frame.seq;
  if (state.shown.has(seq) || !Number.isInteger(seq)) {
    entry.el.remove();
    return;
  }
  // Stored, but its live message is not here yet: keep the text visible until it is, and
  // fetch it if the broadcast was lost.
  setEntryStatus(entry, "sent");
  state.ackedAwaitingMessage.set(seq, entry.el);
  setTimeout(() => {
    if (!state.shown.has(seq)) requestCatchUp();
  }, ACK_GRACE_MS);
}

export function onErrorFrame(frame) {
  const text = errorText(frame);
  const entry = frame.client_msg_id ? state.outbox.get(frame.client_msg_id) : null;
  const plan = errorPlan(frame, entry);
  switch (plan.action) {
    case "stop":
      // the close follows; the text stays in the outbox, not sent (stop marks every entry)
      stop(plan.reason);
      return;
    case "muted":
      // Not stored; sending again cannot work before `until`: failed, with Edit / Discard.
      if (entry) {
        entry.retryByHand = false;
        setEntryStatus(entry, "failed", gettext("muted"));
        saveOutbox();
      }
      showFormError(
        typeof frame.until === "string"
          ? interpolate(gettext("You are muted until %(time)s."), { time: formatLocal(frame.until) })
          : errorText(frame)
      );
      return;
    case "ignore":
      return;
    case "reconnect":
      // The replay asked with ?after_seq could not be read now (database unavailable): no
      // "resumed" will come, so reconnect with backoff, which asks for the replay again.
      if (state.socket) state.socket.close();
      return;
    case "show":
      showFormError(text);
      return;
    case "retry":
      // Not stored: we sent too fast. Keep it and resend with the same id after retry_after.
      setEntryStatus(entry, "retrying", plan.label);
      clearTimeout(entry.retryTimer);
      entry.retryTimer = setTimeout(() => sendEntry(entry), plan.waitMs);
      const seconds = Math.max(1, Math.ceil(plan.waitMs / 1000));
      showFormError(interpolate(gettext("Sending too fast; retrying in %(seconds)s s."), { seconds }), true);
      return;
    case "retry-later":
      // Not stored: keep it, resend with the same id after a pause (and after any reconnect).
      entry.retries += 1;
      setEntryStatus(entry, "retrying");
      entry.retryTimer = setTimeout(() => sendEntry(entry), plan.waitMs);
      showFormError(text);
      return;
    default:
      entry.retryByHand = plan.retryByHand;
      setEntryStatus(entry, "failed", errorReason(frame.code));
      saveOutbox();
      showFormError(text);
  }
}

on("ack", onAck);
on("error", onErrorFrame);
when("hello", resendOutbox);
// Sends that can never succeed here (banned, archived, no such room) stay, marked not sent.
when("stopped", ({ reason }) => {
  const label = { banned: gettext("banned"), archived: gettext("room archived"), "not-found": gettext("no such room") }[reason];
  if (!label) return;
  for (const entry of state.outbox.values()) {
    if (entry.status === "failed") continue;
    clearTimeout(entry.retryTimer);
    entry.retryByHand = false;
    setEntryStatus(entry, "failed", label);
  }
  saveOutbox();
});
