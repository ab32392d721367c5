"""Redis as a deployment has it: plain, TLS (``rediss://``), several hosts, or Sentinel.

One place turns the environment into the three users of Redis (the channel layer, the cache of
throttle counters, the health check) and checks at start-up that Redis can be reached, so a wrong
TLS or Sentinel configuration stops the node with a clear message instead of failing at a user's
first join.

Environment (README.md, "Redis in production"):

- ``REDIS_URL``: ``redis://host:6379/0`` or ``rediss://host:6380/0`` (TLS), or several of them,
  comma-separated, for the channel layer's sharding (all nodes must list the same hosts in the
  same order; the cache uses the first). With Sentinel: ``redis[s]://[:password@][master]/db``
  (no host, or the master name): its scheme, password and db apply to the master.
- ``REDIS_CA_FILE``: PEM bundle of the CA(s) the server certificates must chain to (default: the
  system CAs). Verification is always on, host name included, unless the URL itself opts out
  with redis-py's ``?ssl_cert_reqs=none`` (logged as a warning at start-up).
- ``REDIS_CLIENT_CERT`` / ``REDIS_CLIENT_KEY``: a client certificate, for servers that require
  one (``tls-auth-clients yes``).
- ``REDIS_SENTINELS``: ``host:port,host:port``; with ``REDIS_SENTINEL_MASTER`` (the master's name),
  every Redis user asks the sentinels for the master and follows a failover.
  ``REDIS_SENTINEL_PASSWORD``: the sentinels' own password. ``REDIS_SENTINEL_TLS``: TLS to the
  sentinels (default: as the master, i.e. on with ``rediss://``), with the same CA and client cert.

A configuration that cannot work (unknown scheme, a CA file that cannot be read, a CA without
TLS, Sentinel mixed with listed hosts, ...) raises ``ImproperlyConfigured`` when the settings load.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.backoff
import redis.retry
import redis.sentinel
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger("chatsite.redis")

SCHEMES = ("redis", "rediss", "unix")
CONNECT_TIMEOUT = 2  # seconds, for every connection the layer and the cache open
# Seconds a command on the channel layer's connections (a PUBLISH, a SUBSCRIBE) may wait for its
# reply before it fails and is retried on a new connection: a Redis that moved or hangs cannot
# hold a node's publishing (and, behind channels-redis's per-shard lock, its new sockets) forever.
COMMAND_TIMEOUT = 5
# Seconds between redis-py's PINGs on an idle layer connection; a subscriber connection silent
# for twice this long is reconnected (chatsite.layers.RedisShardConnection). The default;
# REDIS_HEALTH_CHECK_INTERVAL overrides it.
HEALTH_CHECK_INTERVAL = 5


@dataclass
class RedisConfig:
    """What the environment says about Redis. ``hosts`` mode: ``urls`` (one or more, the layer
    shards across them). ``sentinel`` mode: ``sentinels`` and ``master_name``, with
    ``master_kwargs`` (db, password, TLS) for the master and ``sentinel_kwargs`` for the
    sentinels."""

    mode: str  # "hosts" | "sentinel"
    url: str  # settings.REDIS_URL: what was configured, for logs and for "is Redis on"
    tls: bool
    tls_kwargs: dict = field(default_factory=dict)  # redis-py ssl_* arguments (TLS only)
    urls: list[str] = field(default_factory=list)
    sentinels: list[tuple[str, int]] = field(default_factory=list)
    master_name: str = ""
    master_kwargs: dict = field(default_factory=dict)
    sentinel_kwargs: dict = field(default_factory=dict)
    health_check_interval: float = HEALTH_CHECK_INTERVAL  # seconds (REDIS_HEALTH_CHECK_INTERVAL)

    def __repr__(self) -> str:  # without passwords (settings may be printed)
        where = (
            f"sentinels={self.sentinels} master={self.master_name!r}"
            if self.mode == "sentinel"
            else f"hosts={[_label(u) for u in self.urls]}"
        )
        return f"<RedisConfig {self.mode} {where} tls={self.tls}>"

    @property
    def db(self) -> int:
        """The database number the cache and presence keys live in (the first URL's, or the
        Sentinel master's; 0 when the URL names none). Pub/Sub channels are not in any database:
        ``default_prefix`` keeps deployments on other numbers apart on the channel layer too."""
        if self.mode == "sentinel":
            return int(self.master_kwargs.get("db", 0) or 0)
        # As redis-py reads it (``?db=`` before the path, the path unquoted), so the prefix
        # names the database the layer and the cache really use.
        return int(redis.connection.parse_url(self.urls[0]).get("db", 0) or 0)

    def default_prefix(self) -> str:
        """``CHANNEL_LAYER_PREFIX`` when the environment sets none: ``chatsite`` on database 0,
        ``chatsite-db<N>`` on database N. Redis's database numbers keep keys apart but not
        Pub/Sub channels, which are the server's: with one prefix for all, deployments sharing a
        Redis server on different numbers got each other's live frames for rooms of the same id
        (message bodies of private rooms included)."""
        return "chatsite" if self.db == 0 else f"chatsite-db{self.db}"

    # --- what settings.py puts in CHANNEL_LAYERS and CACHES --------------------------------

    def channel_layer_hosts(self) -> list[dict]:
        """``CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]`` for channels-redis 4.3: one entry per
        shard (``address`` + connection kwargs), or one Sentinel entry (``sentinels``,
        ``master_name``, ``sentinel_kwargs``: channels_redis.utils.create_pool builds a
        ``SentinelConnectionPool`` from it, which asks the sentinels on every new connection)."""
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        # One command (a PUBLISH, the subscriber's read) may retry on a fresh connection: after a
        # failover the old connection is dead and the retry reaches the new master.
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.1), 3)
        common = {
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": COMMAND_TIMEOUT,
            "health_check_interval": self.health_check_interval,
            "socket_keepalive": True,
            "retry": retry,
        }
        if self.mode == "sentinel":
            return [
                {
                    "sentinels": list(self.sentinels),
                    "master_name": self.master_name,
                    "sentinel_kwargs": {
                        **self.sentinel_kwargs,
                        "socket_connect_timeout": CONNECT_TIMEOUT,
                        "socket_timeout": CONNECT_TIMEOUT,
                        "retry": retry,
                    },
                    **self.master_kwargs,
                    **common,
                }
            ]
        return [{"address": url, **self._url_tls_kwargs(url), **common} for url in self.urls]

    def cache(self, key_prefix: str) -> dict:
        """``CACHES["default"]``: Django's RedisCache on the first host (Django would treat more
        LOCATIONs as read replicas, not shards), or on the Sentinel master."""
        options = {"socket_connect_timeout": CONNECT_TIMEOUT, "socket_timeout": CONNECT_TIMEOUT}
        if self.mode == "sentinel":
            options.update(
                pool_class="chatsite.redis_config.SentinelCachePool",
                sentinel={
                    "sentinels": list(self.sentinels),
                    "master_name": self.master_name,
                    "sentinel_kwargs": self.sentinel_kwargs,
                    **self.master_kwargs,
                },
            )
            location = self.url
        else:
            location = self.urls[0]
            options.update(self._url_tls_kwargs(location))
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": location,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": options,
        }

    def _url_tls_kwargs(self, url: str) -> dict:
        return dict(self.tls_kwargs) if url.startswith("rediss://") else {}

    # --- clients for the health check and the start-up check --------------------------------

    def sync_clients(self, timeout: float) -> list[tuple[str, redis.Redis]]:
        """``(label, client)`` for every Redis the layer uses (each shard, or the Sentinel
        master), with ``timeout`` seconds for connecting and for each reply."""
        # No retries with backoff (redis-py's default): one answer within ``timeout``.
        timeouts = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        }
        if self.mode == "sentinel":
            sentinel = redis.sentinel.Sentinel(
                self.sentinels, sentinel_kwargs={**self.sentinel_kwargs, **timeouts}
            )
            client = sentinel.master_for(self.master_name, **self.master_kwargs, **timeouts)
            return [(f"sentinel master {self.master_name!r}", client)]
        return [
            (_label(url), redis.Redis.from_url(url, **self._url_tls_kwargs(url), **timeouts))
            for url in self.urls
        ]


# The loop client's pool (``async_client``): at most this many connections per event loop (a
# node), a caller waiting at most LOOP_POOL_WAIT seconds for one to free. Why 8: the per-socket
# and per-frame commands go through ``chatsite.redis_batch`` (one round trip in flight: one
# connection), and the rest are a node's periodic tasks, each one command at a time (the socket
# count and presence heartbeats, the presence batch): 4 in use at most, twice that for headroom.
# Unbounded, 333 sockets closing at once opened 333 connections to Redis at the same moment and
# their connects timed out. Why 1 s: below the 2 s (CONNECT_TIMEOUT) the presence calls allow,
# above the 0.5 s of the socket cap and rate counts (ratelimit.SHARED_TIMEOUT), which give up
# first by their own timeout; past it redis-py raises ConnectionError("No connection available.").
LOOP_MAX_CONNECTIONS = 8
LOOP_POOL_WAIT = 1.0


def async_client(
    config: RedisConfig,
    timeout: float = CONNECT_TIMEOUT,
    *,
    max_connections: int = LOOP_MAX_CONNECTIONS,
    pool_wait: float = LOOP_POOL_WAIT,
    name: str | None = None,
):
    """A ``redis.asyncio`` client on the first host (or the Sentinel master) for stores other
    than the layer (presence, the socket cap, rate counts), with ``timeout`` seconds to connect
    and for each reply, and a blocking pool of at most ``max_connections`` connections (a
    command waits up to ``pool_wait`` seconds for one, then raises redis-py's
    ``ConnectionError``). ``name``: the connections' ``CLIENT SETNAME`` (seen in ``CLIENT
    LIST``). Bound to the event loop that first uses it."""
    import redis.asyncio as aioredis
    import redis.asyncio.sentinel

    kwargs = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if name:
        kwargs["client_name"] = name
    pool = {"max_connections": max_connections, "timeout": pool_wait}
    if config.mode == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(
            config.sentinels, sentinel_kwargs={**config.sentinel_kwargs, **kwargs}
        )
        return sentinel.master_for(
            config.master_name,
            connection_pool_class=_blocking_sentinel_pool(),
            **config.master_kwargs,
            **kwargs,
            **pool,
        )
    url = config.urls[0]
    return aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(url, **config._url_tls_kwargs(url), **kwargs, **pool)
    )


@functools.cache
def _blocking_sentinel_pool():
    import redis.asyncio
    import redis.asyncio.sentinel

    class BlockingSentinelPool(
        redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
    ):
        """redis-py's Sentinel pool (asks the sentinels for the master, follows a failover) with
        the blocking pool's bound: at most ``max_connections``, a caller waiting ``timeout`` s."""

    return BlockingSentinelPool


