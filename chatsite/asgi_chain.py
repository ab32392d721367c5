"""ASGI wrappers that hand a socket on to the next application without staying under it.

Why: an ``async def __call__`` that ends in ``return await self.app(scope, receive, send)``
stays suspended for as long as the application it called runs: for a WebSocket, the socket's
whole life. Each such wrapper kept its coroutine frame, its locals (a copy of the scope, often)
and its closures per idle socket; chatsite's socket route had fifteen of them, about 6 KB per
idle socket (``python -m bench.socket_memory --census``, bench/RESULTS.md).

How: a wrapper whose own work is synchronous is a plain ``__call__`` that does that work and
*returns* the next application's awaitable (``return self.app(scope, receive, send)``); the
caller awaits it, so nothing of the wrapper is left once the inner application starts. ASGI
allows this: an application is any callable returning an awaitable; ``_asgi_single_callable``
tells asgiref and daphne that it takes ``(scope, receive, send)`` in one call
(``asgiref.compatibility.is_double_callable`` would otherwise take a class instance with a
plain ``__call__`` for an ASGI 2 application).

A consequence: such a wrapper runs where the application is *called*, before the task that
awaits it is made (daphne's ``create_application``, asgiref's ``ApplicationCommunicator``), unless
an ``async`` wrapper above it calls it from its own body. Work that must run inside the
socket's task (setting context variables, ``chatsite.logcontext.SocketContext``) sits below one
(``rooms.auth.SocketAuth``).

This module holds channels' two routers in that form, and ``consumer_app``, channels'
``as_asgi`` without its own coroutine.
"""

from channels.routing import ProtocolTypeRouter as ChannelsProtocolTypeRouter
from channels.routing import URLRouter as ChannelsURLRouter
from django.urls.exceptions import Resolver404


async def _raise(error: Exception) -> None:
    raise error


class ProtocolTypeRouter(ChannelsProtocolTypeRouter):
    """channels' ``ProtocolTypeRouter`` (``application_mapping``: scope type -> application) that
    returns the application's awaitable instead of awaiting it. An unknown scope type fails as
    channels' does, when awaited: ``ValueError``."""

    _asgi_single_callable = True

    def __call__(self, scope, receive, send):
        application = self.application_mapping.get(scope["type"])
        if application is None:
            return _raise(ValueError(f"No application configured for scope type {scope['type']!r}"))
        return application(scope, receive, send)


class URLRouter(ChannelsURLRouter):
    """channels' ``URLRouter`` (the routes' patterns against ``scope["path"]`` less the
    ``root_path``; ``url_route`` with the match's ``args`` and ``kwargs`` in a copy of the scope)
    that returns the route's awaitable instead of awaiting it. No route: ``ValueError`` when
    awaited; inside another router of this kind, ``Resolver404`` at once, and that router tries
    its next route, as channels' do."""

    _asgi_single_callable = True

    def __call__(self, scope, receive, send):
        path = scope.get("path_remaining", scope.get("path", None))
        if path is None:
            return _raise(ValueError("No 'path' key in connection scope, cannot route URLs"))
        outermost = "path_remaining" not in scope
        if outermost:
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                return _raise(ValueError(f"No route found for path {path!r}."))
            path = path[len(root_path) :]
        path = path.lstrip("/")
        for route in self.routes:
            try:
                match = route.pattern.match(path)
                if match:
                    new_path, args, kwargs = match
                    kwargs.update(route.default_args)
                    outer = scope.get("url_route", {})
                    url_route = {
                        "args": outer.get("args", ()) + args,
                        "kwargs": {**outer.get("kwargs", {}), **kwargs},
                    }
                    return route.callback(
                        dict(scope, path_remaining=new_path, url_route=url_route), receive, send
                    )
            except Resolver404:  # a router of this kind inside found nothing: the next route
                continue
        if outermost:
            return _raise(ValueError(f"No route found for path {path!r}."))
        raise Resolver404(f"No route found for path {path!r}.")


def consumer_app(consumer_class, **initkwargs):
    """channels' ``consumer_class.as_asgi(**initkwargs)``: an ASGI application making one
    consumer per connection, returning the consumer's own coroutine (channels' wraps it in one
    more). Carries ``consumer_class`` and ``consumer_initkwargs`` as channels' does."""

    def app(scope, receive, send):
        return consumer_class(**initkwargs)(scope, receive, send)

    app.consumer_class = consumer_class
    app.consumer_initkwargs = initkwargs
    app._asgi_single_callable = True
    app.__name__ = app.__qualname__ = consumer_class.__name__
    app.__doc__ = consumer_class.__doc__
    return app
