"""Test data made through the real models and services."""

from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from rest_framework.authtoken.models import Token

from rooms import services
from rooms.models import Room

PASSWORD = "correct-horse-battery-staple"


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


def make_room(
    *, created_by, slug: str, name: str = "", description: str = "", is_private: bool = False
) -> Room:
    return services.room_create(
        name=name or slug, slug=slug, description=description, created_by=created_by, is_private=is_private
    )


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def session_key_for(user, *, expiry: int | None = None) -> str:
    """A stored, signed-in session of ``user`` (as after a log-in), its key for the cookie."""
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    if expiry is not None:
        session.set_expiry(expiry)
    session.save()
    return session.session_key