_loop_clients: dict = {}  # event loop -> redis.asyncio client


def loop_client():
    """This event loop's ``async_client(settings.REDIS)``, made on first use (a redis.asyncio
    client is bound to the loop that made it), its connections named ``chatsite-<SERVER_ID>``.
    Clients of closed loops (finished tests) are dropped. Call only when ``settings.REDIS`` is
    set."""
    from django.conf import settings

    from chatsite import loops

    return loops.for_running_loop(_loop_clients, lambda: async_client(settings.REDIS, name=client_name()))


def client_name() -> str:
    """The loop client's connection name: ``chatsite-<SERVER_ID>``, with the characters Redis
    refuses in a name (spaces, newlines) replaced by ``_``."""
    from django.conf import settings

    server = "".join(c if c.isprintable() and not c.isspace() else "_" for c in str(settings.SERVER_ID))
    return f"chatsite-{server}"


class SentinelCachePool(redis.sentinel.SentinelConnectionPool):
    """Django's RedisCache builds its pool with ``pool_class.from_url(LOCATION, **OPTIONS)``;
    this one ignores the URL and asks the sentinels in ``OPTIONS["sentinel"]`` for the master."""

    @classmethod
    def from_url(cls, url, *, sentinel: dict, **options):
        sentinel = dict(sentinel)
        manager = redis.sentinel.Sentinel(
            sentinel.pop("sentinels"),
            sentinel_kwargs={
                **sentinel.pop("sentinel_kwargs"),
                "socket_connect_timeout": options.get("socket_connect_timeout"),
                "socket_timeout": options.get("socket_timeout"),
                "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 1),
            },
        )
        return cls(sentinel.pop("master_name"), manager, **sentinel, **options)


