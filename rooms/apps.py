from django.apps import AppConfig


class RoomsConfig(AppConfig):
    """Rooms, messages and the real-time consumer that carries them."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "rooms"
