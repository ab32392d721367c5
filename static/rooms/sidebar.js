/*
 * chatsite sidebar: every room and direct message of the signed-in user, with unread and
 * mention badges kept live over one WebSocket per page (/ws/user/, rooms/user_consumer.py),
 * whichever node serves it. Included on every signed-in page by templates/base.html as an ES
 * module (<script type="module">; it imports only room/i18n.js, its strings in the page's
 * language, and room/tab.js, the page's tab id; the room page's modules do not import it: the
 * two scripts meet through the server and the window event "chatsite:read"). No dependencies.
 *
 * Frame contract (docs/protocol.md, "Sidebar and unread state"):
 *   server → client {"type":"sidebar","server_id","rooms":[{slug,name,kind,dm_with,last_seq,
 *                    last_read_seq,unread_count,mention_count}]}   first frame, and after any
 *                    change of the user's rooms: replaces the whole state
 *   server → client {"type":"room.activity","rooms":[{room,last_seq,unread_added[,read_seq]}]}
 *                    messages were stored (at most one frame a second, one entry per room);
 *                    with read_seq the user's own message moved their marker there first
 *   server → client {"type":"message.deleted","id","room","seq","author_id"}
 *   server → client {"type":"read.updated","room","last_read_seq","unread_count","mention_count"}
 *                    (a report of another tab or device: the socket is opened with ?tab=<this
 *                    page's id>, room/tab.js, and this page's own reports come as the window
 *                    event "chatsite:read" from room/reads.js instead)
 *   server → client {"type":"mention","room","message":{…}}
 *   server → client {"type":"dm.created","room":{…}}   (a sidebar frame follows)
 *   server → client {"type":"room.updated","room":{slug,name,description,is_private}}  renamed
 *   close 4401: signed out (stop) · 1012: node restarting (reconnect within 0-2 s, drawn) · anything else
 *   (4429, 4503, 1006, 1011 …): reconnect with backoff. Every (re)connect starts with a fresh
 *   snapshot: the state is counts, not a log, so nothing is resumed.
 *
 * Counting rules (the server's, rooms/reads.py): unread = messages after last_read_seq that are
 * not the user's own and not deleted. The server counts each message once, after the snapshot
 * (room.activity's unread_added); read.updated never moves last_read_seq backward and replaces
 * the counts; a mention is counted once per seq.
 *
 * Mention notifications (the Notification API): off until the user clicks "Notify me of
 * mentions" (permission is asked on that click only; the choice is kept in localStorage). Then a
 * mention while this tab is hidden shows a notification; tabs of one browser share its tag, so
 * the browser shows it once.
 */
import { gettext, interpolate, ngettext } from "./room/i18n.js";
import { restartDelay } from "./room/seq.js";
import { READ_EVENT, tabId } from "./room/tab.js";

const aside = document.getElementById("sidebar");
if (aside && "WebSocket" in window) start(aside);