# --- from the environment -------------------------------------------------------------------


def from_env(environ=None) -> RedisConfig | None:
    """The Redis configuration in ``environ`` (default ``os.environ``), or None when neither
    ``REDIS_URL`` nor ``REDIS_SENTINELS`` is set (in-memory layer, one node). Raises
    ``ImproperlyConfigured`` with what to change when the configuration cannot work.
    ``REDIS_HEALTH_CHECK_INTERVAL`` (seconds, default ``HEALTH_CHECK_INTERVAL``) sets the layer
    connections' health-check interval."""
    environ = os.environ if environ is None else environ
    config = _from_env(environ)
    if config is not None:
        value = (environ.get("REDIS_HEALTH_CHECK_INTERVAL") or "").strip()
        try:
            interval = float(value) if value else HEALTH_CHECK_INTERVAL
        except ValueError:
            interval = -1
        if not interval > 0:
            raise ImproperlyConfigured(
                f"REDIS_HEALTH_CHECK_INTERVAL must be a number of seconds above 0, not {value!r}."
            )
        config.health_check_interval = interval
    return config


def _from_env(environ) -> RedisConfig | None:
    get = lambda name: (environ.get(name) or "").strip()  # noqa: E731
    url_value, sentinels_value = get("REDIS_URL"), get("REDIS_SENTINELS")
    if not url_value and not sentinels_value:
        for name in ("REDIS_SENTINEL_MASTER", "REDIS_CA_FILE"):
            if get(name):
                raise ImproperlyConfigured(f"{name} is set but neither REDIS_URL nor REDIS_SENTINELS is.")
        return None

    urls = [u.strip() for u in url_value.split(",") if u.strip()]
    for url in urls:
        scheme = urlsplit(url).scheme if "://" in url else ""
        if scheme not in SCHEMES:
            what = f"unknown scheme {scheme + '://'!r}" if scheme else f"{_label(url)!r} is not a URL"
            raise ImproperlyConfigured(
                f"REDIS_URL: {what}; use redis://host:6379/0 (plain), rediss://host:6380/0 (TLS) or "
                "unix:///path/redis.sock, comma-separated for several hosts. For Sentinel set "
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER."
            )
    schemes = {urlsplit(u).scheme for u in urls}
    if len(schemes) > 1:
        raise ImproperlyConfigured(
            f"REDIS_URL lists hosts with different schemes ({', '.join(sorted(schemes))}): every "
            "shard of the channel layer must use the same one (all rediss:// for TLS)."
        )

    if sentinels_value:
        return _sentinel_config(get, urls, sentinels_value)

    if get("REDIS_SENTINEL_MASTER"):
        raise ImproperlyConfigured(
            "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not: list "
            "the sentinels as REDIS_SENTINELS=host:port,host:port."
        )
    if len(set(urls)) != len(urls):
        raise ImproperlyConfigured("REDIS_URL lists the same host twice.")
    tls = schemes == {"rediss"}
    tls_kwargs = _tls_kwargs(get, tls, what="REDIS_URL uses redis:// (no TLS)")
    return RedisConfig(mode="hosts", url=url_value, tls=tls, tls_kwargs=tls_kwargs, urls=urls)


