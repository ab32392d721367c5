"""The outside programs some test groups need, found once; ``make test`` names what it will skip.

- nginx (Debian's package): tests/test_cluster.py's balancer tests and every browser test.
- Chromium (``CHROMIUM``, default Debian's ``/usr/bin/chromium``): tests/test_browser.py.

Without one, its tests are skipped, and the run says so loudly: in pytest's header, before the
first test, and again in a warning after the summary (tests/conftest.py). Under ``CI=true`` a
missing one is an error at the start of the run instead: CI never skips them.
"""

import os
import shutil

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")

CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.access(CHROMIUM, os.X_OK)

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
)
NGINX_REASON = "nginx is not installed (Debian's package: `apt-get install nginx`; .ci/run installs it)"
CHROMIUM_REASON = (
    f"Chromium is not at {CHROMIUM} (Debian's package: `apt-get install chromium`, "
    "or set CHROMIUM=/path/to/chromium; .ci/run installs it)"
)


def skipped_groups() -> list[tuple[str, str]]:
    """``(group, reason)`` for each group of tests this machine cannot run."""
    groups = []
    if NGINX is None:
        groups.append(
            ("cluster tests behind nginx (tests/test_cluster.py, the real-cluster ones)", NGINX_REASON)
        )
    if not HAVE_CHROMIUM or NGINX is None:
        groups.append(
            ("browser tests (tests/test_browser.py)", CHROMIUM_REASON if not HAVE_CHROMIUM else NGINX_REASON)
        )
    return groups
