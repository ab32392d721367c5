/*
 * chatsite room page: generated avatars, pure (no DOM), tested under Node (tests/js/avatar.test.mjs).
 *
 * avatarOf(user) → {initials, hue} for a user shape {id, username, display_name?}:
 * - initials: the first letter of the first two words of the display name (else of the
 *   username, whose words are split at ".", "_", "-" too), upper-cased; one word gives one
 *   letter. Letters are user-perceived characters (grapheme clusters: "김" of "김민수", "É" of
 *   "Élodie" typed with a combining accent), never half of one.
 * - hue: 0-359, from the user's id by the golden angle (137.5°), so it never changes with a
 *   rename and neighbouring ids differ clearly.
 */

import { gettext } from "./i18n.js";

const GOLDEN_ANGLE = 137.508;

function graphemes(text) {
  if (typeof Intl !== "undefined" && Intl.Segmenter) {
    return Array.from(new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(text), (s) => s.segment);
  }
  return Array.from(text);
}

export function initialsOf(name) {
  // words start at their first letter or digit: "<img" gives "I", "(Bob)" gives "B"
  const words = String(name || "").trim().split(/[\s._\-]+/u)
    .map((word) => word.replace(/^[^\p{L}\p{N}\p{Extended_Pictographic}]+/u, ""))
    .filter(Boolean);
  if (words.length === 0) return "?";
  const letters = words.slice(0, 2).map((word) => graphemes(word)[0]);
  return letters.join("").toLocaleUpperCase();
}

export function hueOf(id) {
  const n = Number.isInteger(id) ? id : 0;
  return Math.floor((((n * GOLDEN_ANGLE) % 360) + 360) % 360);
}

export function avatarOf(user) {
  const name = (user && (user.display_name || "").trim()) || (user && user.username) || "";
  return { initials: initialsOf(name), hue: hueOf(user && user.id) };
}

export function nameOf(user) {
  return (user && (user.display_name || "").trim()) || (user && user.username) || gettext("unknown");
}
