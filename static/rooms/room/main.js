/*
 * chatsite room page: live messages over a WebSocket, an outbox that survives reconnects, and
 * gap repair through the history API. No dependencies and no build step: native ES modules,
 * loaded by templates/rooms/room_detail.html as <script type="module" src=".../room/main.js">
 * (collectstatic's manifest storage rewrites the imports to the hashed file names).
 *
 * The modules, by concern (each imports what it uses from the others):
 *   main.js        this file: starts the page (init)
 *   context.js     the page's config (json_script), URLs, elements, shared state, constants
 *   hooks.js       extension points: on(type, handler), registerMessagePart(render)
 *   connection.js  the socket: connect, resume (?after_seq), send(frame), close codes, backoff
 *   sync.js        live messages, edits, deletes and gap repair through the history API
 *   seq.js         pure: which live seq is shown, held or dropped; backoff; message versions
 *   outbox.js      sends until acked, resent with the same client_msg_id; error frames
 *   outbox-rules.js pure: what an error frame does to a send; the outbox in sessionStorage
 *   render.js      the message list: one <li> per seq, edits and deletes applied in place;
 *                  older pages, date dividers, groups, "Jump to latest", first-unread landing
 *   timeline.js    pure: merge by seq, dividers and groups (tests/js/ test the pure modules)
 *   actions.js     edit and delete controls (REST); http.js: the REST requests
 *   presence.js    who is online and who is typing; composer.js: the send form;
 *   reads.js       read reports (debounced, visible tab, newest message in view), read.updated
 *                  from other tabs moves the "New messages" divider, mentions highlighted
 *   members.js     the members panel and room settings (REST), live member frames
 *   avatar.js      pure: generated avatars (initials, colour); avatars.js draws them
 *   status.js      the status line and notices; dom.js: small DOM and time helpers
 *   reactions.js   emoji reactions: chips, picker, reaction.add / reaction.remove / reaction.updated
 *   replies.js     replies: the quote of the parent (jumps to it), Reply, reply counts, thread panel
 *
 * Frame contract (rooms/consumers.py):
 *   server → client  {"type":"hello","server_id","room","last_seq"}            first frame
 *   client → server  {"type":"message.send","body","client_msg_id"[,"reply_to"]}
 *   server → sender  {"type":"ack","client_msg_id","id","seq"}                 once stored
 *   server → all     {"type":"message","message":{id,room,seq,author,body,created_at,server_id}}
 *   server → client  {"type":"error","code","detail"[,"client_msg_id"][,"field"][,"until"][,"frame"]}
 *   server → all     {"type":"message.updated","message":{…, edited_at, deleted}}  after an edit
 *   server → all     {"type":"message.deleted","id","room","seq"}              after a delete
 *   server → all     {"type":"room.archived","room"}                           then close 4410
 *   server → client  {"type":"resumed","last_seq"}      after the replay asked by ?after_seq=N
 *   server → client  {"type":"resync","latest_seq"}     instead, when over 1,000 are missing
 *   server → client  {"type":"history","messages","has_more"}  answer to a fetch frame (unused)
 *   server → client  {"type":"presence","online":[{id,username},…]}   after hello: who is online
 *   server → all     {"type":"presence.diff","joins":[…],"leaves":[…]} later changes, any node
 *   client → server  {"type":"typing"}                 while composing; at most one every 2 s
 *   server → others  {"type":"typing","user":{id,username}}   never to the typist's own sockets
 *   client → server  {"type":"read","seq"}             the reader has seen up to seq (reads.js)
 *   server → client  {"type":"read.updated","room","last_read_seq","unread_count","mention_count"}
 *                    any of the user's tabs moved their marker (every room of theirs: filter by room)
 *   server → client  {"type":"mention","room","message"} · {"type":"dm.created","room"}  (the
 *                    sidebar's, static/rooms/sidebar.js: ignored here)
 *   close 4000: you left the room (a "Rejoin" button reconnects) · 4401: not signed in ·
 *   4403: banned · 4404: no such room · 4410: archived (none of these is retried by itself)
 *   close 1012: the node is restarting: reconnect after 0-2 s, drawn (the balancer picks another node);
 *   4001: this session changed its password: reconnect with backoff (a 4401 within 15 s after
 *   it is retried too: the new cookie may not have arrived yet);
 *   4008: too slow a reader · 4429: this user has too many sockets open (other tabs) · 4503:
 *   the node cannot reach its database or Redis · anything else (1006 …): reconnect with
 *   backoff. Error rate_limited: resend after retry_after s. (The page sends no fetch or resume
 *   frames, so the server's per-user read limit never answers it.)
 *
 * Edits and deletes go through the REST API (PATCH / DELETE <history>/<id>/, session auth with
 * the X-CSRFToken header); their result arrives for everyone as message.updated / message.deleted.
 * Applying a message's state is idempotent and never goes back: deleted beats edited, a later
 * edited_at beats an earlier one, so the HTTP answer and the live frame may come in any order.
 *
 * Guarantees kept here: messages are shown ordered by seq and at most once; every send stays in
 * the outbox until acked and is resent with the same client_msg_id after a reconnect; every
 * socket resumes with ?after_seq=<lastSeq> (the server replays what was missed, then "resumed";
 * "resync" when too much is missing, and the page reads the history API instead); any gap seen in
 * live frames (dropped by the at-most-once channel layer) is filled from
 * GET <history>?after_seq=N before later live messages are shown.
 *
 * Scroll-back (render.js; its pure logic is in timeline.js): the shown seqs run without a
 * gap from the oldest loaded to lastSeq; scrolling near the top (or "Load older messages")
 * reads GET <history>?before_seq=<oldest>&limit=50 and prepends it, the first visible message
 * kept in place. Date dividers, author groups and the "New messages" divider (before the first
 * message of someone else after the config's optional last_read_seq, where the page opens) are
 * recomputed from the list after each change. A live message moves the view only when it was at
 * the bottom; otherwise "Jump to latest (N new)" shows.
 *
 * Who is here: the "Online (N)" list is the set (by user id) of the last presence frame of the
 * current socket, with the presence.diff frames after it applied (idempotent: a join of someone
 * listed or a leave of someone absent changes nothing); greyed while there is no live socket,
 * emptied when the page stops. Typing hints last TYPING_SHOW_MS after a user's last typing frame
 * and end at once when a message of theirs arrives or they go offline.
 */

