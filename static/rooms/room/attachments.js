/*
 * chatsite room page: attachments (rooms/attachments.py; docs/rest.md#attachments).
 *
 * - In a message: registerMessagePart draws message.attachments, in the order the message gives
 *   (the order they were attached), right under the body and above the reactions row: images as
 *   their thumbnail (a link to the full image), other files as a download link with name and
 *   size. Names are text (textContent, the alt attribute), never markup.
 * - In the composer: the "Attach" button, files dropped on the composer and files pasted into
 *   the text area are uploaded one after the other, in the order they were attached (POST
 *   /api/rooms/<slug>/attachments/, multipart), so their ids, the order the server shows them
 *   in, follow that order; shown as chips (uploading, ready, failed: the server's reason, on the
 *   chip only, announced as an alert) that can be removed (a queued one is then never sent);
 *   composer.js sends the ready ones' ids with the next message (message.send's attachments)
 *   and clears them.
 *   Pending uploads live in this page only (a reload forgets them; unsent uploads are shown to
 *   nobody).
 */

import { config } from "./context.js";
import { actionButton, element } from "./dom.js";
import { registerMessagePart } from "./hooks.js";
import { csrfToken } from "./http.js";
import { gettext, interpolate, pageLanguage, pgettext } from "./i18n.js";

const uploadUrl = `/api/rooms/${encodeURIComponent(config.slug)}/attachments/`;
const pending = []; // {file, name, status: "uploading" | "ready" | "failed", id, error, el}
const chips = document.getElementById("attachment-chips");
const picker = document.getElementById("attachment-input");
const button = document.getElementById("attach-button");
const form = document.getElementById("send-form");
const input = document.getElementById("message-body");

export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return "";
  const number = (value, digits) => value.toLocaleString(pageLanguage, { maximumFractionDigits: digits });
  if (bytes < 1024) return `${number(bytes, 0)} B`;
  if (bytes < 1024 * 1024) return `${number(bytes / 1024, bytes < 10 * 1024 ? 1 : 0)} KB`;
  return `${number(bytes / (1024 * 1024), 1)} MB`;
}

// --- in messages -----------------------------------------------------------------------------

function attachmentElement(attachment) {
  const item = element("li", "attachment");
  const link = element("a", "attachment__link");
  link.href = attachment.url;
  if (attachment.thumbnail_url) {
    item.classList.add("attachment--image");
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    const img = element("img", "attachment__thumbnail");
    img.src = attachment.thumbnail_url;
    img.alt = attachment.name;
    img.loading = "lazy";
    if (attachment.width && attachment.height) {
      const scale = Math.min(1, 400 / Math.max(attachment.width, attachment.height));
      img.width = Math.round(attachment.width * scale);
      img.height = Math.round(attachment.height * scale);
    }
    link.append(img);
  } else {
    link.setAttribute("download", attachment.name);
    link.append(element("span", "attachment__name", attachment.name),
      element("span", "attachment__size", formatSize(attachment.size)));
  }
  item.append(link);
  return item;
}

registerMessagePart((li, message) => {
  if (!message) return;
  const existing = li.querySelector(":scope > .message__attachments");
  if (message.deleted) {
    if (existing) existing.remove();
    return;
  }
  if (!Array.isArray(message.attachments)) return; // a partial state: keep what is shown
  if (existing) existing.remove();
  if (message.attachments.length === 0) return;
  const list = element("ul", "message__attachments");
  for (const attachment of message.attachments) list.append(attachmentElement(attachment));
  const body = li.querySelector(":scope > .message__body");
  if (body) body.after(list);
  else li.append(list);
  // The reactions row stays under everything, whichever part is drawn first: reactions.js fills
  // the row it finds (".reactions"), so one is put after the files when there is none yet.
  const reactions = li.querySelector(":scope > .reactions") || element("div", "reactions");
  list.after(reactions);
});

// --- in the composer ----------------------------------------------------------------------------

export function pendingIds() {
  return pending.filter((item) => item.status === "ready").map((item) => item.id);
}

export function pendingNames() {
  return pending.filter((item) => item.status === "ready").map((item) => item.name);
}

export function uploadsInFlight() {
  return pending.some((item) => item.status === "uploading");
}

export function clearPending() {
  pending.length = 0;
  if (chips) chips.replaceChildren();
  if (chips) chips.hidden = true;
}

function renderChip(item) {
  const chip = item.el || element("li", "attachment-chip");
  item.el = chip;
  chip.dataset.status = item.status;
  const state = element("span", "attachment-chip__state",
    item.status === "uploading" ? gettext("uploading…") : item.status === "failed" ? item.error : formatSize(item.size));
  if (item.status === "failed") state.setAttribute("role", "alert"); // the one place the refusal is shown
  chip.replaceChildren(
    element("span", "attachment-chip__name", item.name),
    state,
    actionButton(pgettext("attachment", "Remove"), () => removeItem(item), interpolate(gettext("Remove %(name)s"), { name: item.name })),
  );
  return chip;
}

function removeItem(item) {
  const at = pending.indexOf(item);
  if (at >= 0) pending.splice(at, 1);
  item.el.remove();
  if (chips && pending.length === 0) chips.hidden = true;
}

// One upload at a time, in the order the files were attached: the server numbers uploads as
// they are stored and shows a message's files by that number, so uploads running side by side
// (a small PDF overtaking a picture being thumbnailed) would reorder the sender's files.
let queue = Promise.resolve();

function upload(file) {
  const item = { file, name: file.name || "pasted-image.png", size: file.size, status: "uploading", id: null,
    error: "", el: null };
  pending.push(item);
  chips.append(renderChip(item));
  chips.hidden = false;
  queue = queue.then(() => send(item)).catch(() => {}); // one failure never stalls the uploads after it
  return queue;
}

async function send(item) {
  if (!pending.includes(item)) return; // removed (or sent without it) while it waited its turn
  const file = item.file;
  const body = new FormData();
  body.append("file", file, item.name);
  try {
    const response = await fetch(uploadUrl, {
      method: "POST", body, credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    });
    const data = await response.json().catch(() => null);
    if (!response.ok || !data || !Number.isInteger(data.id)) {
      throw new Error((data && data.detail) || interpolate(gettext("The upload failed (%(status)s)."), { status: response.status }));
    }
    item.id = data.id;
    item.name = data.name;
    item.size = data.size;
    item.status = "ready";
  } catch (err) {
    item.status = "failed";
    item.error = err.message || gettext("The upload failed.");
  }
  if (pending.includes(item)) renderChip(item);
}

export function addFiles(files) {
  for (const file of files || []) upload(file);
}

if (button && picker && chips && form && input) {
  button.hidden = false;
  button.addEventListener("click", () => picker.click());
  picker.addEventListener("change", () => {
    addFiles(Array.from(picker.files || []));
    picker.value = "";
  });
  form.addEventListener("dragover", (event) => {
    if (event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files")) {
      event.preventDefault();
      form.classList.add("composer--dropping");
    }
  });
  form.addEventListener("dragleave", () => form.classList.remove("composer--dropping"));
  form.addEventListener("drop", (event) => {
    form.classList.remove("composer--dropping");
    const files = event.dataTransfer ? Array.from(event.dataTransfer.files || []) : [];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
  input.addEventListener("paste", (event) => {
    const files = event.clipboardData ? Array.from(event.clipboardData.files || []) : [];
    if (files.length) {
      event.preventDefault(); // a pasted picture is uploaded; pasted text is left to the text area
      addFiles(files);
    }
  });
}
