"""HTTP middleware: which node answered.

``served_by_middleware`` adds ``X-Served-By: <SERVER_ID>`` to every HTTP response, so that behind
the load balancer ``curl -i`` shows which node served a request (pages name it to staff only).
At ``DEBUG`` level (``LOG_LEVEL=DEBUG``) it also logs one line per request on the logger
``chatsite.request`` with the client address and scheme the app sees, i.e. after
``chatsite.proxy.TrustedProxyMiddleware`` applied a trusted proxy's ``X-Forwarded-*`` headers.
"""

import logging

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.utils.decorators import sync_and_async_middleware

request_log = logging.getLogger("chatsite.request")


def _served_by(request, response):
    response["X-Served-By"] = settings.SERVER_ID
    if request_log.isEnabledFor(logging.DEBUG):
        request_log.debug(
            "%s %s %s client=%s scheme=%s", request.method, request.path, response.status_code,
            request.META.get("REMOTE_ADDR"), request.scheme,
        )
    return response


@sync_and_async_middleware
def served_by_middleware(get_response):
    """Async under daphne (no thread hop), sync under WSGI or the test client."""
    if iscoroutinefunction(get_response):
        async def middleware(request):
            return _served_by(request, await get_response(request))
    else:
        def middleware(request):
            return _served_by(request, get_response(request))
    return middleware