// Modules that only register handlers (hooks.js) are imported for that effect.
import "./actions.js";
import "./attachments.js";
import "./avatars.js";
import "./members.js";
import "./sync.js";
import "./reactions.js";
import "./replies.js";
import "./reads.js";
import { onInput, onKeydown, onSubmit } from "./composer.js";
import { connect, reconnectIfWaiting, stop } from "./connection.js";
import { config, els, NARROW_SCREEN, state } from "./context.js";
import { restoreOutbox } from "./outbox.js";
import { renderPresence } from "./presence.js";
import {
  adoptRenderedHistory,
  decorate,
  jumpToLatest,
  landAtFirstUnread,
  landAtSeq,
  loadOlder,
  loadOlderIfNearTop,
  onLogScroll,
  renderHistoryTop,
  scrollToBottom,
} from "./render.js";

// --- start ---------------------------------------------------------------------------------

export function init() {
  if (window.matchMedia && window.matchMedia(NARROW_SCREEN).matches) els.presenceDetails.open = false;
  renderPresence();
  adoptRenderedHistory();
  restoreOutbox();
  scrollToBottom();
  renderHistoryTop();
  els.loadOlder.addEventListener("click", () => loadOlder().catch(() => {}));
  els.jumpButton.addEventListener("click", jumpToLatest);
  els.log.addEventListener("scroll", onLogScroll, { passive: true });
  setInterval(decorate, 60 * 1000); // "Today" becomes "Yesterday" at midnight
  // A search result's link (?seq=N) opens at that message; otherwise at the first unread one.
  (Number.isInteger(config.land_seq) ? landAtSeq(config.land_seq) : landAtFirstUnread()).catch(() => {});
  if (!state.landing) setTimeout(loadOlderIfNearTop, 0); // a short first page fills the view
  els.form.addEventListener("submit", onSubmit);
  els.input.addEventListener("keydown", onKeydown);
  els.input.addEventListener("input", onInput);
  window.addEventListener("online", reconnectIfWaiting);
  if (state.archived) {
    stop("archived"); // history only: no socket (it would be closed with 4410 at once)
    return;
  }
  els.fieldset.disabled = false;
  connect();
}

init();
