"""The room page's pure modules under Node's own test runner (``node --test tests/js/``), in
time zones with and without a daylight-saving change: static/rooms/room/timeline.js (merge by
seq, date dividers, groups, the "New messages" divider; tests/js/timeline.test.mjs),
seq.js (which live seq is shown, held or dropped, catch-up, message versions, backoff;
tests/js/seq.test.mjs) and outbox-rules.js (what an error frame does to a send, the outbox
across reloads; tests/js/outbox.test.mjs). Skipped without ``node``."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(NODE is None, reason="node is missing (Debian's package: `apt-get install nodejs`)")
@pytest.mark.parametrize("tz", ["Europe/Berlin", "UTC", "Pacific/Auckland"])
def test_room_page_pure_modules_pass_their_node_tests(tz):
    result = subprocess.run(
        [NODE, "--test", str(ROOT / "tests" / "js")],
        env={**os.environ, "TZ": tz},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout, result.stdout[-4000:]
