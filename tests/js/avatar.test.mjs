// The room page's generated avatars (static/rooms/room/avatar.js) under Node's test runner.
import test from "node:test";
import assert from "node:assert/strict";
import { avatarOf, hueOf, initialsOf, nameOf } from "../../static/rooms/room/avatar.js";

test("initials: two words give two letters, one word one, from the display name before the username", () => {
  assert.equal(initialsOf("Alice Kim"), "AK");
  assert.equal(initialsOf("alice"), "A");
  assert.equal(initialsOf("alice.kim"), "AK");
  assert.equal(initialsOf("  mary   ann  lee "), "MA");
  assert.equal(initialsOf("김민수"), "김");
  assert.equal(initialsOf("김 민수"), "김민");
  assert.equal(initialsOf("E\u0301lodie"), "E\u0301"); // a combining accent stays with its letter
  assert.equal(initialsOf("👩‍💻 dev"), "👩‍💻D");
  assert.equal(initialsOf(""), "?");
  assert.equal(initialsOf("<img src=x>"), "IS"); // punctuation is not a letter
  assert.equal(initialsOf("(Bob)"), "B");
  assert.equal(initialsOf("!!!"), "?");
  assert.deepEqual(avatarOf({ id: 7, username: "alice", display_name: "Alice Kim" }).initials, "AK");
  assert.deepEqual(avatarOf({ id: 7, username: "alice", display_name: "" }).initials, "A");
  assert.equal(nameOf({ id: 7, username: "alice", display_name: " " }), "alice");
  assert.equal(nameOf({ id: 7, username: "alice", display_name: "Alice" }), "Alice");
});

test("hue: stable per id, in range, and neighbours differ", () => {
  assert.equal(hueOf(7), hueOf(7));
  for (let id = 0; id < 1000; id++) {
    const h = hueOf(id);
    assert.ok(h >= 0 && h < 360, String(h));
    assert.ok(Math.abs(hueOf(id + 1) - h) > 20, `${id}: ${h} vs ${hueOf(id + 1)}`);
  }
  assert.equal(hueOf(undefined), 0);
});
