"""The REST API's request side, as ``REST_FRAMEWORK`` in settings names it: the JSON parser and
the session authentication, each refusing with a ``code`` (``rooms.api.exception_handler`` puts
it in the body beside ``detail``).

- ``JSONParser``: a body that is not JSON (DRF's ``ParseError``), and one nested deeper than
  Python's decoder goes (thousands of ``[`` or ``{``: a ``RecursionError``, which would otherwise
  be an HTML 500 and a logged traceback), answer 400 ``{"detail": str, "code":
  "invalid_json"}``, the code the WebSocket gives a frame that is not JSON.
- ``MultiPartParser``: a multipart body that cannot be parsed (no boundary, a cut-off or
  malformed part: DRF's ``ParseError``) answers 400 ``{"detail": str, "code":
  "invalid_multipart"}``.
- ``SessionAuthentication``: a session request of an unsafe method without its CSRF token
  answers 403 ``{"detail": "CSRF Failed: ...", "code": "csrf_failed"}``.

This module imports no DRF view: settings load it while ``rest_framework.views`` is imported.
"""

from rest_framework import authentication, exceptions, parsers


class InvalidJSON(exceptions.ParseError):
    """400: the request body is not JSON, or nests too deeply to decode."""

    default_code = "invalid_json"


class InvalidMultipart(exceptions.ParseError):
    """400: the multipart body cannot be parsed."""

    default_code = "invalid_multipart"


class CsrfFailed(exceptions.PermissionDenied):
    """403: a session request of an unsafe method without its CSRF token."""

    default_code = "csrf_failed"


# Refusals whose ``default_code`` the exception handler adds to the body as ``code``.
CODED_REFUSALS = (InvalidJSON, InvalidMultipart, CsrfFailed)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser; every body it cannot decode is ``InvalidJSON`` (400 ``invalid_json``),
    a too-deep one included. Called by DRF when a view first reads ``request.data``."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except exceptions.ParseError as exc:
            raise InvalidJSON(str(exc.detail)) from None
        except RecursionError:
            raise InvalidJSON("JSON parse error - the document is nested too deeply.") from None


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser; a body it cannot parse is ``InvalidMultipart`` (400
    ``invalid_multipart``). Django's limits (``DATA_UPLOAD_MAX_NUMBER_FIELDS`` and ``_FILES``)
    still raise their own errors, answered by ``rooms.api.exception_handler``."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except exceptions.ParseError as exc:
            raise InvalidMultipart(str(exc.detail)) from None


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication; a missing or wrong CSRF token is ``CsrfFailed`` (403
    ``csrf_failed``)."""

    def enforce_csrf(self, request):
        try:
            super().enforce_csrf(request)
        except exceptions.PermissionDenied as exc:
            raise CsrfFailed(str(exc.detail)) from None
