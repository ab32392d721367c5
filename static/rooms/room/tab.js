/*
 * chatsite: this page's tab id, a random token made once per page load and shared by the room
 * socket (room/connection.js) and the sidebar's user socket (sidebar.js), both opened with
 * ?tab=<id>. A read.updated caused by this page's own read report is not sent back to either
 * socket (the server skips the tab's sockets, docs/protocol.md): the page updates its sidebar
 * itself (the "chatsite:read" event, room/reads.js → sidebar.js). Both scripts import this one
 * module (the same URL), so they share the id; a duplicated tab gets its own.
 */

function randomId() {
  const bytes = new Uint8Array(12);
  if (window.crypto && window.crypto.getRandomValues) window.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); // 24 hex characters
}

export const tabId = randomId();

// The event the room page dispatches on window after each read report it sent:
// detail {room, last_read_seq, unread_count, mention_count, upto}, the counts after
// last_read_seq among the messages the page has shown (up to and including seq `upto`).
export const READ_EVENT = "chatsite:read";