def _sentinel_config(get, urls: list[str], sentinels_value: str) -> RedisConfig:
    master_name = get("REDIS_SENTINEL_MASTER")
    if not master_name:
        raise ImproperlyConfigured(
            "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER (the name the "
            "sentinels monitor the master under, e.g. mymaster) is not."
        )
    if len(urls) > 1:
        raise ImproperlyConfigured(
            "REDIS_SENTINELS is set and REDIS_URL lists several hosts: a mix of Sentinel and plain "
            "hosts cannot work. With Sentinel, REDIS_URL is at most one redis[s]://[:password@]"
            f"{master_name}/<db> (scheme, password and db of the master), or unset."
        )
    parts = urlsplit(urls[0]) if urls else urlsplit("redis:///0")
    if parts.scheme == "unix":
        raise ImproperlyConfigured(
            "REDIS_URL is a unix:// socket but REDIS_SENTINELS is set: "
            "sentinels hand out TCP addresses; use redis:// or rediss://."
        )
    if parts.hostname and parts.hostname != master_name.lower() or parts.port:
        raise ImproperlyConfigured(
            f"REDIS_SENTINELS is set and REDIS_URL names the host {parts.netloc.rpartition('@')[2]!r}: "
            "a mix of Sentinel and a plain host cannot work (the sentinels say where the master "
            f"is). Write REDIS_URL as {parts.scheme}://[:password@]{master_name}/<db>, or leave it unset."
        )
    sentinels = []
    for entry in (e.strip() for e in sentinels_value.split(",")):
        host, _, port = entry.rpartition(":")
        if not entry or "//" in entry or not host or not port.isdigit():
            raise ImproperlyConfigured(
                f"REDIS_SENTINELS: {entry!r} is not host:port (e.g. 10.0.0.5:26379,10.0.0.6:26379)."
            )
        sentinels.append((host.strip("[]"), int(port)))

    tls = parts.scheme == "rediss"
    sentinel_tls = _bool(get("REDIS_SENTINEL_TLS"), "REDIS_SENTINEL_TLS", default=tls)
    tls_kwargs = _tls_kwargs(
        get, tls or sentinel_tls, what="neither REDIS_URL is rediss:// nor REDIS_SENTINEL_TLS is on"
    )
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ImproperlyConfigured(f"REDIS_URL: the database must be a number, not {path!r}.")
    master_kwargs = {"db": int(path or query.get("db", 0) or 0)}
    if parts.username:
        master_kwargs["username"] = unquote(parts.username)
    if parts.password:
        master_kwargs["password"] = unquote(parts.password)
    if tls:
        master_kwargs.update(ssl=True, **tls_kwargs)
    sentinel_kwargs = {}
    if get("REDIS_SENTINEL_PASSWORD"):
        sentinel_kwargs["password"] = get("REDIS_SENTINEL_PASSWORD")
    if sentinel_tls:
        sentinel_kwargs.update(ssl=True, **tls_kwargs)
    scheme = "rediss" if tls else "redis"
    return RedisConfig(
        mode="sentinel",
        url=f"{scheme}://{master_name}/{master_kwargs['db']}",
        tls=tls,
        tls_kwargs=tls_kwargs,
        sentinels=sentinels,
        master_name=master_name,
        master_kwargs=master_kwargs,
        sentinel_kwargs=sentinel_kwargs,
    )


