"""Make the benchmark's data: its database (created when missing, then migrated), the users
``bench-0 .. bench-(N-1)`` with API tokens (``rest_framework.authtoken``) and the rooms
``r0 .. r(R-1)`` (the slugs ../shared/peers/loadgen.js expects too).

Run as a subprocess with the product's settings and ``DATABASE_URL`` set::

    python -m bench.prepare --users 1000 --rooms 50

Prints one JSON object on stdout: ``{"tokens": [key of bench-0, ...], "rooms": ["r0", ...]}``.
Idempotent: existing users, tokens and rooms are reused; messages are never deleted.
"""

import argparse
import json
import os
import sys


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of ``url`` when it does not exist; True when created."""
    import environ
    import psycopg
    from psycopg import sql

    cfg = environ.Env.db_url_config(url)
    if cfg["ENGINE"] != "django.db.backends.postgresql":
        return False
    params = {
        "host": cfg.get("HOST") or "127.0.0.1",
        "port": cfg.get("PORT") or 5432,
        "user": cfg.get("USER") or None,
        "password": cfg.get("PASSWORD") or None,
        "dbname": "postgres",
        "connect_timeout": 5,
        "autocommit": True,
    }
    with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]]).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg["NAME"])))
        return True


def make_data(*, users: int, rooms: int, rooms_each: int = 1, memberships: str = "as-is") -> dict:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from rooms import services
    from rooms.models import Room

    User = get_user_model()
    names = [f"bench-{i}" for i in range(users)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    missing = []
    for name in names:
        if name not in existing:
            u = User(username=name)
            u.set_unusable_password()  # token-only users; no password hashing per user
            missing.append(u)
    User.objects.bulk_create(missing, batch_size=500)
    by_name = dict(User.objects.filter(username__in=names).values_list("username", "pk"))
    have_token = set(Token.objects.filter(user_id__in=by_name.values()).values_list("user_id", flat=True))
    Token.objects.bulk_create(
        [Token(user_id=pk, key=Token.generate_key()) for pk in by_name.values() if pk not in have_token],
        batch_size=500,
    )
    keys = dict(Token.objects.filter(user_id__in=by_name.values()).values_list("user_id", "key"))
    owner = User.objects.get(pk=by_name[names[0]]) if names else None
    slugs = [f"r{j}" for j in range(rooms)]
    present = set(Room.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    for slug in slugs:
        if slug not in present:
            services.room_create(name=f"bench {slug}", slug=slug, created_by=owner)
    if memberships == "none":  # every connect is a new member's join (member.updated to the room)
        from rooms.models import Membership

        Membership.objects.filter(room__slug__in=slugs, user_id__in=by_name.values()).delete()
    if (
        rooms_each > 1 or memberships == "all"
    ):  # user i is a member of rooms i % R .. (i % R + rooms_each - 1) % R
        from rooms.models import Membership

        room_ids = dict(Room.objects.filter(slug__in=slugs).values_list("slug", "pk"))
        Membership.objects.bulk_create(
            [
                Membership(
                    room_id=room_ids[slugs[(i + k) % rooms]],
                    user_id=by_name[name],
                    role=Membership.Role.MEMBER,
                )
                for i, name in enumerate(names)
                for k in range(min(rooms_each, rooms))
            ],
            batch_size=2000,
            ignore_conflicts=True,
        )
    return {"tokens": [keys[by_name[n]] for n in names], "rooms": slugs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--rooms", type=int, required=True)
    parser.add_argument("--rooms-each", type=int, default=1, help="rooms each user is a member of")
    parser.add_argument(
        "--memberships",
        choices=["as-is", "all", "none"],
        default="as-is",
        help="all: every user a member of its rooms before connecting (members coming back); none: no "
        "user a member (each connect joins the public room as a new member); as-is: what the database holds",
    )
    parser.add_argument("--no-migrate", action="store_true")
    args = parser.parse_args(argv)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print("bench.prepare: DATABASE_URL must name a PostgreSQL database", file=sys.stderr)
        return 2
    created = ensure_database(url)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django
    from django.core.management import call_command

    django.setup()
    if not args.no_migrate:
        call_command("migrate", interactive=False, verbosity=0, stdout=sys.stderr)
    data = make_data(
        users=args.users, rooms=args.rooms, rooms_each=args.rooms_each, memberships=args.memberships
    )
    data["database_created"] = created
    json.dump(data, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
