"""The cost of formatting (``rooms.formatting.render``: markdown-it-py, then nh3) per message
body, in µs, for bodies of the shapes a chat sends; printed as a table (median and worst of
``rounds`` timed runs over ``n`` renders each). No database is touched (Django is set up for
the imports only: SECRET_KEY must be set, as for any manage.py command). Two clocks: wall time
(``time.perf_counter``) and this thread's CPU time (``time.thread_time``), which on a shared,
loaded machine leaves out the time other processes held the core (the cost a node pays).

    SECRET_KEY=... PYTHONPATH=. .venv/bin/python -m bench.render [n=2000] [rounds=5]
"""

import statistics
import sys
import time

BODIES = {
    "plain, 12 chars": "hello world!",
    "plain, 80 chars": "Sure, I can look at it after lunch; the build broke on the migration step again.",
    "bench message (JSON)": '{"b": "ab12cd", "p": "ramp-6", "s": 12, "k": 3, "t": 12345.6789, "x": ""}',
    "plain with a dot-word": "ok.Thanks, the release notes are in the wiki now",
    "bold, code, link": "**ship it** after `make test` passes, see https://example.com/pr/42 for details",
    "@mention + URL": "@alice can you check https://example.com/issue/7 and ping @room?",
    "quote + list, 6 lines": "> the build is red\n\n- migrations\n- the *flaky* test\n- ~~docs~~\n1. fix",
    "fenced code, 10 lines": "```\n"
    + "\n".join(f"line {i} = value({i}) < {i + 1}" for i in range(10))
    + "\n```",
    "4,000 chars of prose": ("lorem ipsum dolor sit amet, " * 150)[:4000],
    "XSS payload": "<script>alert(1)</script>[x](javascript:alert(1))<img src=x onerror=alert(1)>",
}


def main(argv: list[str]) -> int:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()
    from rooms import formatting

    n = int(argv[0]) if argv else 2000
    rounds = int(argv[1]) if len(argv) > 1 else 5
    print(
        f"rooms.formatting.render, µs per body ({rounds} rounds of {n}; median of round means, worst round; "
        "wall clock and this thread's CPU time)"
    )
    print(f"{'body':<26} {'median':>8} {'worst':>8} {'CPU med':>8} {'CPU worst':>9}  {'html chars':>10}")
    for name, body in BODIES.items():
        for _ in range(200):  # warm up
            formatting.render(body)
        means, cpu = [], []
        for _ in range(rounds):
            start, start_cpu = time.perf_counter(), time.thread_time()
            for _ in range(n):
                formatting.render(body)
            means.append((time.perf_counter() - start) / n * 1e6)
            cpu.append((time.thread_time() - start_cpu) / n * 1e6)
        print(
            f"{name:<26} {statistics.median(means):8.1f} {max(means):8.1f} {statistics.median(cpu):8.1f} "
            f"{max(cpu):9.1f}  {len(formatting.render(body)):10d}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
