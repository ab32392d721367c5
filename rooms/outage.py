"""A database outage answered 503, never Django's HTML 500 page.

``DatabaseUnavailableMiddleware`` answers a view that failed because PostgreSQL cannot be
reached, hangs past ``DATABASE_STATEMENT_TIMEOUT`` or dropped the connection
(``is_database_outage``) with 503 and ``Retry-After`` (``unavailable_response``: JSON
``{"detail": str, "code": "unavailable"}`` under ``/api/`` or when the client does not ask for
HTML, else a short HTML page). The REST API's exception handler (``rooms.api.exception_handler``)
answers the same for DRF views, which handle their own exceptions.
"""

import logging

import psycopg
from django.db import DataError, IntegrityError, ProgrammingError
from django.db import Error as DjangoDatabaseError
from django.http import HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.translation import get_language, gettext, gettext_noop
from psycopg_pool import PoolTimeout

logger = logging.getLogger(__name__)

# What a database outage raises in a view: Django's errors (Error, the base of InterfaceError
# "connection already closed" as well as DatabaseError), psycopg's, the pool's timeout.
DATABASE_ERRORS = (DjangoDatabaseError, psycopg.Error, PoolTimeout)
# Bugs or races with answers of their own, not outages.
_NOT_OUTAGES = (
    IntegrityError,
    ProgrammingError,
    DataError,
    psycopg.IntegrityError,
    psycopg.ProgrammingError,
    psycopg.DataError,
)
RETRY_AFTER = 5  # seconds, in Retry-After of a 503 for a database outage
UNAVAILABLE_DETAIL = gettext_noop("The service cannot reach its database right now; try again shortly.")


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be used now (unreachable, hung past
    ``DATABASE_STATEMENT_TIMEOUT``, connection lost), as opposed to a bug."""
    return isinstance(exc, DATABASE_ERRORS) and not isinstance(exc, _NOT_OUTAGES)


def log_outage(request, exc: BaseException) -> None:
    logger.warning("%s %s: database unavailable: %s", request.method, request.path, str(exc).strip()[:300])


def unavailable_response(request) -> HttpResponse:
    """503 with ``Retry-After``: JSON ``{"detail": str, "code": "unavailable"}`` for the API and
    any client that does not ask for HTML, a short HTML page (no template, nothing that could
    need the database) for browsers."""
    if "text/html" in request.headers.get("Accept", "") and not request.path.startswith("/api/"):
        title = gettext("Service unavailable")
        response = HttpResponse(
            f"<!doctype html><html lang={get_language()}><title>{title}</title><h1>{title}</h1>"
            f"<p>{gettext(UNAVAILABLE_DETAIL)}</p>",
            status=503,
            content_type="text/html; charset=utf-8",
        )
    else:
        response = JsonResponse({"detail": gettext(UNAVAILABLE_DETAIL), "code": "unavailable"}, status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view that raised a database outage is answered by ``unavailable_response`` (503),
    logged as one warning line instead of a traceback."""

    def process_exception(self, request, exception):
        if not is_database_outage(exception):
            return None
        log_outage(request, exception)
        return unavailable_response(request)
