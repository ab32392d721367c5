"""Named scenarios (issue 6). Rates are per sender, in messages per second; durations in seconds.

Client ``i`` connects to node ``i % nodes`` (a balancer with stickiness off) and joins room
``i % rooms``; the senders are clients ``0 .. senders-1``, so sender ``j`` is in room ``j % rooms``
on node ``j % nodes``.
"""

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    nodes: int = 3
    clients: int = 3
    rooms: int = 1
    senders: int = 1
    rate: float = 10.0  # messages per second per sender
    duration: float = 5.0  # seconds of sending (per step for ramp)
    modes: tuple[str, ...] = ("redis", "memory")
    # ramp only: per-sender rates tried in order; stops after ``ramp_stop_after`` failing steps.
    ramp_rates: tuple[float, ...] = ()
    ramp_stop_after: int = 1
    # a step passes when at least this share is delivered and p99 is under this many ms
    ramp_min_delivery_pct: float = 99.9
    ramp_max_p99_ms: float = 100.0
    payload_bytes: int = 64
    # WebSocket handshakes the load generator keeps in flight at once (over all its processes)
    connect_concurrency: int = 50
    extra: dict = field(default_factory=dict)

    @property
    def is_ramp(self) -> bool:
        return bool(self.ramp_rates)

    def with_overrides(self, **changes) -> "Scenario":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="seed-3",
            description="3 users, one per node, one room; the user on node-1 sends.",
            clients=3,
            rooms=1,
            senders=1,
            rate=10.0,
            duration=5.0,
        ),
        Scenario(
            name="seed-1000",
            description="1,000 users over 3 nodes in one room; one sender at 5 msg/s.",
            clients=1000,
            rooms=1,
            senders=1,
            rate=5.0,
            duration=10.0,
        ),
        Scenario(
            name="join-storm",
            description=(
                "10,000 users join one room over 3 nodes, 100 handshakes in flight at once; "
                "then one message to all (issue 16: all joined with no error in 30 s, p99 250 ms)."
            ),
            clients=10000,
            rooms=1,
            senders=1,
            rate=1.0,
            duration=1.0,
            modes=("redis",),
            connect_concurrency=100,
        ),
        Scenario(
            name="seed-50rooms",
            description="50 rooms of 20 users over 3 nodes, one sender per room at 1 msg/s.",
            clients=1000,
            rooms=50,
            senders=50,
            rate=1.0,
            duration=10.0,
        ),
        Scenario(
            name="ramp",
            description=(
                "The 50-room shape with the per-sender rate raised step by step; reports the "
                "highest rate with >= 99.9% delivered and p99 < 100 ms (Redis layer only: the "
                "in-memory layer can never pass a delivery criterion across nodes)."
            ),
            clients=1000,
            rooms=50,
            senders=50,
            rate=2.0,
            duration=5.0,
            modes=("redis",),
            ramp_rates=(2, 4, 6, 8, 10, 12, 15, 20, 25, 30),
        ),
    ]
}
