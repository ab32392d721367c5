"""The OpenAPI schema of the REST API (drf-spectacular; ``/api/schema/``): every status an
operation really answers is documented, each with its body.

Error bodies (``rooms.api.exception_handler``):

- ``Error``: ``{"detail": str, "code": str?, ...}``. ``code`` is sent for refusals by the rules
  (``forbidden``, ``banned``, ``muted``, ``archived``, ``conflict``, ``rate_limited``,
  ``too_large``, ``too_many_fields``, ``unavailable``, ...) and may carry more fields
  (``until`` for ``muted``, ``retry_after`` for ``rate_limited``, ``id`` and ``seq`` for a
  ``conflict`` over a reused ``client_msg_id``); every 429 is ``rate_limited`` with
  ``retry_after``, DRF's throttles' too; a session request without its CSRF token is 403
  ``csrf_failed``; DRF's other refusals (401, 406, 415) send ``detail`` alone; every 404 is
  ``{"detail": "Not found.", "code": "not_found"}``.
- ``ValidationError`` (400): field errors ``{"<field>" | "non_field_errors": [str, ...]}``, or an
  ``Error`` (``too_many_fields``; ``invalid_json``: a body that is not JSON or nests too deeply;
  ``invalid_multipart``: an upload's body that cannot be parsed).

Which statuses each operation documents, besides the ones its view declares with
``extend_schema(responses=...)`` (a declared ``4xx: None`` gets its error body here):

- 401 on every authenticated operation (``WWW-Authenticate: Token``);
- 403 on every authenticated unsafe method (a session request without its CSRF token:
  ``csrf_failed``);
- 404 on every operation with a path parameter (unknown room, message or member; a private
  room one is not in answers the same);
- 400 on every operation: field errors of a body or query, or ``too_many_fields`` (a query
  string, or form body, of over ``DATA_UPLOAD_MAX_NUMBER_FIELDS``, 1,000, fields: any route);
- 406 on every operation: an ``Accept`` header that JSON does not satisfy;
- 413 and 415 on every operation that reads a body (over ``DATA_UPLOAD_MAX_MEMORY_SIZE``; a
  media type the API does not read). Bodies are documented as JSON only (``PARSER_WHITELIST``
  in settings).
- 429 (``Retry-After``) on every throttled operation (those whose view has throttles);
- 503 on every operation: the database (or another service the answer needs) is unavailable.
"""

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

ERROR_DESCRIPTIONS = {
    "400": "Invalid input: field errors, or an `Error` (`invalid_json`: a body that is not JSON, or "
    "nests too deeply; `invalid_multipart`: an upload's multipart body that cannot be parsed; `too_many_fields`: over 1,000 query or form fields; `dm_self`: a direct message with yourself; `slug_unavailable`: a room's slug is taken, "
    "in any case, or reserved, with the `slug` field error beside it).",
    "401": "No credentials, or invalid ones (unknown or revoked token, deactivated user).",
    "403": "Refused by the rules (`code`: `forbidden`, `banned`, `muted`, `dms_off`, ...), or a session "
    "request without its CSRF token (`csrf_failed`).",
    "404": 'Not found: always `{"detail": "Not found.", "code": "not_found"}`, for a room, message, '
    "member or user (a private room one is not in answers the same) or a path no route answers.",
    "409": "Conflicts with the current state (`code`: `archived`, `conflict`).",
    "406": "The `Accept` header does not allow JSON.",
    "413": "The request body is over the upload limit (`code`: `too_large`).",
    "415": "A request body of a media type the API does not read (send JSON).",
    "429": "Too many requests (`code`: `rate_limited`; `retry_after` and `Retry-After`: seconds to wait).",
    "503": "A service the answer needs (the database) is unavailable: try again later.",
}


class CsrfSessionScheme(SessionScheme):
    """The session cookie (``cookieAuth``), as drf-spectacular documents DRF's session
    authentication, for ours (``rooms.rest.SessionAuthentication``: 403 ``csrf_failed``)."""

    target_class = "rooms.rest.SessionAuthentication"


