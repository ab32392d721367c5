/*
 * chatsite pages: the page scripts' strings in the page's language (English or Korean).
 *
 * base.html loads Django's JavaScriptCatalog (/jsi18n/, a classic <script src>, before any
 * module runs), which defines globalThis.django with gettext, ngettext and interpolate over the
 * djangojs catalog of the language the page was rendered in (locale/<lang>/LC_MESSAGES/
 * djangojs.po). Modules import these names from here, so `makemessages -d djangojs` finds every
 * string (xgettext's JavaScript keywords: gettext, ngettext:1,2, pgettext:1c,2), and without the
 * catalog (Node's unit tests) the English text is used as it is.
 *
 * pageLanguage: <html lang> ("en" or "ko"), for Intl's date, time and number formats.
 */

const catalog = globalThis.django;

export function gettext(msgid) {
  return catalog && catalog.gettext ? catalog.gettext(msgid) : msgid;
}

export function ngettext(singular, plural, count) {
  if (catalog && catalog.ngettext) return catalog.ngettext(singular, plural, count);
  return count === 1 ? singular : plural;
}

export function pgettext(context, msgid) {
  return catalog && catalog.pgettext ? catalog.pgettext(context, msgid) : msgid;
}

// interpolate("%(count)s new", {count: 3}): named placeholders only, as in the .po files.
export function interpolate(format, values) {
  return format.replace(/%\((\w+)\)s/g, (match, name) => (name in values ? String(values[name]) : match));
}

export const pageLanguage = (globalThis.document && globalThis.document.documentElement.lang) || undefined;
