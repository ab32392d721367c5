from django.urls import re_path

from chatsite.asgi_chain import consumer_app
from chatsite.logcontext import SocketContext

from . import consumers
from .user_consumer import UserConsumer

websocket_urlpatterns = [
    # Any text up to the next "/" reaches the consumer, which answers an unknown or malformed
    # slug with close 4404; every other path is closed with 4404 too, never an error.
    # SocketContext: the socket's id, user and room on every log line of the consumer.
    re_path(r"^ws/rooms/(?P<slug>[^/]*)/$", SocketContext(consumer_app(consumers.RoomConsumer))),
    # The user socket: the sidebar of all of the user's rooms (rooms.user_consumer).
    re_path(r"^ws/user/$", SocketContext(consumer_app(UserConsumer))),
    re_path(r"", consumer_app(consumers.NotFoundConsumer)),
]
