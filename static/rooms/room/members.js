/*
 * chatsite room page: the members panel and the room's settings, run from the page through the
 * same REST routes as any client (docs/rest.md), so every rule and every broadcast is the
 * server's: an owner or moderator adds someone (the way into a private room), mutes for a
 * duration, unmutes, bans, unbans, removes, and the owner promotes and demotes moderators; an
 * owner or moderator renames and describes the room, the owner makes it private or public and
 * archives it; a member leaves. A refusal is shown as the server's `detail` and changes nothing.
 *
 * Live, from the room socket (docs/protocol.md): member.updated {room, member} (or
 * members.updated {room, members}) upserts a row (a member shape of GET <members>),
 * members.joined {room, count} (a storm of new members, sent as their count) adds to the count
 * and offers "Show more members", which reads the list again,
 * member.removed {room, user, reason} drops it, room.updated {room: {slug, name, description,
 * is_private}} redraws the header, the settings and every text that names the room (by its
 * name: the slug is the URL's, shown small for a public room only). The
 * reader's own row drives the page: a mute disables the composer until it ends ("You are muted
 * until …"), a role change shows or hides the moderation controls at once. After a reconnect
 * the list is read again (changes made while away do not come as frames).
 *
 * The list is read page by page (GET <members>?limit=100, "Show more members"), once the panel
 * is first opened or a frame needs it; shown owner first, then moderators, members, banned.
 */

import { renderAllMessageActions } from "./actions.js";
import { nameOf } from "./avatar.js";
import { avatarElement } from "./avatars.js";
import { config, els, state } from "./context.js";
import { actionButton, element, formatLocal } from "./dom.js";
import { on, when } from "./hooks.js";
import { apiRequest } from "./http.js";
import { clearNotice, showNotice } from "./status.js";
import { gettext, interpolate, ngettext } from "./i18n.js";

const PAGE_SIZE = 100;
// Mute durations offered, in minutes (the REST route takes any {"minutes"} or {"until"}).
const MUTE_CHOICES = [
  [10, gettext("10 minutes")],
  [60, gettext("1 hour")],
  [8 * 60, gettext("8 hours")],
  [24 * 60, gettext("1 day")],
  [7 * 24 * 60, gettext("1 week")],
];
const ROLE_ORDER = { owner: 0, moderator: 1, member: 2 };
const ROLE_LABELS = { owner: gettext("owner"), moderator: gettext("moderator"), member: gettext("member") };

export function roleLabel(role) {
  return ROLE_LABELS[role] || role;
}

const panel = {
  root: document.getElementById("members"),
  count: document.getElementById("members-count"),
  list: document.getElementById("members-list"),
  more: document.getElementById("members-more"),
  status: document.getElementById("members-status"),
  inviteForm: document.getElementById("invite-form"),
  inviteInput: document.getElementById("invite-username"),
  settings: document.getElementById("room-settings"),
  settingsForm: document.getElementById("room-settings-form"),
  nameInput: document.getElementById("room-name"),
  descriptionInput: document.getElementById("room-description"),
  privateLabel: document.getElementById("room-private-label"),
  privateInput: document.getElementById("room-private"),
  archive: document.getElementById("archive-room"),
  leave: document.getElementById("leave-room"),
  heading: document.getElementById("room-name-text"),
  slug: document.getElementById("room-slug"),
  inviteLabel: document.getElementById("invite-label"),
  description: document.getElementById("room-description-text"),
  privateBadge: document.getElementById("room-private-badge"),
  roleBadge: document.getElementById("my-role-badge"),
};

const members = {
  byId: new Map(), // user id → member shape
  next: null, // URL of the next page, null when all are read
  loaded: false,
  loading: null, // the running first read (a Promise)
  total: null, // the server's count
  unlisted: 0, // new members announced only by count (members.joined) since the list was read
  mutedUntil: config.muted_until ? new Date(config.muted_until) : null,
  muteTimer: null,
};

function isModerator() {
  return config.role === "owner" || config.role === "moderator" || Boolean(config.site_moderator);
}

function isOwnerOrSite() {
  return config.role === "owner" || Boolean(config.site_moderator);
}

// The moderation hierarchy, as rooms.services._check_may_act_on keeps it (the server decides;
// this only hides controls that would be refused): nobody acts on the owner or on themselves,
// only the owner (or a site moderator) acts on a moderator.
function mayActOn(member) {
  if (!isModerator() || state.archived || state.readOnly) return false;
  if (member.role === "owner" || member.user.id === config.user.id) return false;
  return member.role !== "moderator" || isOwnerOrSite();
}

function memberUrl(username, suffix = "") {
  return `${config.urls.members}${encodeURIComponent(username)}/${suffix}`;
}

function setStatus(text, isError = false) {
  panel.status.textContent = text || "";
  panel.status.classList.toggle("members__status--error", Boolean(isError));
}

