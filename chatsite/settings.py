"""chatsite settings: one module, configured from the environment (12-factor).

Every variable is listed in README.md's configuration table. The ones that shape a deployment:

- ``DATABASE_URL``: unset means a SQLite file ``db.sqlite3`` beside ``manage.py`` (the embedded
  default for a single node); ``postgres://user@host:5432/name`` means PostgreSQL through
  psycopg 3 with Django's connection pool.
- ``REDIS_URL``: set means channels-redis's ``RedisPubSubChannelLayer`` (Redis Pub/Sub carries
  room messages between nodes; a node subscribes only to the rooms it has members in); unset
  means ``InMemoryChannelLayer`` and *no cross-node delivery* (``chatsite.asgi`` logs a warning).
- ``SERVER_ID``: the name of this node, in ``hello`` frames, every message it stores,
  ``/healthz``, ``X-Served-By`` and log lines; pages show it to staff (``SHOW_NODE_NAMES``).
  Default: the host name.
- ``SECRET_KEY``: required unless ``DEBUG`` is on, and refused when it is a placeholder or
  shorter than 50 characters (``ImproperlyConfigured`` at start-up).
- ``ALLOWED_HOSTS``: comma-separated; ``*`` is refused unless ``DEBUG`` is on.
- ``DEBUG``: default off.
"""

