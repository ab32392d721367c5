"""HTTP middleware: which node answered, and a database outage answered 503.

``served_by_middleware`` adds ``X-Served-By: <SERVER_ID>`` to every HTTP response, so that behind
the load balancer ``curl -i`` shows which node served a request (pages show it in the footer).
At ``DEBUG`` level (``LOG_LEVEL=DEBUG``) it also logs one line per request on the logger
``chatsite.request`` with the client address and scheme the app sees, i.e. after
``chatsite.proxy.TrustedProxyMiddleware`` applied a trusted proxy's ``X-Forwarded-*`` headers.

``DatabaseUnavailableMiddleware`` answers a view that failed because PostgreSQL cannot be
reached, hangs or dropped the connection with 503 and ``Retry-After`` (``unavailable_response``:
JSON ``{"detail", "code": "unavailable"}`` under ``/api/`` or when the client does not ask for
HTML, else a short HTML page), instead of Django's HTML 500 page; the REST API's exception
handler (``rooms.api.exception_handler``) answers the same for DRF views.
"""

import logging

import psycopg
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.db import Error as DjangoDatabaseError
from django.http import HttpResponse, JsonResponse
from psycopg_pool import PoolTimeout
from django.utils.decorators import sync_and_async_middleware
from django.utils.deprecation import MiddlewareMixin

request_log = logging.getLogger("chatsite.request")
logger = logging.getLogger(__name__)

# What a database outage raises in a view: Django's errors (Error, the base of InterfaceError
# "connection already closed" as well as DatabaseError), psycopg's, the pool's timeout.
DATABASE_ERRORS = (DjangoDatabaseError, psycopg.Error, PoolTimeout)
RETRY_AFTER = 5  # seconds, in Retry-After of a 503 for a database outage
UNAVAILABLE_DETAIL = "The service cannot reach its database right now; try again shortly."


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


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be used now (unreachable, hung past
    ``DATABASE_STATEMENT_TIMEOUT``, connection lost), as opposed to a bug. IntegrityError and
    ProgrammingError are bugs or races with answers of their own, not outages."""
    from django.db import DataError, IntegrityError, ProgrammingError

    if isinstance(exc, (IntegrityError, ProgrammingError, DataError, psycopg.IntegrityError,
                        psycopg.ProgrammingError, psycopg.DataError)):
        return False
    return isinstance(exc, DATABASE_ERRORS)


def unavailable_response(request) -> HttpResponse:
    """503 with ``Retry-After``: JSON ``{"detail": str, "code": "unavailable"}`` for the API and
    any client that does not ask for HTML, a short HTML page (no template, nothing that could
    need the database) for browsers."""
    wants_html = "text/html" in request.headers.get("Accept", "") and not request.path.startswith("/api/")
    if wants_html:
        response = HttpResponse(
            "<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1>"
            f"<p>{UNAVAILABLE_DETAIL}</p>", status=503, content_type="text/html; charset=utf-8")
    else:
        response = JsonResponse({"detail": UNAVAILABLE_DETAIL, "code": "unavailable"}, status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view that raised a database outage (``is_database_outage``) is answered by
    ``unavailable_response`` (503), logged as one warning line instead of a traceback."""

    def process_exception(self, request, exception):
        if not is_database_outage(exception):
            return None
        logger.warning("%s %s: database unavailable: %s", request.method, request.path,
                       str(exception).strip()[:300])
        return unavailable_response(request)
