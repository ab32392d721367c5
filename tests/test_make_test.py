"""What ``make test`` says about itself (tests/tools.py, tests/conftest.py): the groups it will skip
are named at the start and again at the end, and under CI=true a missing tool fails the run.
Each case runs pytest in a subprocess on one browser test with CHROMIUM pointing nowhere."""

import os
import subprocess
import sys

from tests.nodes import BASE_DIR


def _pytest(**env):
    full = {**os.environ, "CHROMIUM": "/nonexistent/chromium", **env}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests/test_browser.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "gap_repair",
        ],
        cwd=BASE_DIR,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_run_without_chromium_names_the_skipped_browser_tests_first_and_last():
    result = _pytest(CI="")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    start = out.index("SKIPPED in this run")
    assert "browser tests (tests/test_browser.py): Chromium is not at /nonexistent/chromium" in out[start:]
    assert start < out.index("[100%]"), "the banner comes before the first test"
    assert "WARNING: 1 tests were skipped" in out[out.index("[100%]") :]


def test_under_ci_a_missing_chromium_fails_the_run_instead_of_skipping():
    result = _pytest(CI="true")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "CI=true and tests would be skipped" in result.stdout + result.stderr
    assert "[100%]" not in result.stdout and "1 skipped" not in result.stdout  # no test ran


def test_chromium_comes_from_the_environment_with_debians_path_by_default():
    probe = "import os; os.environ.pop('CHROMIUM', None); from tests import tools; print(tools.CHROMIUM)"
    default = subprocess.run(
        [sys.executable, "-c", probe], cwd=BASE_DIR, capture_output=True, text=True, check=True
    )
    assert default.stdout.strip() == "/usr/bin/chromium"
    chosen = subprocess.run(
        [sys.executable, "-c", "from tests import tools; print(tools.CHROMIUM)"],
        cwd=BASE_DIR,
        env={**os.environ, "CHROMIUM": "/opt/chromium/chrome"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert chosen.stdout.strip() == "/opt/chromium/chrome"
