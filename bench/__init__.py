"""chatsite's benchmark: ``python -m bench SCENARIO``.

Starts N daphne nodes of the product (or targets given URLs), creates the users, API tokens and
rooms it needs in its own PostgreSQL database, connects M clients round-robin over the nodes in
R rooms, has S senders send at a fixed rate for a bounded time, and measures delivery and
latency, once with the Redis Pub/Sub channel layer and once with the in-memory layer. See
bench/README.md.

Modules: ``scenarios`` (named shapes), ``stats`` (percentiles, expected deliveries, the table),
``prepare`` (database, users, tokens, rooms; run as a subprocess), ``cluster`` (nodes),
``loadgen`` (the load generator's worker processes), ``runner`` (one run of one mode),
``report`` (JSON and PNG), ``cli`` (the command).
"""
