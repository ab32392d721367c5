/*
 * chatsite room page: the generated avatar (initials on a colour, avatar.js) before each
 * message's author, drawn as a message part (hooks.js), so messages the server drew and those
 * added live get the same; avatarElement(user) for other lists (members.js).
 */

import { avatarOf, nameOf } from "./avatar.js";
import { element } from "./dom.js";
import { registerMessagePart } from "./hooks.js";

export function avatarElement(user) {
  const { initials, hue } = avatarOf(user);
  const avatar = element("span", "avatar", initials);
  avatar.style.setProperty("--avatar-hue", String(hue)); // CSSOM: allowed by the page's CSP
  avatar.setAttribute("aria-hidden", "true"); // the name beside it says who it is
  avatar.title = nameOf(user);
  return avatar;
}

registerMessagePart((li, message) => {
  if (!message.author || li.querySelector(".message__meta > .avatar")) return;
  const author = li.querySelector(".message__author");
  if (author) author.before(avatarElement(message.author));
});
