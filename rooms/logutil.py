"""Rate-limited logging, so a client flooding bad frames cannot flood the log."""

import logging
import threading
import time


class RateLimitedLogger:
    """Logs at most one record per ``key`` every ``interval`` seconds; the next record that gets
    through says how many were suppressed in between. Thread-safe."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0):
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _allow(self, key: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)

    def log(self, level: int, key: str, msg: str, *args, **kwargs) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` was logged within ``interval``.
        Returns whether it was logged."""
        suppressed = self._allow(key)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def warning(self, key: str, msg: str, *args, **kwargs) -> bool:
        return self.log(logging.WARNING, key, msg, *args, **kwargs)
