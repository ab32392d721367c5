"""Error tracking: Sentry, when ``SENTRY_DSN`` is set (sentry-sdk with its Django integration).

``init()`` is called once from chatsite/settings.py. Without ``SENTRY_DSN`` nothing is imported or
initialised. With it, unhandled exceptions in views (500s), error-level log records (an exception
inside a consumer, daphne's "Exception inside application") are sent to the DSN, tagged with the
node (``server_name`` = ``SERVER_ID``) and, where known, the request or socket id, user id and
room of chatsite/logcontext.py (the same values as in the JSON logs). No personal data by default
(``send_default_pii`` off; the user is sent as its id only); performance tracing is off unless
``SENTRY_TRACES_SAMPLE_RATE`` is set.
"""


def _tag_context(event, hint):
    from chatsite import logcontext

    tags = event.setdefault("tags", {})
    for name in ("request_id", "socket_id", "room"):
        value = getattr(logcontext, name).get()
        if value is not None:
            tags[name] = value
    uid = logcontext.current_user_id()
    if uid is not None:
        event.setdefault("user", {})["id"] = str(uid)
    return event


def init(*, dsn: str, server_id: str, environment: str, traces_sample_rate: float) -> bool:
    """Start the SDK when ``dsn`` is not empty; returns whether it did."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration()],
        server_name=server_id,
        environment=environment,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,
        before_send=_tag_context,
    )
    return True
