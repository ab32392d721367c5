"""State kept per asyncio event loop: a daphne process runs one loop, the test suite one per test.

A registry is a plain dict keyed by loop. The entries of closed loops (finished tests', whose
sockets and tasks went with them) are dropped whenever a new loop's entry is made, so a registry
holds at most the loops still open."""

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def drop_closed(registry: dict) -> None:
    """Remove the entries of ``registry`` whose loop is closed."""
    for loop in [loop for loop in registry if loop.is_closed()]:
        registry.pop(loop, None)


def for_running_loop(registry: dict, make: Callable[[], T]) -> T:
    """``registry``'s entry for the running loop, made by ``make()`` on first use (closed loops'
    entries dropped then). Raises ``RuntimeError`` outside a running loop."""
    loop = asyncio.get_running_loop()
    value = registry.get(loop)
    if value is None:
        drop_closed(registry)
        value = registry[loop] = make()
    return value
