/*
 * chatsite room page: an error frame's text in the page's language, from its `code` (the codes of
 * docs/protocol.md, English identifiers that never change). The server's `detail` is English
 * for logs and other clients; the page shows it only for a code it does not know yet.
 *
 * - errorText(frame): the sentence for the form's error line.
 * - errorReason(code): the short reason beside a message that was not sent ("not sent (…)").
 */

import { gettext, interpolate } from "./i18n.js";

const ERROR_TEXTS = {
  invalid_json: gettext("The server could not read what the page sent."),
  binary_frame: gettext("The server could not read what the page sent."),
  not_object: gettext("The server could not read what the page sent."),
  missing_field: gettext("Something the server needs was missing; reload the page."),
  invalid_field: gettext("Something the page sent was not valid; reload the page."),
  unknown_type: gettext("The server did not understand the page; reload it."),
  empty_body: gettext("Write a message first."),
  body_too_long: gettext("The message is too long: at most 4,000 characters."),
  invalid_text: gettext("The message contains characters that cannot be sent."),
  invalid_attachment: gettext("An attached file cannot be sent with this message; attach it again."),
  conflict: gettext("A message with this id was already sent with another text."),
  muted: gettext("You are muted in this room."),
  unavailable: gettext("The server is unavailable for a moment; the message is sent again shortly."),
  rate_limited: gettext("You are sending too fast; wait a moment."),
  not_found: gettext("This room does not exist (any more)."),
  invalid_emoji: gettext("That is not one emoji."),
  message_not_found: gettext("That message does not exist (any more)."),
  reply_not_found: gettext("The message you are replying to was deleted."),
  internal_error: gettext("Something went wrong on the server; try again."),
  banned: gettext("You are banned from this room."),
  archived: gettext("This room is archived: no new messages"),
  unauthenticated: gettext("You are not signed in."),
};

const ERROR_REASONS = {
  empty_body: gettext("empty"),
  body_too_long: gettext("too long"),
  invalid_text: gettext("invalid characters"),
  invalid_attachment: gettext("attachment not available"),
  conflict: gettext("conflict"),
  reply_not_found: gettext("reply to a deleted message"),
  internal_error: gettext("server error"),
};

export function errorText(frame) {
  const text = ERROR_TEXTS[frame.code];
  if (text) return text;
  return interpolate(gettext("Error: %(code)s (%(detail)s)"), { code: frame.code, detail: frame.detail || "" });
}

export function errorReason(code) {
  return ERROR_REASONS[code] || code;
}
