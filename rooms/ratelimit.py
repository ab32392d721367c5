"""Per-user rate limits shared by every node: fixed-window counters in the Django cache (Redis
with ``REDIS_URL``; per process with the in-memory default)."""

import logging
import re
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# ``ahit`` waits at most SHARED_TIMEOUT seconds for Redis; after a failure it counts nothing
# shared for SHARED_PAUSE seconds (each socket's own window still applies). So a Redis outage or
# failover costs a node one short wait per pause, not a wait on every send: a Sentinel failover
# test once saw sends queue for 21 s behind the client's own retries and back-off.
SHARED_TIMEOUT = 0.5
SHARED_PAUSE = 1.0
_shared_paused_until = 0.0


_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd])[a-z]*\s*", re.IGNORECASE)


def parse_rate(rate: str) -> tuple[int, int] | None:
    """``"20/s"`` → ``(20, 1)``; ``"100/min"`` → ``(100, 60)``; with a multiple, ``"10/15m"``
    → ``(10, 900)``; ``""``, ``"0"`` or ``"off"`` → None (off). Raises ``ValueError`` for
    anything else."""
    if not rate or rate.strip().lower() in ("0", "off"):
        return None
    match = _RATE.fullmatch(rate)
    if match is None or int(match[2] or 1) == 0:
        raise ValueError(f"rate {rate!r} is not like '20/s', '100/min' or '10/15m'")
    return int(match[1]), int(match[2] or 1) * _PERIODS[match[3].lower()]


def hit(key: str, rate: str) -> float | None:
    """Count one event for ``key``; None when it is within ``rate``, else the seconds until the
    window ends (``retry_after``). When the cache cannot be reached the event is allowed and
    the error logged: a Redis outage must not stop people talking."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    window = Window(key, *parsed)
    try:
        count = 1 if cache.add(window.key, 1, timeout=window.seconds + 1) else cache.incr(window.key)
    except Exception:
        logger.warning("rate limit cache unavailable; %s allowed", key, exc_info=True)
        return None
    return window.retry_after(count)


class Window:
    """The current fixed window of ``seconds`` for ``key``: its number since the Unix epoch
    (``bucket``), its cache key, and the answer for an event counted ``count``-th in it (None
    within ``limit``, else seconds until it ends)."""

    def __init__(self, key: str, limit: int, seconds: int):
        self.limit, self.seconds = limit, seconds
        self.now = time.time()
        self.bucket = int(self.now // seconds)
        self.key = f"rl:{key}:{seconds}:{self.bucket}"

    def retry_after(self, count: int) -> float | None:
        if count > self.limit:  # never 0: rounded down near the window's end, it read "retry now"
            return max(0.001, round((self.bucket + 1) * self.seconds - self.now, 3))
        return None


async def ahit(key: str, rate: str) -> float | None:
    """``hit`` for async code (a consumer), without a thread hop: with Redis (``settings.REDIS``)
    two commands in the loop's next batched round trip (``chatsite.redis_batch``: ``SET NX EX``
    then ``INCR`` on the same key
    ``hit`` uses); without it, the in-process cache as ``hit``. Same answer: None when within
    ``rate``, else seconds until the window ends. Redis failing or not answering within
    ``SHARED_TIMEOUT`` allows the event (logged) and pauses the shared count for
    ``SHARED_PAUSE`` seconds."""
    parsed = parse_rate(rate)
    if parsed is None:
        return None
    if not settings.REDIS:
        return hit(key, rate)
    from chatsite import redis_batch

    global _shared_paused_until
    if time.monotonic() < _shared_paused_until:
        return None
    window = Window(key, *parsed)
    cache_key = cache.make_key(window.key)
    try:  # batched with the node's other sends and sockets (chatsite.redis_batch)
        _, count = await redis_batch.batch().calls(
            [("SET", cache_key, 0, "EX", window.seconds + 1, "NX"), ("INCR", cache_key)],
            timeout=SHARED_TIMEOUT,
        )
    except Exception:
        _shared_paused_until = time.monotonic() + SHARED_PAUSE
        logger.warning("rate limit store unavailable; sends allowed for %.0f s", SHARED_PAUSE, exc_info=True)
        return None
    return window.retry_after(count)


class LocalWindow:
    """The same fixed-window limit, counted in this process for one socket: a flooding socket is
    answered at once, without a hop to the database thread or to Redis, so it cannot slow the
    other members (the shared counter in ``hit`` / ``ahit`` still catches a user spread over many nodes)."""

    def __init__(self, rate: str):
        self.parsed = parse_rate(rate)
        self.bucket = None
        self.count = 0

    def hit(self) -> float | None:
        """Count one event; None when within the rate, else seconds until the window ends."""
        if self.parsed is None:
            return None
        window = Window("socket", *self.parsed)
        if window.bucket != self.bucket:
            self.bucket, self.count = window.bucket, 0
        self.count += 1
        return window.retry_after(self.count)
