"""The page scripts' catalog version: ``base.html`` loads ``/jsi18n/?lang=<code>&v=<version>``
(``rooms.views.ScriptCatalogView``), so the catalog can be cached for a year and a deploy whose
strings changed gets a new URL."""

import functools
import hashlib
from pathlib import Path

from django.conf import settings


@functools.cache
def script_catalog_version() -> str:
    """12 hex digits of the SHA-256 of every compiled ``djangojs.mo`` under ``LOCALE_PATHS``
    (read once per process: the files change only with a deploy)."""
    digest = hashlib.sha256()
    for root in settings.LOCALE_PATHS:
        for mo in sorted(Path(root).glob("*/LC_MESSAGES/djangojs.mo")):
            digest.update(str(mo.relative_to(root)).encode())
            digest.update(mo.read_bytes())
    return digest.hexdigest()[:12]


def context(request) -> dict:
    """Adds ``script_catalog_version`` to every template context."""
    return {"script_catalog_version": script_catalog_version()}
