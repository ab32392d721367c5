// The room page's outbox rules (static/rooms/room/outbox-rules.js) under Node's test runner.
import test from "node:test";
import assert from "node:assert/strict";
import * as O from "../../static/rooms/room/outbox-rules.js";

const mid = () => 0.5; // no jitter

test("error frames that end the room stop the page; the send stays, not sent", () => {
  for (const [code, reason] of [["archived", "archived"], ["banned", "banned"], ["not_found", "not-found"]]) {
    assert.deepEqual(O.errorPlan({ code }, { retries: 0 }, mid), { action: "stop", reason });
    assert.deepEqual(O.errorPlan({ code }, null, mid), { action: "stop", reason });
  }
});

test("muted fails the send by hand; unavailable on resume reconnects; others' errors are shown", () => {
  assert.deepEqual(O.errorPlan({ code: "muted", until: "2026-12-05T10:00:00Z" }, { retries: 0 }), { action: "muted" });
  assert.deepEqual(O.errorPlan({ code: "unavailable", frame: "resume" }, null), { action: "reconnect" });
  assert.deepEqual(O.errorPlan({ code: "invalid_frame" }, null), { action: "show" });
});

test("rate_limited resends the same send after retry_after, never sooner than 100 ms", () => {
  assert.deepEqual(O.errorPlan({ code: "rate_limited", retry_after: 2.5 }, { retries: 0 }, mid),
    { action: "retry", waitMs: 2500, label: "rate limited" });
  assert.equal(O.errorPlan({ code: "rate_limited", retry_after: 0.01 }, { retries: 0 }, mid).waitMs, 100);
  // no usable retry_after: backoff from the entry's retries
  assert.equal(O.errorPlan({ code: "rate_limited", retry_after: "x" }, { retries: 2 }, mid).waitMs, 4000);
});

test("unavailable retries later with backoff; internal_error may be retried by hand; the rest fail", () => {
  assert.deepEqual(O.errorPlan({ code: "unavailable" }, { retries: 0 }, mid), { action: "retry-later", waitMs: 1000 });
  assert.deepEqual(O.errorPlan({ code: "unavailable" }, { retries: 3 }, mid), { action: "retry-later", waitMs: 8000 });
  assert.deepEqual(O.errorPlan({ code: "internal_error" }, { retries: 0 }), { action: "fail", retryByHand: true });
  assert.deepEqual(O.errorPlan({ code: "body_too_long" }, { retries: 0 }), { action: "fail", retryByHand: false });
});

test("what survives a reload: the sends not failed, and only well-formed ones come back", () => {
  const entries = [
    { id: "a", body: "one", status: "sending" },
    { id: "b", body: "two", status: "failed" },
    { id: "c", body: "three", status: "retrying" },
  ];
  const saved = O.savedOutbox(entries);
  assert.deepEqual(saved, [{ id: "a", body: "one" }, { id: "c", body: "three" }]);
  assert.equal(O.savedOutbox([{ id: "b", body: "two", status: "failed" }]), null);
  assert.deepEqual(O.parseSavedOutbox(JSON.stringify(saved)), saved.map((item) => ({ ...item, attachments: [] })));
  // a send with attachments keeps their ids across a reload (attachments.js)
  const withFiles = O.savedOutbox([{ id: "f", body: "file", status: "sending", attachments: [4, 5] }]);
  assert.deepEqual(withFiles, [{ id: "f", body: "file", attachments: [4, 5] }]);
  assert.deepEqual(O.parseSavedOutbox(JSON.stringify(withFiles))[0].attachments, [4, 5]);
  assert.deepEqual(O.parseSavedOutbox('[{"id": "g", "body": "x", "attachments": [1, "2", null]}]')[0].attachments, [1]);
  assert.deepEqual(O.parseSavedOutbox(null), []);
  assert.deepEqual(O.parseSavedOutbox("{not json"), []);
  assert.deepEqual(O.parseSavedOutbox('{"id": "a"}'), []);
  assert.deepEqual(O.parseSavedOutbox('[{"id": 1, "body": "x"}, null, {"id": "d", "body": "ok"}]'),
    [{ id: "d", body: "ok", attachments: [] }]);
});

test("status labels", () => {
  assert.equal(O.statusLabel("sending"), "sending…");
  assert.equal(O.statusLabel("failed", "muted"), "not sent (muted)");
});

test("an error answering the online list's paging is presence.js's, not the composer's", () => {
  assert.deepEqual(O.errorPlan({ code: "rate_limited", frame: "presence.list", retry_after: 1 }, null), { action: "ignore" });
  assert.deepEqual(O.errorPlan({ code: "invalid_field", frame: "presence.list" }, null), { action: "ignore" });
  // A refused read report is reads.js's to send again, not a send's error line.
  for (const code of ["unavailable", "internal_error", "rate_limited"]) {
    assert.deepEqual(O.errorPlan({ code, frame: "read", retry_after: 1 }, null), { action: "ignore" });
  }
  assert.deepEqual(O.errorPlan({ code: "not_found", frame: "read" }, null), { action: "stop", reason: "not-found" });
});