// --- reading the list --------------------------------------------------------------------------

async function readPage(url) {
  const page = await apiRequest("GET", url);
  for (const member of page.results || []) members.byId.set(member.user.id, member);
  members.next = page.next || null;
  if (Number.isInteger(page.count)) members.total = page.count;
}

function loadMembers() {
  if (members.loading) return members.loading;
  members.loading = (async () => {
    try {
      members.byId.clear();
      members.unlisted = 0;
      await readPage(`${config.urls.members}?limit=${PAGE_SIZE}`);
      members.loaded = true;
      setStatus("");
    } catch (err) {
      setStatus(err.message, true);
    } finally {
      members.loading = null;
      render();
    }
  })();
  return members.loading;
}

async function loadMore() {
  if (!members.next) {
    if (members.unlisted > 0) await loadMembers(); // who the counted new members are
    return;
  }
  panel.more.disabled = true;
  try {
    await readPage(members.next);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    panel.more.disabled = false;
    render();
  }
}

// --- drawing -----------------------------------------------------------------------------------

function sortedMembers() {
  return Array.from(members.byId.values()).sort((a, b) =>
    Number(a.banned) - Number(b.banned) ||
    (ROLE_ORDER[a.role] ?? 3) - (ROLE_ORDER[b.role] ?? 3) ||
    a.user.username.localeCompare(b.user.username));
}

function notesOf(member) {
  if (member.banned) return gettext("banned");
  if (member.muted_until && new Date(member.muted_until) > new Date()) {
    return interpolate(gettext("muted until %(time)s"), { time: formatLocal(member.muted_until) });
  }
  return "";
}

function memberElement(member) {
  const li = element("li", "member" + (member.banned ? " member--banned" : ""));
  li.dataset.userId = String(member.user.id);
  const name = element("span", "member__name");
  name.append(avatarElement(member.user), nameOf(member.user));
  if (member.user.display_name) name.append(" ", element("span", "member__username", `@${member.user.username}`));
  if (member.role !== "member") name.append(element("span", "member__role", roleLabel(member.role)));
  if (member.user.id === config.user.id) name.append(" ", element("span", "presence__you", gettext("(you)")));
  li.append(name);
  if (mayActOn(member)) {
    const menu = element("details", "member__menu");
    const summary = element("summary", "", "⋯");
    summary.setAttribute("aria-label", interpolate(gettext("Actions for %(username)s"), { username: member.user.username }));
    menu.append(summary, actionsFor(member));
    li.append(menu);
  } else {
    li.append(element("span"));
  }
  li.append(element("span", "member__notes", notesOf(member)));
  return li;
}

function actionsFor(member) {
  const box = element("div", "member__actions");
  const who = member.user.username;
  if (member.banned) {
    const done = config.is_private
      ? gettext("%(who)s is no longer banned: add %(who)s again to let them back in.")
      : gettext("%(who)s is no longer banned: %(who)s may join again.");
    box.append(actionButton(gettext("Unban"), () => act("DELETE", memberUrl(who, "ban/"), interpolate(done, { who }))));
    return box;
  }
  if (isOwnerOrSite()) {
    if (member.role === "member") {
      box.append(actionButton(gettext("Make moderator"),
        () => act("PATCH", memberUrl(who), interpolate(gettext("%(who)s is now a moderator."), { who }), { role: "moderator" })));
    } else if (member.role === "moderator") {
      box.append(actionButton(gettext("Make member"),
        () => act("PATCH", memberUrl(who), interpolate(gettext("%(who)s is no longer a moderator."), { who }), { role: "member" })));
    }
  }
  const muted = member.muted_until && new Date(member.muted_until) > new Date();
  if (muted) {
    box.append(actionButton(gettext("Unmute"), () => act("DELETE", memberUrl(who, "mute/"), interpolate(gettext("%(who)s may send again."), { who }))));
  } else {
    const select = element("select");
    select.setAttribute("aria-label", interpolate(gettext("Mute %(who)s for"), { who }));
    select.append(new Option(gettext("Mute for…"), ""));
    for (const [minutes, label] of MUTE_CHOICES) select.append(new Option(label, String(minutes)));
    select.addEventListener("change", () => {
      const minutes = Number(select.value);
      if (!minutes) return;
      act("POST", memberUrl(who, "mute/"), interpolate(gettext("%(who)s is muted."), { who }), { minutes });
    });
    box.append(select);
  }
  const remove = actionButton(gettext("Remove"), () => {
    if (window.confirm(interpolate(gettext("Remove %(who)s from %(room)s?"), { who, room: config.name }))) {
      act("DELETE", memberUrl(who), interpolate(gettext("%(who)s was removed."), { who }));
    }
  });
  const ban = actionButton(gettext("Ban"), () => {
    const question = gettext("Ban %(who)s from %(room)s? They are removed and cannot come back until unbanned.");
    if (window.confirm(interpolate(question, { who, room: config.name }))) {
      act("POST", memberUrl(who, "ban/"), interpolate(gettext("%(who)s is banned."), { who }));
    }
  });
  remove.classList.add("link-button--danger");
  ban.classList.add("link-button--danger");
  box.append(remove, ban);
  return box;
}

