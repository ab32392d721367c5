"""chatsite's own settings plus one route that fails (``/test-error/``), for the Sentry test of
tests/test_operators.py: a real node started with DJANGO_SETTINGS_MODULE=tests.error_settings."""

from chatsite.settings import *  # noqa: F403

ROOT_URLCONF = "tests.error_urls"
