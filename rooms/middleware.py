"""HTTP middleware: which node answered, and the browser-hardening headers.

``served_by_middleware`` adds ``X-Served-By: <SERVER_ID>`` to every HTTP response, so that behind
the load balancer ``curl -i`` shows which node served a request (pages name it to staff only).
At ``DEBUG`` level (``LOG_LEVEL=DEBUG``) it also logs one line per request on the logger
``chatsite.request`` with the client address and scheme the app sees, i.e. after
``chatsite.proxy.TrustedProxyMiddleware`` applied a trusted proxy's ``X-Forwarded-*`` headers.

``ContentSecurityPolicyMiddleware`` (django-csp's, see ``CONTENT_SECURITY_POLICY`` in
``chatsite.settings``) adds the page's own WebSocket origin to ``connect-src`` and gives the
HTML pages under ``/api/`` the inline styles they need; ``permissions_policy_middleware`` sends
``Permissions-Policy: <PERMISSIONS_POLICY>``.
"""

import logging

from asgiref.sync import iscoroutinefunction
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.utils.decorators import sync_and_async_middleware

request_log = logging.getLogger("chatsite.request")


def _served_by(request, response):
    response["X-Served-By"] = settings.SERVER_ID
    if request_log.isEnabledFor(logging.DEBUG):
        request_log.debug(
            "%s %s %s client=%s scheme=%s",
            request.method,
            request.path,
            response.status_code,
            request.META.get("REMOTE_ADDR"),
            request.scheme,
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


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's ``CSPMiddleware`` with two additions per response:

    - ``connect-src`` also names this page's own WebSocket origin, ``wss://<host>`` over HTTPS and
      ``ws://<host>`` otherwise (``'self'`` covers it in CSP 3 browsers; older ones need it named).
      The host is the request's, already checked against ``ALLOWED_HOSTS``.
    - An HTML answer under ``/api/`` (Swagger UI at ``/api/docs/``; DRF's browsable pages with
      ``DEBUG``) may use inline styles (``style-src 'unsafe-inline'``), which those pages are
      built with. Their scripts still come from this origin only.

    Under daphne it works on the event loop: building the header is a few string operations, so
    it skips ``MiddlewareMixin``'s two hops per request to the thread that database calls share.
    """

    async def __acall__(self, request):
        self.process_request(request)
        response = await self.get_response(request)
        return self.process_response(request, response)

    def get_policy_parts(self, request, response, report_only=False):
        parts = super().get_policy_parts(request, response, report_only=report_only)
        if report_only:
            return parts
        update = dict(parts.update or {})
        try:
            host = request.get_host()
        except DisallowedHost:
            host = None
        if host:
            scheme = "wss" if request.is_secure() else "ws"
            update["connect-src"] = [*update.get("connect-src", ()), f"{scheme}://{host}"]
        if request.path.startswith("/api/") and response.get("Content-Type", "").startswith("text/html"):
            update["style-src"] = [*update.get("style-src", ()), "'unsafe-inline'"]
        parts.update = update
        return parts


def _permissions_policy(response):
    if settings.PERMISSIONS_POLICY and "Permissions-Policy" not in response:
        response["Permissions-Policy"] = settings.PERMISSIONS_POLICY
    return response


@sync_and_async_middleware
def permissions_policy_middleware(get_response):
    """``Permissions-Policy: <settings.PERMISSIONS_POLICY>`` on every answer that has none."""
    if iscoroutinefunction(get_response):

        async def middleware(request):
            return _permissions_policy(await get_response(request))
    else:

        def middleware(request):
            return _permissions_policy(get_response(request))

    return middleware
