from django.conf import settings


def server(request):
    """Adds ``server_id`` (this node's ``SERVER_ID``) to every template context."""
    return {"server_id": settings.SERVER_ID}
