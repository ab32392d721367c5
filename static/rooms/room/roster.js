/*
 * chatsite room page: the online list's state (pure: no DOM, no network), unit-tested under
 * Node (tests/js/roster.test.mjs). presence.js feeds it the server's frames and draws it.
 *
 * The server sends a count and the first names (PRESENCE_NAMES, 50) on join; diffs name at most
 * that many changes and say `partial` when they left some out; the rest comes page by page on
 * request (`presence.list` → `presence.page`, following `next` until it is null). A roster is:
 *   members   Map user id → username: the users we know to be online
 *   count     how many are online, as the server last said
 *   complete  whether `members` is all of them (no page left unread, no change left unnamed)
 *   expanded  whether the reader asked to see all (else the first SHOWN_NAMES are drawn)
 *   paging    null, or the Map a "show all" is filling page by page
 *   v         the room's presence version (`v`) of `count`, 0 when unknown
 *   base      the `v` of the last snapshot: what it said of everyone is at least that new
 *   seen      Map user id → the `v` of the last state applied for that user
 *
 * Order: each node reads the online state when it sends a frame, and two nodes' frames reach us
 * in any order, so an older read can arrive after a newer one. Every read on the server bumps the
 * room's counter `v` (rooms.presence.Page), so a diff's join or leave is applied only when its
 * `v` is newer than what we hold for that user (and than the snapshot), and a count only when
 * newer than our count. Frames without `v` (an older server) are applied as they come.
 */

export const SHOWN_NAMES = 50; // names drawn before "Show all" (the server's PRESENCE_NAMES)
export const PAGE_LIMIT = 200; // names asked per presence.list (the server's PRESENCE_PAGE_MAX)

export function isUser(user) {
  return user !== null && typeof user === "object" && Number.isInteger(user.id) && typeof user.username === "string";
}

export function displayName(user) {
  return user.username || `user ${user.id}`;
}

export function emptyRoster() {
  return { members: new Map(), count: 0, complete: true, expanded: false, paging: null, v: 0, base: 0, seen: new Map() };
}

function version(frame) {
  return Number.isInteger(frame.v) ? frame.v : null;
}

function users(list) {
  return Array.isArray(list) ? list.filter(isUser) : [];
}

// {"type":"presence","count":N,"online":[…],"next":cursor|null}: the first page after a hello.
// A server without `count` sends everyone (the old frame): then the list is the count.
export function fromSnapshot(frame) {
  const roster = emptyRoster();
  for (const user of users(frame.online)) roster.members.set(user.id, displayName(user));
  roster.count = Number.isInteger(frame.count) ? frame.count : roster.members.size;
  roster.complete = !frame.next && roster.members.size >= roster.count;
  roster.v = roster.base = version(frame) ?? 0;
  return roster;
}

// {"type":"presence.diff","joins":[…],"leaves":[…],"count":N,"partial":bool}: applied in place.
// Returns the user ids that left (their typing hints end).
// A diff older than what we hold (its `v`) changes nothing it is older for.
export function applyDiff(roster, frame) {
  const left = [];
  const v = version(frame);
  const targets = roster.paging ? [roster.members, roster.paging] : [roster.members];
  const newer = (user) => {
    if (v === null) return true;
    if (v <= Math.max(roster.base, roster.seen.get(user.id) ?? 0)) return false;
    roster.seen.set(user.id, v);
    return true;
  };
  for (const user of users(frame.joins)) {
    if (newer(user)) for (const map of targets) map.set(user.id, displayName(user));
  }
  for (const user of users(frame.leaves)) {
    if (!newer(user)) continue;
    for (const map of targets) map.delete(user.id);
    left.push(user.id);
  }
  if (v === null || v > roster.v) {
    roster.count = Number.isInteger(frame.count) ? frame.count : roster.members.size;
    if (v !== null) roster.v = v;
  }
  if (frame.partial === true || roster.members.size !== roster.count) roster.complete = false;
  return left;
}

// "Show all": the first presence.list frame to send (paging starts from the top).
export function startPaging(roster) {
  roster.paging = new Map();
  return { type: "presence.list", after: null, limit: PAGE_LIMIT };
}

// {"type":"presence.page","count":N,"online":[…],"next":cursor|null}: returns the next
// presence.list frame to send, or null when the list is whole (it then replaces `members`).
export function applyPage(roster, frame) {
  if (!roster.paging) return null; // a page nobody asked for (paging was reset by a new hello)
  for (const user of users(frame.online)) roster.paging.set(user.id, displayName(user));
  const v = version(frame);
  if (Number.isInteger(frame.count) && (v === null || v > roster.v)) {
    roster.count = frame.count;
    if (v !== null) roster.v = v;
  }
  if (typeof frame.next === "string" && frame.next) {
    return { type: "presence.list", after: frame.next, limit: PAGE_LIMIT };
  }
  roster.members = roster.paging;
  roster.paging = null;
  roster.expanded = true;
  roster.complete = true;
  return null;
}

export function stopPaging(roster) {
  roster.paging = null;
}

export function byName(a, b) {
  return a.username.localeCompare(b.username) || a.id - b.id;
}

// What to draw: the members in name order (the first `limit` unless expanded), and how many
// online users that leaves out (0 when all are drawn).
export function visible(roster, limit = SHOWN_NAMES) {
  const all = Array.from(roster.members, ([id, username]) => ({ id, username })).sort(byName);
  const shown = roster.expanded ? all : all.slice(0, limit);
  return { members: shown, hidden: Math.max(0, roster.count - shown.length) };
}