def _tls_kwargs(get, tls: bool, *, what: str) -> dict:
    """redis-py's ssl_* arguments from REDIS_CA_FILE / REDIS_CLIENT_CERT / REDIS_CLIENT_KEY, each
    file checked readable now (a typo fails start-up, not the first connection)."""
    files = {name: get(name) for name in ("REDIS_CA_FILE", "REDIS_CLIENT_CERT", "REDIS_CLIENT_KEY")}
    given = [name for name, value in files.items() if value]
    if given and not tls:
        raise ImproperlyConfigured(f"{' and '.join(given)} set but {what}: use rediss:// for TLS.")
    if bool(files["REDIS_CLIENT_CERT"]) != bool(files["REDIS_CLIENT_KEY"]):
        raise ImproperlyConfigured("REDIS_CLIENT_CERT and REDIS_CLIENT_KEY go together: set both.")
    for name in given:
        try:
            with open(files[name], "rb") as f:
                content = f.read()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}={files[name]!r} cannot be read: {exc.strerror}.") from None
        if b"-----BEGIN" not in content:
            raise ImproperlyConfigured(f"{name}={files[name]!r} is not a PEM file.")
    if files["REDIS_CA_FILE"]:
        try:
            ssl.create_default_context(cafile=files["REDIS_CA_FILE"])
        except ssl.SSLError as exc:
            raise ImproperlyConfigured(
                f"REDIS_CA_FILE={files['REDIS_CA_FILE']!r} holds no usable CA certificate: {exc}."
            ) from None
    if not tls:
        return {}
    kwargs = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if files["REDIS_CA_FILE"]:
        kwargs["ssl_ca_certs"] = files["REDIS_CA_FILE"]
    if files["REDIS_CLIENT_CERT"]:
        kwargs.update(ssl_certfile=files["REDIS_CLIENT_CERT"], ssl_keyfile=files["REDIS_CLIENT_KEY"])
    return kwargs


def _bool(value: str, name: str, *, default: bool) -> bool:
    if not value:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r}: use 1 or 0.")


