/*
 * chatsite room page: rEST requests: apiRequest (JSON, session and CSRF token; errors as Error
 * with a text fit to show) and fetchHistoryPage (GET <history>?after_seq= | before_seq=
 * &limit=).
 */

import { HISTORY_PAGE_SIZE, HISTORY_TIMEOUT_MS, urls } from "./context.js";
import { gettext, interpolate } from "./i18n.js";

// the cookie cannot be read (CSRF_COOKIE_HTTPONLY, CSRF_USE_SESSIONS).
export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  if (match) return decodeURIComponent(match[1]);
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  return input ? input.value : "";
}

// A same-origin JSON request with the session and the CSRF token. Resolves with the answer's
// JSON (null for 204); rejects with an Error whose message is fit to show.
export async function apiRequest(method, url, data) {
  const headers = { Accept: "application/json", "X-CSRFToken": csrfToken() };
  const options = { method, credentials: "same-origin", headers };
  if (data !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(data);
  }
  if (typeof AbortSignal !== "undefined" && AbortSignal.timeout) {
    options.signal = AbortSignal.timeout(HISTORY_TIMEOUT_MS);
  }
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error(gettext("Could not reach the server; try again."));
  }
  let payload = null;
  if (response.status !== 204) {
    try {
      payload = await response.json();
    } catch (err) {
      payload = null;
    }
  }
  if (!response.ok) throw new Error(errorText(payload, response.status));
  return payload;
}

// {"detail": str} (401, 403, 404, 409, 429) or field errors {"body": [str]} (400).
export function errorText(payload, status) {
  if (payload && typeof payload.detail === "string") return payload.detail;
  if (payload && typeof payload === "object") {
    for (const [field, errors] of Object.entries(payload)) {
      const first = Array.isArray(errors) ? errors[0] : errors;
      if (typeof first === "string") return field === "non_field_errors" ? first : `${field}: ${first}`;
    }
  }
  return interpolate(gettext("The server answered %(status)s; try again."), { status });
}

export async function fetchHistoryPage(afterSeq, beforeSeq, limit = HISTORY_PAGE_SIZE) {
  const where = beforeSeq === undefined ? `after_seq=${afterSeq}` : `before_seq=${beforeSeq}`;
  const url = `${urls.history}?${where}&limit=${limit}`;
  const options = { credentials: "same-origin", headers: { Accept: "application/json" } };
  if (typeof AbortSignal !== "undefined" && AbortSignal.timeout) {
    options.signal = AbortSignal.timeout(HISTORY_TIMEOUT_MS);
  }
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
  const page = await response.json();
  if (!page || !Array.isArray(page.results)) throw new Error("history: unexpected answer");
  return page;
}
