"""The session engine (``SESSION_ENGINE = "chatsite.sessions"``): Django's database sessions,
with only keys of the shape Django makes looked up.

Why: a session cookie is the client's to write. Django's database store looks up any key of 8
characters or more, and one with a NUL character (``sessionid="abcdefgh\\000ijkl"``: the
cookie parser decodes the escape) makes PostgreSQL refuse the statement (``DataError``): an HTTP
500 on every page, and on a socket a refusal as if the database were down (4503 instead of 4401).
"""

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionStore(DatabaseSessionStore):
    """Django's ``db`` session store; a key that is not ASCII letters and digits (Django makes
    32 lowercase letters and digits) is no key: an empty, anonymous session, never a query."""

    def _validate_session_key(self, key):
        return super()._validate_session_key(key) and key.isascii() and key.isalnum()