import ipaddress
import re
import socket
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from chatsite import redis_config
from chatsite import sentry as _sentry

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# Outside DEBUG a SECRET_KEY must look random: Django's own rule (`check --deploy`, W009: at least
# SECRET_KEY_MIN_LENGTH characters, 5 different ones, no "django-insecure-" prefix) and none of
# the words placeholders are made of (docker/.env.example's "replace-with-a-long-random-string"),
# so a copied example or a typed word stops start-up instead of signing sessions.
SECRET_KEY_MIN_LENGTH = 50
SECRET_KEY_PLACEHOLDER_WORDS = (
    "replace",
    "change-me",
    "changeme",
    "change_me",
    "placeholder",
    "example",
    "insecure",
    "your-secret",
    "your_secret",
    "secret-key",
    "secret_key",
    "secretkey",
)
_MAKE_A_KEY = "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`"


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` may not sign a production site, or None when it may (see above). The message
    never repeats the key."""
    lowered = key.lower()
    word = next((w for w in SECRET_KEY_PLACEHOLDER_WORDS if w in lowered), None)
    if word is not None:
        return f"SECRET_KEY is a placeholder (it contains {word!r})"
    if len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < 5:
        return (
            f"SECRET_KEY is too short or too plain ({len(key)} characters, {len(set(key))} "
            f"different; at least {SECRET_KEY_MIN_LENGTH} and 5)"
        )
    return None


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set. Set it in the environment (a long random string, e.g. "
            f"{_MAKE_A_KEY}), or set DEBUG=1 for a development-only key."
        )
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"
elif not DEBUG and (_problem := secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(f"{_problem}. Set a random one, e.g. {_MAKE_A_KEY}.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
if "*" in ALLOWED_HOSTS and not DEBUG:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS may not contain '*' when DEBUG is off: list the host names this node "
        "answers to (the WebSocket Origin check uses the same list)."
    )
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS=1 when browsers reach the site over TLS (usually ended at the load balancer, which sends
# X-Forwarded-Proto and is listed in TRUSTED_PROXIES): secure cookies, redirect to https, HSTS.
# /healthz and /metrics stay reachable over plain HTTP: the balancer's health check and
# Prometheus scrape each node directly, where no TLS is spoken (a redirect would reach nothing).
HTTPS = env.bool("HTTPS", default=False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
# Django's database sessions, looking up only keys of the shape Django makes (chatsite/sessions.py).
SESSION_ENGINE = "chatsite.sessions"
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS)

SERVER_ID = env.str("SERVER_ID", default="") or socket.gethostname()
# Pages name the node ("page served by", "via node-3", "connected to node-2") to staff only;
# SHOW_NODE_NAMES=1 shows them to everyone (a demo of the cluster). X-Served-By is always sent.
SHOW_NODE_NAMES = env.bool("SHOW_NODE_NAMES", default=False)

# --- Browser hardening ------------------------------------------------------------------------
# Content-Security-Policy (django-csp) on every page: scripts, styles, fonts and connections from
# this origin only, so a script that got into a page (or an inline event handler) does not run.
# Pages carry no inline script (data goes in json_script blocks, which are not executed);
# rooms.middleware.ContentSecurityPolicyMiddleware adds the page's own WebSocket origin
# (ws://host or wss://host) to connect-src, and lets the HTML under /api/ (Swagger UI at
# /api/docs/, served from drf-spectacular-sidecar with its script as a file; DRF's browsable pages
# in DEBUG) use the inline styles they are built with. No framing by anyone (frame-ancestors and
# X-Frame-Options), no Referer to other sites, a window of our own (COOP), no camera and the like.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
PERMISSIONS_POLICY = env.str(
    "PERMISSIONS_POLICY",
    default="camera=(), microphone=(), geolocation=(), payment=(), usb=(), fullscreen=(self)",
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "rooms",
]

MIDDLEWARE = [
    # First, so every response (static files and errors included) says which node answered.
    "rooms.middleware.served_by_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise: pages get a Content-Security-Policy and Permissions-Policy; static files
    # (no documents) need neither.
    "rooms.middleware.ContentSecurityPolicyMiddleware",
    "rooms.middleware.permissions_policy_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # After sessions and before CommonMiddleware (Django's documented place): the page language
    # from the language cookie (the pages' switch, set_language), else Accept-Language.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "chatsite.logcontext.request_context_middleware",  # request id, user id for logs; X-Request-ID
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so its process_exception sees a view's database outage first: 503, not a 500 page.
    "rooms.outage.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "chatsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "rooms.context_processors.server",
                "rooms.i18n.context",
            ],
        },
    },
]

WSGI_APPLICATION = "chatsite.wsgi.application"
ASGI_APPLICATION = "chatsite.asgi.application"

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
# Under ASGI every request and every consumer's database_sync_to_async call may land on another
# thread, so persistent per-thread connections would leak; Django's pool reuses connections instead.
_db["CONN_MAX_AGE"] = 0
# Seconds; 0: no limit (manage.py commands but runserver default to 0: a long migration runs).
DATABASE_STATEMENT_TIMEOUT = env.float("DATABASE_STATEMENT_TIMEOUT", default=1.5)
if _db["ENGINE"] == "django.db.backends.postgresql":
    if env.bool("DATABASE_POOL", default=True):
        _db.setdefault("OPTIONS", {})["pool"] = {
            # psycopg_pool arguments. timeout: seconds to wait for a connection before PoolTimeout
            # (answered as "unavailable"), so a send is answered within 2 s when the database
            # is unreachable (issue 4's bound) instead of hanging.
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=1.5),
        }
    _db.setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=3)
    )
    # Every statement has a time limit (DATABASE_STATEMENT_TIMEOUT): the pools' connections
    # (chatsite/dbconn.py) set PostgreSQL's statement_timeout to it and give up on a round trip
    # not answered within it + 0.25 s, so a hung or silently unreachable server is answered
    # "unavailable" within 2 s instead of holding the node's one ORM thread.
    if isinstance(_db["OPTIONS"].get("pool"), dict):
        from chatsite.dbconn import Connection as _BoundedConnection

        _db["OPTIONS"]["pool"]["connection_class"] = _BoundedConnection
    elif DATABASE_STATEMENT_TIMEOUT > 0:  # DATABASE_POOL=0: PostgreSQL's own limit only
        _options = f"-c statement_timeout={int(DATABASE_STATEMENT_TIMEOUT * 1000)}"
        _db["OPTIONS"]["options"] = " ".join(filter(None, [_db["OPTIONS"].get("options"), _options]))
    _db.setdefault("TEST", {})["NAME"] = env.str("DATABASE_TEST_NAME", default="") or None
elif _db["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so two writers wait for each other instead of
    # failing with "database is locked" when a read lock cannot be upgraded.
    _db.setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ----------------------------------------------------------------------------
# REDIS_URL (one or several hosts, redis:// or rediss:// with REDIS_CA_FILE) or REDIS_SENTINELS
# + REDIS_SENTINEL_MASTER: chatsite/redis_config.py reads them (ImproperlyConfigured when they
# cannot work) and builds the layer's hosts, the cache and the health check from one place.
REDIS = redis_config.from_env(env.ENVIRON)
REDIS_URL = REDIS.url if REDIS else ""  # non-empty whenever Redis is on (Sentinel included)
# The channel layer's channels and the cache's keys start with it. Default: "chatsite", or
# "chatsite-db<N>" when REDIS_URL names database N (Pub/Sub channels ignore the database number:
# redis_config.RedisConfig.default_prefix). Deployments sharing one Redis on one number need their
# own.
CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", default="") or (
    REDIS.default_prefix() if REDIS else "chatsite"
)
if REDIS:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis's RedisPubSubChannelLayer, delivering into consumers directly
            "BACKEND": "chatsite.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": REDIS.channel_layer_hosts(), "prefix": CHANNEL_LAYER_PREFIX},
        }
    }
else:
    # capacity: messages queued per socket before the layer drops (its default of 100 dropped
    # live frames for a member whose consumer was busy sending during a burst).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # group_expiry: the layer's default (1 day) would leave a socket open longer than
            # that deaf to its room; membership ends at disconnect instead.
            "CONFIG": {"capacity": 1000, "group_expiry": 10 * 365 * 86400},
        }
    }

# --- Cache (throttle counters) -------------------------------------------------------------------
if REDIS:
    CACHES = {"default": REDIS.cache(key_prefix=CHANNEL_LAYER_PREFIX)}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "rooms:list"
LOGOUT_REDIRECT_URL = "login"


# A rate, checked at start-up: "<n>/<period>" with an optional multiple ("10/15m"); "0" turns it
# off. The REST throttles below and the log-in pages' limits (further down) take it.
def _window_rate(name: str, default: str) -> str:
    value = env.str(name, default=default)
    if value.strip().lower() not in ("", "0", "off"):
        match = re.fullmatch(r"\s*\d+\s*/\s*(\d*)\s*[smhd][a-z]*\s*", value, re.IGNORECASE)
        if match is None or int(match[1] or 1) == 0:
            raise ImproperlyConfigured(f"{name}: {value!r} is not like '20/min', '10/15m' or '0' (off)")
    return value


REST_FRAMEWORK = {
    # Token first: a request without credentials then gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        # DRF's, refusing a missing CSRF token with 403 "code": "csrf_failed" (rooms/rest.py).
        "rooms.rest.SessionAuthentication",
    ],
    # JSON (any body it cannot decode, too deeply nested included: 400 "code": "invalid_json",
    # rooms/rest.py), DRF's form parser and multipart (a malformed body: 400 "code":
    # "invalid_multipart").
    "DEFAULT_PARSER_CLASSES": [
        "rooms.rest.JSONParser",
        "rest_framework.parsers.FormParser",
        "rooms.rest.MultiPartParser",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # drf-spectacular's, plus every error status an operation answers (rooms/openapi.py).
    "DEFAULT_SCHEMA_CLASS": "rooms.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "rooms.api.exception_handler",
    # JSON only: the browsable HTML API is for development (DEBUG) and /api/docs/ documents it.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    # ?limit=&offset=, limit 1..200 (a larger one is taken as 200), default 50 (rooms/pagination.py).
    "DEFAULT_PAGINATION_CLASS": "rooms.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    # Counted in the cache below: with REDIS_URL, in Redis, so a limit holds across all nodes.
    # Client address for throttles: REMOTE_ADDR only, which chatsite/proxy.py has already set from
    # a trusted balancer's X-Forwarded-For. (DRF's default would believe any X-Forwarded-For.)
    "NUM_PROXIES": 0,
    "DEFAULT_THROTTLE_RATES": {
        "send": _window_rate("THROTTLE_SEND_RATE", "120/min"),
        "login": _window_rate("THROTTLE_LOGIN_RATE", "10/min"),
        "search": _window_rate("THROTTLE_SEARCH_RATE", "60/min"),
        "upload": _window_rate("THROTTLE_UPLOAD_RATE", "30/min"),
    },
}
# Presence (rooms/presence.py): a connection expires PRESENCE_TTL seconds after its node's last
# heartbeat, sent every PRESENCE_HEARTBEAT seconds; a dead node's users go offline within both.
PRESENCE_TTL = env.float("PRESENCE_TTL", default=30)
PRESENCE_HEARTBEAT = env.float("PRESENCE_HEARTBEAT", default=10)
PRESENCE_BATCH = env.float("PRESENCE_BATCH", default=1.0)  # seconds a node collects changes per diff
# Names a presence frame on join and a presence.diff carry at most (the rest: presence.list pages
# of up to PRESENCE_PAGE_MAX); why 50: rooms/presence.py names_limit().
PRESENCE_NAMES = env.int("PRESENCE_NAMES", default=50)
PRESENCE_PAGE_MAX = env.int("PRESENCE_PAGE_MAX", default=200)
# New members one pacing window of a room's member changes sends as rows; more go as their count
# (members.joined; rooms/events.py _MemberUpdates). Each row goes to every socket in the room: at
# 10,000 new members the windows' rows came to every member (n^2/2 rows in all; 159 s for the
# storm, python -m bench join-storm --memberships none), where counts cost one small frame per
# window. 100 is the members panel's page (static/rooms/room/members.js PAGE_SIZE).
MEMBER_ROWS_MAX = env.int("MEMBER_ROWS_MAX", default=100)
# Seconds between two checks of every open socket's access on a node (rooms/access.py): the
# bound for closing a socket whose access ended behind the services' back (a shell update).
ACCESS_RECHECK = env.float("ACCESS_RECHECK", default=10)

# Log-in pages, the token route's accounts and sign-up, counted across all nodes
# (rooms/login_throttle.py): attempts per client address, failed log-ins per account, sign-ups per
# client address (rates as _window_rate reads them).
LOGIN_ADDRESS_RATE = _window_rate("LOGIN_ADDRESS_RATE", "20/min")
LOGIN_ACCOUNT_RATE = _window_rate("LOGIN_ACCOUNT_RATE", "10/15m")
SIGNUP_RATE = _window_rate("SIGNUP_RATE", "20/h")
# Password-reset requests per client address (each may send a mail): rooms.views.PasswordResetView.
PASSWORD_RESET_RATE = _window_rate("PASSWORD_RESET_RATE", "5/h")

# --- E-mail (password reset links) --------------------------------------------------------------
# EMAIL_URL: smtp://user:password@host:587 (smtp+tls://…, smtp+ssl://… for TLS; django-environ's
# email_url), or consolemail:// (the default: mails are written to the node's standard output,
# so a reset link can be read from its log on a machine without a mail server).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="chatsite <noreply@localhost>")

# Characters of message bodies a node stores between two merges of the search indexes' GIN
# pending lists, in a task of its own (rooms/search_index.py); 0 leaves them to PostgreSQL,
# which then merges a full list inside a send.
SEARCH_INDEX_CLEAN_CHARS = env.int("SEARCH_INDEX_CLEAN_CHARS", default=50_000)
# Seconds a merge of the search indexes' pending lists may take (rooms/search_index.py): its own
# limit, off the send path, not DATABASE_STATEMENT_TIMEOUT. Always bounded: a merge that never
# ends would hold a pooled connection and stop every later merge.
SEARCH_INDEX_CLEAN_TIMEOUT = env.float("SEARCH_INDEX_CLEAN_TIMEOUT", default=30.0)
if not SEARCH_INDEX_CLEAN_TIMEOUT >= 1:
    raise ImproperlyConfigured(
        f"SEARCH_INDEX_CLEAN_TIMEOUT must be at least 1 (seconds), not {SEARCH_INDEX_CLEAN_TIMEOUT}."
    )

# WebSocket sends per user, counted across all nodes (rooms/ratelimit.py); "0" turns it off.
WS_SEND_RATE = env.str("WS_SEND_RATE", default="20/s")
# One user's share of a node (rooms/limits.py): read frames (fetch, resume) per user ("0" off;
# decided on each node, shared between nodes in batches), that user's reads on a node's database
# thread at once, and open room sockets per user across all nodes (over it: close 4429; "0" off).
WS_READ_RATE = env.str("WS_READ_RATE", default="10/s")
WS_READS_IN_FLIGHT = env.int("WS_READS_IN_FLIGHT", default=2)
WS_MAX_SOCKETS_PER_USER = env.int("WS_MAX_SOCKETS_PER_USER", default=32)
# HTTP requests running at once on one node per client (its token or session) and per client
# address (chatsite/http_limits.py): more wait their turn in the event loop, holding no thread and
# no database connection, so a burst cannot hold the node's pooled connections
# (DATABASE_POOL_MAX_SIZE) from everyone else; too many waiting answer 429. "0" turns one off.
HTTP_REQUESTS_IN_FLIGHT = env.int("HTTP_REQUESTS_IN_FLIGHT", default=8)
HTTP_REQUESTS_IN_FLIGHT_PER_ADDRESS = env.int("HTTP_REQUESTS_IN_FLIGHT_PER_ADDRESS", default=16)
# WebSocket handshakes one node works on at once (chatsite/handshakes.py); one more is closed with
# 1013 (try again later) before any database work, so a reconnect storm cannot queue handshakes
# past daphne's 5 s handshake timeout. "0" (the default) turns it off: with 50 it did not
# bring a 3,000-member storm back in time on its own (bench/RESULTS.md, reconnect storm).
WS_HANDSHAKES_IN_FLIGHT = env.int("WS_HANDSHAKES_IN_FLIGHT", default=0)

SPECTACULAR_SETTINGS = {
    "TITLE": "chatsite API",
    # Markdown; the socket route /ws/rooms/{slug}/ and its frames (not REST, so not a path).
    "DESCRIPTION": (BASE_DIR / "chatsite" / "api_description.md").read_text(),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Request bodies are documented as JSON only: what the pages and clients send. (Form and
    # multipart bodies are still read, but a malformed multipart POST is refused by the HTTP
    # server itself, daphne's Twisted, with an empty 400 before the API sees it.)
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    "ENUM_NAME_OVERRIDES": {
        "MemberRoleEnum": "rooms.models.Membership.Role",
        "AssignableRoleEnum": [("member", "member"), ("moderator", "moderator")],
    },
}

# --- I18N, static -----------------------------------------------------------------------------
# Every page in English or Korean: LocaleMiddleware picks the language cookie (the switch in the
# pages' footer posts to Django's set_language view), else the browser's Accept-Language, else
# LANGUAGE_CODE. The catalogs are locale/<lang>/LC_MESSAGES/django.po (templates, Python) and
# djangojs.po (the page scripts, served by JavaScriptCatalog at /jsi18n/); the compiled .mo files
# are committed beside them (docs/development.md: adding a string).
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ko", "한국어")]
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_NAME = "chatsite_language"
LANGUAGE_COOKIE_AGE = 365 * 86400  # seconds: a chosen language lasts a year (default: the session)
LANGUAGE_COOKIE_SECURE = HTTPS
LANGUAGE_COOKIE_SAMESITE = "Lax"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # WhiteNoise's compressed manifest storage, rewriting ES module imports to hashed names too.
    "staticfiles": {"BACKEND": "chatsite.staticfiles.ManifestStaticFilesStorage"},
}
# Hashed names need `collectstatic` first: `make run`, `make serve`, the Procfile's release step
# and the image run it.

# --- Uploads (rooms/attachments.py) ---------------------------------------------------------------
# Stored through Django's storage API: files under MEDIA_ROOT by default (never served from a
# public URL: downloads go through GET /api/attachments/<id>/<name>, which checks the room), or
# an S3-compatible bucket through django-storages when AWS_STORAGE_BUCKET_NAME is set (needs
# boto3: pip install -r requirements-s3.txt). Several nodes need one shared store (S3, or a
# MEDIA_ROOT on shared storage).
MEDIA_ROOT = env.path("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media"))
ATTACHMENT_MAX_BYTES = env.int("ATTACHMENT_MAX_BYTES", default=10 * 1024 * 1024)
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env.str("S3_ENDPOINT_URL", default="") or None,  # MinIO, R2, ...
            "region_name": env.str("S3_REGION_NAME", default="") or None,
            "location": env.str("S3_PREFIX", default=""),
            # Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment, read by boto3.
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
        },
    }
else:
    STORAGES["default"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }

# --- Metrics (GET /metrics, rooms/metrics.py) ---------------------------------------------------
# /metrics answers 404 unless the request sends "Authorization: Bearer <METRICS_TOKEN>" or comes
# from an address in METRICS_ALLOW (comma-separated IPs/CIDRs). Both unset: nobody reads it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOW = []
for _item in env.str("METRICS_ALLOW", default="").split(","):
    if _item.strip():
        try:
            METRICS_ALLOW.append(ipaddress.ip_network(_item.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"METRICS_ALLOW: {_item.strip()!r} is not an IP address or network"
            ) from None

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")  # daphne's access log is its own: --access-log
# LOG_FORMAT=json: one JSON object per line (python-json-logger) with server_id, request_id or
# socket_id, user_id and room (chatsite/logcontext.py); "text" (default): one plain line.
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "chatsite.logcontext.ContextFilter"}},
    "formatters": {
        "node": {"format": f"%(asctime)s {SERVER_ID} %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "chatsite.logcontext.json_formatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            "formatter": "json" if LOG_FORMAT == "json" else "node",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# --- Error tracking (chatsite/sentry.py) --------------------------------------------------------
# SENTRY_DSN set: errors go to Sentry (sentry-sdk's Django integration), tagged with the node and
# the request/socket, user and room. Unset: nothing is initialised.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENABLED = _sentry.init(
    dsn=SENTRY_DSN,
    server_id=SERVER_ID,
    environment=env.str("SENTRY_ENVIRONMENT", default="production"),
    traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
)