function render() {
  const open = new Set(
    Array.from(panel.list.querySelectorAll(".member__menu[open]"), (d) => d.closest("li").dataset.userId));
  panel.list.replaceChildren(...sortedMembers().map((member) => {
    const li = memberElement(member);
    const menu = li.querySelector(".member__menu");
    if (menu && open.has(li.dataset.userId)) menu.open = true;
    return li;
  }));
  const shown = members.total ?? members.byId.size;
  panel.count.textContent = members.loaded ? ` (${shown})` : "";
  panel.more.hidden = !members.next && members.unlisted === 0;
  renderControls();
}

// What the reader may do here, from their role (which may change live).
function renderControls() {
  panel.inviteForm.hidden = !isModerator() || state.archived || state.readOnly;
  panel.settings.hidden = !isModerator() || state.archived || state.readOnly;
  panel.privateLabel.hidden = !isOwnerOrSite();
  panel.archive.hidden = !isOwnerOrSite() || state.archived || state.readOnly;
  // a muted member of a public room cannot leave until the mute ends (it would shed the mute)
  const mutedHere = !config.is_private && members.mutedUntil !== null && members.mutedUntil > new Date();
  panel.leave.hidden = config.role === null || config.role === "owner" || state.stopped || mutedHere;
  const shownRole = config.role === "owner" || config.role === "moderator" ? config.role : "";
  panel.roleBadge.textContent = roleLabel(shownRole);
  panel.roleBadge.hidden = !shownRole;
}

// --- acting ------------------------------------------------------------------------------------

async function act(method, url, done, body) {
  setStatus("…");
  try {
    const member = await apiRequest(method, url, body);
    if (member && member.user) upsert([member]); // the frame may come first or after: same state
    setStatus(done);
  } catch (err) {
    setStatus(err.message, true);
    render(); // a refused change changes nothing: redraw what the server has
  }
}

