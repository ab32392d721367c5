from django.conf import settings


def show_node_names(request) -> bool:
    """Whether pages name nodes ("page served by", "via node-3", "connected to node-2"): to staff,
    or to everyone with ``SHOW_NODE_NAMES=1``. Useful to an operator, noise to a user; the
    ``X-Served-By`` header is sent either way."""
    user = getattr(request, "user", None)
    return settings.SHOW_NODE_NAMES or bool(user is not None and user.is_staff)


def server(request):
    """Adds ``server_id`` (this node's ``SERVER_ID``) and ``show_node_names`` to every template
    context."""
    return {"server_id": settings.SERVER_ID, "show_node_names": show_node_names(request)}