class ErrorSerializer(serializers.Serializer):
    """An error: ``detail`` always, ``code`` for refusals by the rules, and for some codes more
    fields (``until`` for ``muted``; ``retry_after`` for ``rate_limited``; ``id`` and ``seq``
    of the stored message for a ``conflict`` over a reused ``client_msg_id``)."""

    detail = serializers.CharField(help_text="What went wrong, for people.")
    code = serializers.CharField(
        required=False,
        help_text="For programs: `forbidden`, `banned`, "
        "`muted`, `archived`, `conflict`, `rate_limited`, `too_large`, ...",
    )
    until = serializers.DateTimeField(required=False, help_text="`muted`: the end of the mute.")
    retry_after = serializers.FloatField(required=False, help_text="`rate_limited`: seconds to wait.")
    id = serializers.IntegerField(required=False, help_text="`conflict`: the stored message's id.")
    seq = serializers.IntegerField(required=False, help_text="`conflict`: the stored message's seq.")


def _validation_error_schema(error_ref: dict) -> dict:
    field_errors = {
        "type": "object",
        "description": 'Field errors: `{"<field>": [str, ...]}`; errors of the whole input under '
        "`non_field_errors`.",
        "additionalProperties": {"type": "array", "items": {"type": "string"}},
    }
    return {"anyOf": [field_errors, error_ref]}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema, plus the error statuses every operation really answers (see the
    module docstring) with their bodies and headers."""

    def _error_statuses(self) -> set[str]:
        codes = {"400", "406", "503"}
        authenticated = bool(self.get_auth())
        if authenticated:
            codes.add("401")
        if authenticated and self.method not in SAFE_METHODS:
            codes.add("403")
        if "{" in self.path:
            codes.add("404")
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            codes.update(("413", "415"))
        try:
            throttled = bool(self.view.get_throttles())
        except Exception:  # a view whose throttles need a real request: look at the class
            throttled = bool(getattr(self.view, "throttle_classes", None))
        if throttled:
            codes.add("429")
        return codes

    def _default_success(self, declared) -> dict:
        if self.method == "DELETE":
            return {"204": None}
        return {"201" if self._is_create_operation() else "200": declared}

    def _get_response_bodies(self, direction="response"):
        declared = self.get_response_serializers()
        if not isinstance(declared, dict):
            declared = self._default_success(declared)
        # (status, media type) keys: a body of another type than JSON (a file download).
        media = {str(code[0]): code[1] for code in declared if isinstance(code, tuple)}
        declared = {
            str(code[0] if isinstance(code, tuple) else code): value for code, value in declared.items()
        }
        for code in self._error_statuses():
            declared.setdefault(code, None)

        error_ref = self.resolve_serializer(ErrorSerializer, "response").ref
        responses = {}
        for code, serializer in sorted(declared.items()):
            if code >= "400" and serializer is None:
                description = ERROR_DESCRIPTIONS.get(code, "")
                schema = self._validation_error() if code == "400" else error_ref
                serializer = OpenApiResponse(schema, description=description)
            if code in media:
                responses[code] = self._get_response_for_code(
                    serializer, code, media_types=[media[code]], direction=direction
                )
            else:
                responses[code] = self._get_response_for_code(serializer, code, direction=direction)
            if code in self._HEADERS:
                responses[code].setdefault("headers", {}).update(self._HEADERS[code])
        return responses

    _HEADERS = {
        "401": {
            "WWW-Authenticate": {
                "schema": {"type": "string"},
                "description": "`Token`: the scheme to authenticate with.",
            }
        },
        "429": {
            "Retry-After": {
                "schema": {"type": "integer", "minimum": 0},
                "description": "Seconds to wait before trying again.",
            }
        },
    }

    def _validation_error(self) -> dict:
        component = ResolvedComponent(
            name="ValidationError",
            type=ResolvedComponent.SCHEMA,
            object="ValidationError",
            schema=_validation_error_schema(self.resolve_serializer(ErrorSerializer, "response").ref),
        )
        self.registry.register_on_missing(component)
        return component.ref