def _label(url: str) -> str:
    """A URL without its password, for logs and health reasons."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return parts.netloc.rpartition("@")[2] or url


# --- reaching Redis: the health check and the start-up check ---------------------------------


def describe_error(exc: BaseException, config: RedisConfig | None = None) -> tuple[str, bool]:
    """``(short reason, is_configuration_error)`` for a failure to reach Redis. Configuration
    errors (a certificate that does not verify, TLS against a plain port, a wrong password, a
    master name the sentinels do not know) will not go away by waiting; the others (refused,
    timed out, reset) may be a Redis restarting."""
    if isinstance(exc, redis.sentinel.MasterNotFoundError) and config is not None and config.sentinels:
        # redis-py keeps only the class of each sentinel's error: ask the sentinels again.
        known, error = _probe_sentinels(config)
        if known is None:
            reason, is_config = describe_error(error) if error else ("no answer", False)
            return f"no sentinel reachable: {reason}", is_config
        if known is False:
            return f"unknown master name {config.master_name!r} (no sentinel monitors it)", True
        return f"master {config.master_name!r} is down (failover in progress?)", False
    text = " ".join(str(e) for e in _chain(exc))
    low = text.lower()
    if "certificate verify failed" in low:
        detail = low.split("certificate verify failed", 1)[1].split("(_ssl", 1)[0].strip(" :.")
        return ("certificate verify failed" + (f": {detail}" if detail else "")), True
    if "handshake operation timed out" in low:
        return "TLS handshake timed out (rediss:// against a plain, non-TLS port?)", True
    if any(
        s in low
        for s in (
            "wrong version number",
            "record layer failure",
            "packet length too long",
            "unknown protocol",
            "tlsv1 alert",
            "sslv3 alert",
            "[ssl",
        )
    ):
        return "TLS handshake failed (rediss:// against a plain port, or the reverse?)", True
    if isinstance(exc, redis.AuthenticationError) or any(
        s in low for s in ("wrongpass", "noauth", "invalid password", "invalid username-password")
    ):
        return "authentication failed", True
    if "connection refused" in low:
        return "connection refused", False
    if "connection reset" in low:
        return "connection reset (redis:// against a TLS port?)", False
    if (
        isinstance(exc, (redis.TimeoutError, TimeoutError))
        or "timed out" in low
        or "timeout connecting" in low
    ):
        return "timed out", False
    return (text[:200] or type(exc).__name__), False


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _probe_sentinels(config: RedisConfig) -> tuple[bool | None, BaseException | None]:
    """``(whether a sentinel monitors config.master_name, or None when none answered; the first
    sentinel's error)``."""
    answered, first_error = False, None
    for host, port in config.sentinels:
        client = redis.Redis(
            host=host,
            port=port,
            socket_connect_timeout=1,
            socket_timeout=1,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            **config.sentinel_kwargs,
        )
        try:
            masters = client.sentinel_masters()
            answered = True
            if config.master_name in masters:
                return True, None
        except redis.RedisError as exc:
            first_error = first_error or exc
        finally:
            client.close()
    return (False if answered else None), first_error


def check(config: RedisConfig, clients=None, timeout: float = 1.0) -> list[tuple[str, BaseException]]:
    """PING every Redis the layer uses; ``[(label, error)]`` for the ones that failed."""
    failures = []
    for label, client in clients or config.sync_clients(timeout):
        try:
            try:
                client.ping()
            except redis.ConnectionError:  # maybe a pooled connection a failover closed: once more
                client.ping()
        except Exception as exc:  # any failure: the caller reports it
            failures.append((label, exc))
    return failures


def startup_check(config: RedisConfig | None, server_id: str = "", timeout: float = 3.0) -> None:
    """Called once by ``chatsite.asgi`` when a node starts: PING Redis (each shard, or the master
    through the sentinels). A configuration error (see ``describe_error``) stops the process
    with exit status 1 and one clear log line; Redis merely unreachable is logged as an error and
    the node starts (``/healthz`` answers 503 until Redis is back)."""
    if config is None:
        return
    if any("ssl_cert_reqs=none" in url.lower().replace("%", "") for url in config.urls):
        logger.warning("REDIS_URL turns certificate verification off (ssl_cert_reqs=none).")
    clients = config.sync_clients(timeout)
    try:
        failures = check(config, clients)
    finally:
        for _, client in clients:
            client.close()
    for label, exc in failures:
        reason, is_config = describe_error(exc, config)
        message = f"Redis at {label}: {reason}"
        if is_config:
            hint = (
                " Set REDIS_CA_FILE to the PEM bundle of the CA that signed the Redis certificate."
                if reason.startswith("certificate verify failed")
                else ""
            )
            logger.critical("node %s cannot start: %s.%s", server_id, message, hint)
            raise SystemExit(1)
        logger.error(
            "node %s starts without Redis: %s (/healthz answers 503 until it is reachable)",
            server_id,
            message,
        )
