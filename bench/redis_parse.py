"""``python -m bench.redis_parse``: the CPU a node spends reading one Pub/Sub message with
redis-py, with whichever reply parser is installed (hiredis, the C one, when it is; the pure-Python
one otherwise). Run it with and without ``hiredis`` installed to compare (bench/RESULTS.md, issue
16's final pass: 15–16 µs per message in Python, 7.5–7.7 µs with hiredis).

It subscribes to one channel on ``--redis-url`` (db 9 by default: nothing of the product's),
publishes ``--messages`` msgpack'd room messages of ``--bytes`` bytes of text in pipelines of 500,
and reads them with ``PubSub.get_message`` as the channel layer's reader does; it prints this
process's CPU time per message read (µs), the publishing side's replies included (its share is
one reply per PUBLISH). Bounded: it stops after the messages or 60 s."""

import argparse
import asyncio
import time

import msgpack


async def _run(url: str, messages: int, size: int) -> tuple[float, str]:
    import redis.asyncio as aioredis
    from redis.utils import HIREDIS_AVAILABLE

    sub, pub = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url)
    channel = f"bench-redis-parse-{time.time_ns()}"
    pubsub = sub.pubsub()
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    payload = msgpack.packb(
        {"type": "room.message", "seq": 1, "text": "x" * size, "__asgi_group__": "room.1"}
    )

    async def produce():
        for start in range(0, messages, 500):
            pipe = pub.pipeline(transaction=False)
            for _ in range(min(500, messages - start)):
                pipe.publish(channel, payload)
            await pipe.execute()

    producer = asyncio.create_task(produce())
    got, started = 0, time.process_time()
    async with asyncio.timeout(60):
        while got < messages:
            if await pubsub.get_message(ignore_subscribe_messages=True, timeout=1):
                got += 1
    await producer
    per_message = (time.process_time() - started) / messages * 1e6
    await pubsub.aclose()
    await sub.aclose()
    await pub.aclose()
    return per_message, "hiredis" if HIREDIS_AVAILABLE else "Python"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_parse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--bytes", type=int, default=420, help="text bytes per message (about 500 packed)")
    args = parser.parse_args(argv)
    per_message, parser_name = asyncio.run(_run(args.redis_url, args.messages, args.bytes))
    print(
        f"{parser_name} parser: {per_message:.1f} µs of CPU per Pub/Sub message read ({args.messages} messages)"
    )


if __name__ == "__main__":
    main()
