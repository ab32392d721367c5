"""Configuration from the environment, checked in fresh processes (settings load once)."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
KEY = secrets.token_urlsafe(50)  # a key the settings accept outside DEBUG

SHOW = """
import django, json
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({"layer": settings.CHANNEL_LAYERS["default"]["BACKEND"], "engine": db["ENGINE"],
  "pool": "pool" in db.get("OPTIONS", {}), "conn_max_age": db["CONN_MAX_AGE"],
  "server_id": settings.SERVER_ID, "debug": settings.DEBUG, "hosts": settings.ALLOWED_HOSTS}))
"""


def run(code, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SERVER_ID", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")
    }
    clean.update({k: v for k, v in env.items() if v is not None})
    clean["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=clean, capture_output=True, text=True, timeout=60
    )


def settings_with(**env):
    proc = run(SHOW, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_defaults_are_one_node_sqlite_and_in_memory_layer():
    shown = settings_with(SECRET_KEY=KEY)
    assert shown["engine"] == "django.db.backends.sqlite3"
    assert shown["layer"] == "channels.layers.InMemoryChannelLayer"
    assert shown["debug"] is False
    assert shown["server_id"] == os.uname().nodename
    assert "*" not in shown["hosts"]


def test_redis_url_selects_the_pubsub_layer_and_database_url_postgres_with_a_pool():
    shown = settings_with(
        SECRET_KEY=KEY,
        REDIS_URL="redis://127.0.0.1:6379/0",
        SERVER_ID="node-7",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/chatsite",
    )
    assert shown["layer"] == "chatsite.layers.RedisPubSubChannelLayer"
    assert shown["engine"] == "django.db.backends.postgresql"
    assert shown["pool"] is True and shown["conn_max_age"] == 0
    assert shown["server_id"] == "node-7"


def test_secret_key_is_required_when_debug_is_off():
    proc = run(SHOW)
    assert proc.returncode != 0 and "ImproperlyConfigured: SECRET_KEY is not set" in proc.stderr
    assert settings_with(DEBUG="1")["debug"] is True


@pytest.mark.parametrize(
    "key, says",
    [
        (
            "replace-with-a-long-random-string",
            "a placeholder (it contains 'replace')",
        ),  # docker/.env.example's
        ("django-insecure-" + "x1y2z3" * 10, "a placeholder (it contains 'insecure')"),
        ("Change-Me-" + secrets.token_urlsafe(50), "a placeholder (it contains 'change-me')"),
        ("test-only-secret-key", "a placeholder (it contains 'secret-key')"),  # the Makefile's old key
        ("multinode-test-secret", "too short"),
        (secrets.token_urlsafe(30), "too short"),
        ("ab" * 40, "too short or too plain (80 characters, 2 different"),
    ],
)
def test_placeholder_and_short_secret_keys_are_refused_when_debug_is_off(key, says):
    proc = run(SHOW, SECRET_KEY=key)
    assert proc.returncode != 0 and "ImproperlyConfigured: SECRET_KEY is " + says in proc.stderr, proc.stderr
    assert key not in proc.stderr  # the message never repeats the key
    assert settings_with(SECRET_KEY=key, DEBUG="1")["debug"] is True  # development may use any key


def test_docker_env_example_secret_key_is_refused_until_replaced():
    example = dict(
        line.split("=", 1)
        for line in (BASE_DIR / "docker" / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    proc = run(SHOW, SECRET_KEY=example["SECRET_KEY"])
    assert proc.returncode != 0 and "SECRET_KEY is a placeholder" in proc.stderr
    assert settings_with(SECRET_KEY=KEY)["debug"] is False


def test_wildcard_allowed_hosts_is_refused_outside_debug():
    proc = run(SHOW, SECRET_KEY=KEY, ALLOWED_HOSTS="*")
    assert proc.returncode != 0 and "ALLOWED_HOSTS may not contain '*'" in proc.stderr
    assert settings_with(SECRET_KEY=KEY, ALLOWED_HOSTS="a.example,b.example")["hosts"] == [
        "a.example",
        "b.example",
    ]


def test_start_up_warns_once_when_cross_node_delivery_is_off():
    code = "import chatsite.asgi"
    without = run(code, SECRET_KEY=KEY, SERVER_ID="n1")
    assert without.returncode == 0, without.stderr
    assert without.stderr.count("cross-node delivery is OFF") == 1
    with_redis = run(code, SECRET_KEY=KEY, REDIS_URL="redis://127.0.0.1:6379/0")
    assert with_redis.returncode == 0 and "cross-node delivery is OFF" not in with_redis.stderr


def test_check_deploy_has_no_warning_under_production_settings():
    import secrets

    proc = run(
        "from django.core.management import execute_from_command_line; "
        "execute_from_command_line(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="chat.example.com",
        HTTPS="1",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/chatsite",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_membership_never_silently_expires():
    """Sockets that stay open for days keep receiving: the in-memory layer's groups do not expire
    after its default day, the Redis Pub/Sub layer keeps none in Redis to expire, and the node
    sets no socket lifetime unless WS_MAX_LIFETIME asks for one."""
    code = (
        "import django, json; from django.conf import settings; django.setup(); "
        "print(json.dumps(settings.CHANNEL_LAYERS['default'].get('CONFIG', {})))"
    )
    proc = run(code, SECRET_KEY=KEY)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["group_expiry"] >= 365 * 86400
    source = (BASE_DIR / "chatsite" / "serve.py").read_text()
    assert 'websocket_timeout=_env_float("WS_MAX_LIFETIME", -1)' in source


def test_nodes_run_on_uvloop_unless_event_loop_says_asyncio():
    import asyncio

    import uvloop

    from chatsite.serve import use_event_loop

    before = asyncio.get_event_loop_policy()
    try:
        assert use_event_loop("asyncio") == "asyncio"
        assert asyncio.get_event_loop_policy() is before
        assert use_event_loop("uvloop") == "uvloop"
        loop = asyncio.new_event_loop()
        assert isinstance(loop, uvloop.Loop)
        loop.close()
        with pytest.raises(ValueError, match="EVENT_LOOP"):
            use_event_loop("trio")
    finally:
        asyncio.set_event_loop_policy(before)


def manage(*args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "SERVER_ID", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_makemigrations_check_runs_on_a_fresh_checkout_without_any_setting():
    proc = manage("makemigrations", "--check", "--dry-run")
    assert proc.returncode == 0 and "No changes detected" in proc.stdout, proc.stderr


def test_other_commands_without_a_secret_key_say_so_not_models_arent_loaded():
    proc = manage("migrate")
    assert proc.returncode != 0 and "ImproperlyConfigured: SECRET_KEY is not set" in proc.stderr
    assert "AppRegistryNotReady" not in proc.stderr
    assert manage("help").returncode == 0
