"""The room page's pure timeline logic (static/rooms/timeline.js: merge by seq, date dividers,
groups, the "New messages" divider) under Node's test runner (tests/js/timeline.test.js), in a
time zone with a daylight-saving change. Skipped without ``node``."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(NODE is None, reason="node is missing (Debian's package: `apt-get install nodejs`)")
@pytest.mark.parametrize("tz", ["Europe/Berlin", "UTC", "Pacific/Auckland"])
def test_timeline_logic_merges_by_seq_and_places_dividers_and_groups(tz):
    result = subprocess.run(
        [NODE, "--test", str(ROOT / "tests" / "js")],
        env={**os.environ, "TZ": tz}, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout, result.stdout[-4000:]
