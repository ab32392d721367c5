from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _lower(text):
    return None if text is None else text.lower()


def add_sqlite_functions(sender, connection, **kwargs) -> None:
    """On every new SQLite connection, ``chatsite_lower(text)``: ``str.lower`` of the text
    (NULL stays NULL). SQLite's own ``lower()`` and ``LIKE`` fold ASCII letters only; search
    uses this one so that matching ignores case for every script, as under PostgreSQL
    (``rooms.search._match``)."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("chatsite_lower", 1, _lower, deterministic=True)


class RoomsConfig(AppConfig):
    """Rooms, messages and the real-time consumer that carries them."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "rooms"

    def ready(self) -> None:
        connection_created.connect(add_sqlite_functions, dispatch_uid="rooms.sqlite_functions")
