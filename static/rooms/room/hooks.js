/*
 * chatsite room page: the extension points, a leaf module (it imports nothing, so any module
 * may use it at its top level, whatever the order modules are evaluated in).
 *
 * - on(type, handler): `handler(frame)` runs for every server frame whose "type" is `type`
 *   (docs/protocol.md lists them), after the handlers registered before it. A feature adds its
 *   frames here (e.g. on("reaction.updated", …)) instead of editing the connection module.
 *   Returns a function that removes the handler. A handler that throws is reported to the
 *   console and does not stop the others, nor the socket.
 * - dispatch(frame): used by connection.js for each parsed frame; frames of a type nobody
 *   handles are ignored (the server may add types).
 * - registerMessagePart(render): `render(li, message)` runs each time a stored message's <li>
 *   is built and each time a newer state of it (edit, delete, or any message.updated) is
 *   applied, so a feature can add or refresh its part of a message (reactions, attachments,
 *   a reply quote). `message` is the message shape of docs/protocol.md; the part must put
 *   user text in with textContent (or already sanitised HTML from the server) only.
 * - when(event, handler) / emit(event, detail): the connection's life, for the modules above it
 *   (connection.js emits, and imports none of them, so the modules form no import cycle, which
 *   the hashed file names of collectstatic need):
 *     "connecting"    a socket is being opened (not live until its hello)
 *     "hello"         {frame, reconnect}: the socket is live; reconnect is true after the first
 *     "disconnected"  the socket closed; a reconnect may follow
 *     "stopped"       {reason}: no reconnect by itself ("left", "signed-out", "banned",
 *                     "archived", "not-found")
 * - send(frame), in connection.js: sends a frame on the live socket once it said hello.
 */

const handlers = new Map(); // type → [handler, …]
const messageParts = [];
const lifecycle = new Map(); // event → [handler, …]

export function on(type, handler) {
  if (!handlers.has(type)) handlers.set(type, []);
  handlers.get(type).push(handler);
  return () => {
    const list = handlers.get(type) || [];
    const index = list.indexOf(handler);
    if (index !== -1) list.splice(index, 1);
  };
}

export function dispatch(frame) {
  for (const handler of handlers.get(frame.type) || []) {
    try {
      handler(frame);
    } catch (err) {
      console.error(`chatsite: the ${frame.type} handler failed`, err);
    }
  }
}

export function registerMessagePart(render) {
  messageParts.push(render);
}

export function renderMessageParts(li, message) {
  for (const render of messageParts) {
    try {
      render(li, message);
    } catch (err) {
      console.error("chatsite: a message part failed to render", err);
    }
  }
}

export function when(event, handler) {
  if (!lifecycle.has(event)) lifecycle.set(event, []);
  lifecycle.get(event).push(handler);
}

export function emit(event, detail) {
  for (const handler of lifecycle.get(event) || []) {
    try {
      handler(detail || {});
    } catch (err) {
      console.error(`chatsite: a ${event} handler failed`, err);
    }
  }
}