function start(aside) {

  const me = Number(aside.dataset.userId);
  const roomPrefix = aside.dataset.roomPrefix || "/rooms/";
  const socketPath = aside.dataset.socketPath || "/ws/user/";
  const roomsList = document.getElementById("sidebar-rooms");
  const dmsList = document.getElementById("sidebar-dms");
  const statusEl = document.getElementById("sidebar-status");
  const notifyButton = document.getElementById("notify-optin");
  const NOTIFY_KEY = "chatsite.notify-mentions";

  /** slug → {slug,name,kind,dm_with,last_seq,last_read_seq,unread_count,mention_count} */
  let rooms = new Map();
  /** slug → Set of mention seqs counted live since the last snapshot */
  let mentionSeqs = new Map();
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let stopped = false;

  function currentSlug() {
    if (!location.pathname.startsWith(roomPrefix)) return null;
    const rest = location.pathname.slice(roomPrefix.length);
    const slash = rest.indexOf("/");
    return slash > 0 ? decodeURIComponent(rest.slice(0, slash)) : null;
  }
  const current = currentSlug();

  // --- rendering -------------------------------------------------------------------------------

  function badge(className, text, label) {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    span.setAttribute("aria-label", label);
    return span;
  }

  function item(room) {
    const li = document.createElement("li");
    li.className = "sidebar__item";
    li.dataset.slug = room.slug;
    const a = document.createElement("a");
    a.className = "sidebar__link";
    a.href = roomPrefix + encodeURIComponent(room.slug) + "/";
    if (room.slug === current) {
      a.setAttribute("aria-current", "page");
      li.classList.add("sidebar__item--current");
    }
    // The room this visible page shows has no badges (its page reports what is read, a few
    // seconds late in a busy room); they come back when the tab is hidden.
    const watching = room.slug === current && !document.hidden;
    const unread = watching ? 0 : room.unread_count;
    const mentions = watching ? 0 : room.mention_count;
    if (unread > 0) li.classList.add("sidebar__item--unread");
    const name = document.createElement("span");
    name.className = "sidebar__name";
    name.textContent = room.kind === "dm" ? room.name : "#\u2009" + room.name;
    a.appendChild(name);
    if (mentions > 0) {
      const label = interpolate(ngettext("%(count)s mention", "%(count)s mentions", mentions), { count: mentions });
      a.appendChild(badge("sidebar__mentions", "@" + mentions, label));
    }
    if (unread > 0) {
      a.appendChild(badge("sidebar__unread", String(unread), interpolate(gettext("%(count)s unread"), { count: unread })));
    }
    li.appendChild(a);
    return li;
  }

  function render() {
    const groups = [[], []];
    for (const room of rooms.values()) groups[room.kind === "dm" ? 1 : 0].push(item(room));
    for (const [list, items, empty] of [[roomsList, groups[0], gettext("No rooms yet")], [dmsList, groups[1], gettext("No direct messages yet")]]) {
      if (!list) continue;
      if (!items.length) {
        const li = document.createElement("li");
        li.className = "sidebar__empty";
        li.textContent = empty;
        items.push(li);
      }
      list.replaceChildren(...items);
    }
    let total = 0;
    for (const room of rooms.values()) total += room.unread_count;
    // The page's own title (the room page renames it live on room.updated) after "(N) ".
    const baseTitle = document.title.replace(/^\(\d+\) /, "");
    document.title = total > 0 ? "(" + total + ") " + baseTitle : baseTitle;
    aside.dataset.unreadTotal = String(total);
  }

  function setStatus(state, text) {
    aside.classList.toggle("sidebar--stale", state !== "live");
    aside.dataset.state = state;
    if (statusEl) {
      statusEl.textContent = text;
      statusEl.hidden = state === "live";
    }
  }

  // --- frames ----------------------------------------------------------------------------------

  const handlers = {
    "sidebar": function (frame) {
      rooms = new Map(frame.rooms.map(function (r) { return [r.slug, Object.assign({}, r)]; }));
      mentionSeqs = new Map();
      attempt = 0;
      aside.dataset.serverId = frame.server_id || "";
      setStatus("live", "");
      render();
    },
    "room.activity": function (frame) {
      for (const entry of frame.rooms || []) {
        const room = rooms.get(entry.room);
        if (!room) continue;
        if (entry.read_seq && entry.read_seq > room.last_read_seq) {
          // the user wrote there (another tab or device): everything up to it is read
          room.last_read_seq = entry.read_seq;
          room.unread_count = 0;
          const seen = mentionSeqs.get(entry.room);
          if (seen) for (const seq of seen) if (seq <= entry.read_seq) seen.delete(seq);
          room.mention_count = seen ? seen.size : 0;
        }
        room.unread_count += entry.unread_added || 0;
        if (entry.last_seq > room.last_seq) room.last_seq = entry.last_seq;
      }
      render();
    },
    "message.deleted": function (frame) {
      const room = rooms.get(frame.room);
      if (!room || frame.seq <= room.last_read_seq || frame.seq > room.last_seq) return;
      if (frame.author_id !== me && room.unread_count > 0) room.unread_count -= 1;
      const seen = mentionSeqs.get(frame.room);
      if (seen && seen.delete(frame.seq) && room.mention_count > 0) room.mention_count -= 1;
      render();
    },
    "read.updated": function (frame) {
      const room = rooms.get(frame.room);
      if (!room || frame.last_read_seq < room.last_read_seq) return; // never backward
      room.last_read_seq = frame.last_read_seq;
      room.unread_count = frame.unread_count;
      room.mention_count = frame.mention_count;
      const seen = mentionSeqs.get(frame.room);
      if (seen) for (const seq of seen) if (seq <= frame.last_read_seq) seen.delete(seq);
      render();
    },
    // This page's own read report (room/reads.js; the server echoes no read.updated to this
    // tab): its counts cover the messages the page has shown, up to `upto`; what this sidebar
    // counted beyond is added (messages, and the mentions it saw there).
    "chatsite:read": function (detail) {
      const room = rooms.get(detail.room);
      if (!room || !Number.isInteger(detail.last_read_seq) || detail.last_read_seq <= room.last_read_seq) return;
      room.last_read_seq = detail.last_read_seq;
      const beyond = Math.max(0, room.last_seq - Math.max(detail.upto || 0, detail.last_read_seq));
      const seen = mentionSeqs.get(detail.room);
      let mentionsBeyond = 0;
      if (seen) {
        for (const seq of seen) {
          if (seq <= detail.last_read_seq) seen.delete(seq);
          else if (seq > detail.upto) mentionsBeyond += 1;
        }
      }
      room.unread_count = (detail.unread_count || 0) + Math.min(beyond, room.unread_count);
      room.mention_count = (detail.mention_count || 0) + mentionsBeyond;
      render();
    },
    "room.updated": function (frame) {
      const room = frame.room && rooms.get(frame.room.slug);
      if (!room || room.kind === "dm" || typeof frame.room.name !== "string") return;
      room.name = frame.room.name;
      render();
    },
    "mention": function (frame) {
      const room = rooms.get(frame.room);
      const seq = frame.message && frame.message.seq;
      if (!room || !seq || seq <= room.last_read_seq) return;
      let seen = mentionSeqs.get(frame.room);
      if (!seen) mentionSeqs.set(frame.room, (seen = new Set()));
      if (seen.has(seq)) return;
      seen.add(seq);
      room.mention_count += 1;
      render();
      notify(room, frame.message);
    },
  };

  function onFrame(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    const handler = handlers[frame && frame.type];
    if (handler) handler(frame);
  }

  // --- the socket --------------------------------------------------------------------------------

  function connect() {
    retryTimer = null;
    if (stopped) return;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    setStatus(attempt ? "reconnecting" : "connecting", attempt ? gettext("reconnecting…") : gettext("connecting…"));
    const ws = new WebSocket(scheme + location.host + socketPath + "?tab=" + tabId);
    socket = ws;
    ws.onmessage = function (event) { if (socket === ws) onFrame(event); };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      socket = null;
      if (event.code === 4401) {
        stopped = true;
        setStatus("stopped", gettext("signed out"));
        return;
      }
      attempt += 1;
      // 1012: the node is stopping; another one answers, after a wait drawn from 0 to 2 s as the
      // room page's (seq.js restartDelay: a stopped node's users do not all come back in one
      // instant). Otherwise back off, with jitter.
      const delay = event.code === 1012 ? restartDelay()
        : Math.min(30000, 500 * Math.pow(2, Math.min(attempt, 6))) * (0.5 + Math.random() / 2);
      setStatus("reconnecting", gettext("reconnecting…"));
      retryTimer = setTimeout(connect, delay);
    };
  }

  // A tab coming back online or to the front does not wait out a long backoff.
  function soon() {
    if (!stopped && retryTimer !== null) {
      clearTimeout(retryTimer);
      connect();
    }
  }
  window.addEventListener("online", soon);
  window.addEventListener(READ_EVENT, function (event) {
    if (event.detail) handlers["chatsite:read"](event.detail);
  });
  document.addEventListener("visibilitychange", function () {
    render(); // the current room's badges show only while the tab is hidden
    if (!document.hidden) soon();
  });

  // --- notifications -----------------------------------------------------------------------------

  function notifyEnabled() {
    return "Notification" in window && Notification.permission === "granted"
      && localStorage.getItem(NOTIFY_KEY) === "on";
  }

  function showNotifyButton() {
    if (!notifyButton) return;
    if (!("Notification" in window) || Notification.permission === "denied") {
      notifyButton.hidden = true;
      return;
    }
    notifyButton.hidden = false;
    const on = notifyEnabled();
    notifyButton.textContent = on ? gettext("Mention notifications: on") : gettext("Notify me of mentions");
    notifyButton.setAttribute("aria-pressed", on ? "true" : "false");
  }

  if (notifyButton) {
    notifyButton.addEventListener("click", function () {
      if (notifyEnabled()) {
        localStorage.setItem(NOTIFY_KEY, "off");
        showNotifyButton();
        return;
      }
      Promise.resolve(Notification.requestPermission()).then(function (permission) {
        localStorage.setItem(NOTIFY_KEY, permission === "granted" ? "on" : "off");
        showNotifyButton();
      });
    });
    showNotifyButton();
  }

  function notify(room, message) {
    if (!document.hidden || !notifyEnabled() || !message || (message.author && message.author.id === me)) return;
    const where = room.kind === "dm" ? room.name : "#" + room.name;
    try {
      const who = message.author ? message.author.username : gettext("Someone");
      const n = new Notification(interpolate(gettext("%(who)s mentioned you in %(where)s"), { who, where }), {
        body: String(message.body || "").slice(0, 200),
        tag: "mention-" + room.slug + "-" + message.seq,
      });
      n.onclick = function () {
        window.focus();
        location.href = roomPrefix + encodeURIComponent(room.slug) + "/";
        n.close();
      };
    } catch (e) {
      // Some browsers only show notifications from a service worker: the badge still counts.
    }
  }

  // For the room page and tests: the sidebar's state of a room (a copy), or null.
  window.ChatSidebar = {
    room: function (slug) {
      const room = rooms.get(slug);
      return room ? Object.assign({}, room) : null;
    },
    notifyEnabled: notifyEnabled,
  };

  render();
  connect();
}