async function onInvite(event) {
  event.preventDefault();
  const username = panel.inviteInput.value.trim();
  if (!username) return;
  setStatus("…");
  try {
    const member = await apiRequest("POST", config.urls.members, { username });
    upsert([member]);
    panel.inviteInput.value = "";
    setStatus(interpolate(gettext("%(who)s is a member of %(room)s."), { who: member.user.username, room: config.name }));
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function onSaveSettings(event) {
  event.preventDefault();
  const body = { name: panel.nameInput.value, description: panel.descriptionInput.value };
  if (isOwnerOrSite()) body.is_private = panel.privateInput.checked;
  setStatus("…");
  try {
    const room = await apiRequest("PATCH", config.urls.room, body);
    applyRoom(room);
    setStatus(gettext("Room settings saved."));
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function onArchive() {
  const question = gettext("Archive %(room)s? Its history stays readable; nobody can send to it again.");
  if (!window.confirm(interpolate(question, { room: config.name }))) return;
  try {
    await apiRequest("DELETE", config.urls.room);
    setStatus(gettext("The room is archived.")); // room.archived and the close 4410 follow on every page
  } catch (err) {
    setStatus(err.message, true);
  }
}

async function onLeave() {
  const question = config.is_private
    ? gettext("Leave %(room)s? It is private: only a moderator can add you again.")
    : gettext("Leave %(room)s?");
  if (!window.confirm(interpolate(question, { room: config.name }))) return;
  try {
    await apiRequest("DELETE", memberUrl("me"));
    window.location.assign(config.urls.rooms_page);
  } catch (err) {
    setStatus(err.message, true);
    panel.root.open = true;
  }
}

// --- live frames -------------------------------------------------------------------------------

// member.updated carries one member, members.updated several (the room's changes in one pacing
// window, docs/protocol.md): each replaces its row, then the panel renders once.
function upsert(list) {
  for (const member of list) {
    if (!members.byId.has(member.user.id) && members.total !== null) members.total += 1;
    members.byId.set(member.user.id, member);
    if (member.user.id === config.user.id) applyOwn(member);
  }
  if (members.loaded) render();
  else renderControls();
}

// The reader's own membership changed: role and mute take effect on this page at once.
function applyOwn(member) {
  const role = member.banned ? null : member.role;
  if (role !== config.role) {
    config.role = role;
    config.can_moderate = role === "owner" || role === "moderator";
    renderAllMessageActions(); // Delete on others' messages follows the role
  }
  members.mutedUntil = member.muted_until ? new Date(member.muted_until) : null;
  applyMute();
}

// While muted: the composer is disabled with the time it ends (the server refuses sends anyway).
function applyMute() {
  clearTimeout(members.muteTimer);
  const until = members.mutedUntil;
  const muted = until !== null && until > new Date();
  if (muted) {
    els.fieldset.disabled = true;
    els.input.placeholder = interpolate(gettext("You are muted until %(time)s"), { time: formatLocal(until.toISOString()) });
    els.input.dataset.mutedPlaceholder = els.input.placeholder;
    showNotice("muted", interpolate(gettext("You are muted in this room until %(time)s."), { time: formatLocal(until.toISOString()) }));
    // setTimeout's limit is about 24.8 days; a longer mute is checked again then
    members.muteTimer = setTimeout(applyMute, Math.min(until - new Date() + 500, 2 ** 31 - 1));
  } else {
    clearNotice("muted");
    if (els.input.dataset.mutedPlaceholder && els.input.placeholder === els.input.dataset.mutedPlaceholder) {
      els.input.placeholder = gettext("Write a message…");
    }
    delete els.input.dataset.mutedPlaceholder;
    if (!state.stopped && state.helloReceived) els.fieldset.disabled = false;
  }
}

async function readOwnMembership() {
  try {
    const member = await apiRequest("GET", memberUrl("me"));
    if (member && member.user) upsert([member]);
  } catch (err) {
    // not a member (yet): nothing to show
  }
}

// Every text that names the room, from its name (text only: a name is user text). The slug is
// shown small for a public room only (a private room's ends in a random suffix).
function renderRoomName() {
  panel.heading.textContent = config.name;
  // base.html's title, after the sidebar's unread count "(N) " when it shows one
  const unread = /^\(\d+\) /.exec(document.title);
  document.title = `${unread ? unread[0] : ""}${config.name} · chatsite`;
  if (panel.slug) panel.slug.hidden = Boolean(config.is_private);
  if (panel.inviteLabel) panel.inviteLabel.textContent = interpolate(gettext("Add someone to %(room)s"), { room: config.name });
  els.historyStart.textContent = interpolate(gettext("This is the start of %(room)s."), { room: config.name });
}

function applyRoom(room) {
  if (!room || room.slug !== config.slug) return;
  if (typeof room.name === "string" && room.name) config.name = room.name;
  panel.description.textContent = room.description || "";
  panel.description.hidden = !room.description;
  panel.privateBadge.hidden = !room.is_private;
  config.is_private = Boolean(room.is_private);
  renderRoomName();
  if (document.activeElement !== panel.nameInput) panel.nameInput.value = room.name;
  if (document.activeElement !== panel.descriptionInput) panel.descriptionInput.value = room.description || "";
  panel.privateInput.checked = Boolean(room.is_private);
}

if (panel.root) {
  on("member.updated", (frame) => {
    if (frame.room === config.slug && frame.member && frame.member.user) upsert([frame.member]);
  });
  on("members.updated", (frame) => {
    if (frame.room !== config.slug || !Array.isArray(frame.members)) return;
    upsert(frame.members.filter((member) => member && member.user));
  });
  on("members.joined", (frame) => {
    if (frame.room !== config.slug || !Number.isInteger(frame.count) || frame.count < 1) return;
    if (members.total !== null) members.total += frame.count;
    members.unlisted += frame.count;
    if (members.loaded) render();
  });
  on("member.removed", (frame) => {
    if (frame.room !== config.slug || !frame.user) return;
    members.byId.delete(frame.user.id);
    if (members.total !== null) members.total = Math.max(0, members.total - 1);
    if (members.loaded) render();
  });
  on("room.updated", (frame) => applyRoom(frame.room));
  when("hello", ({ reconnect }) => {
    applyMute();
    if (reconnect && members.loaded) loadMembers(); // changes made while away
    // A visitor of a public room joined as this socket connected, before it could hear its
    // own member.updated: read the membership once.
    if (config.role === null) readOwnMembership();
    renderControls();
  });
  when("stopped", () => {
    // nothing is sent from a stopped page: the mute's notice and timer end with it (a rejoin's
    // hello shows them again)
    clearTimeout(members.muteTimer);
    clearNotice("muted");
    if (members.loaded) render(); // no member menus on a read-only page
    else renderControls();
  });

  panel.root.addEventListener("toggle", () => {
    if (panel.root.open && !members.loaded) loadMembers();
  });
  panel.more.addEventListener("click", loadMore);
  panel.inviteForm.addEventListener("submit", onInvite);
  panel.settingsForm.addEventListener("submit", onSaveSettings);
  panel.archive.addEventListener("click", onArchive);
  panel.leave.addEventListener("click", onLeave);
  renderControls();
}
