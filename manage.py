#!/usr/bin/env python
"""Django's command-line utility for administrative tasks.

Additions to Django's own:

- The migration commands that only read the code (``makemigrations``, ``showmigrations``,
  ``sqlmigrate``, ``squashmigrations``) run without ``SECRET_KEY`` and ``DEBUG``: they sign
  nothing, so a throwaway key is set for them. ``makemigrations --check`` on a fresh checkout
  then says "No changes detected" instead of failing.
- Any other command stops with the settings' own ``ImproperlyConfigured`` message (e.g.
  "SECRET_KEY is not set …"). Django's ``execute_from_command_line`` swallows a settings error
  and goes on without setting up the apps, so the command failed later with an unrelated
  ``AppRegistryNotReady: Models aren't loaded yet``.
- Commands other than ``runserver`` run without a statement time limit
  (``DATABASE_STATEMENT_TIMEOUT`` defaults to 0 for them), so a long migration is not cancelled.
"""

import os
import secrets
import sys

OFFLINE_COMMANDS = {"makemigrations", "showmigrations", "sqlmigrate", "squashmigrations"}


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    if len(sys.argv) > 1 and sys.argv[1] in OFFLINE_COMMANDS and not os.environ.get("DEBUG"):
        os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    if len(sys.argv) > 1 and sys.argv[1] != "runserver":
        os.environ.setdefault("DATABASE_STATEMENT_TIMEOUT", "0")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    if len(sys.argv) > 1 and sys.argv[1] not in ("help", "--help", "-h", "version", "--version"):
        settings.INSTALLED_APPS  # noqa: B018 (loads the settings: their own error, not a later one)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
