"""The REST API keeps to its own OpenAPI schema (``/api/schema/``, drf-spectacular).

The schema must be valid OpenAPI (openapi-spec-validator), and Schemathesis, driven by it
against one real daphne node, must find no answer outside it: no server error, no status, media
type, body or header the schema does not document. A drift from the schema fails this module
(``test_a_response_that_drifts_from_the_schema_fails_the_fuzzer`` proves the harness catches one).
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import jsonschema
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.management import call_command
from openapi_spec_validator import validate
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from rooms import services
from rooms.api import exception_handler
from rooms.models import Room
from rooms.pagination import MAX_LIMIT
from tests import factories
from tests.nodes import TEST_SECRET_KEY, database_url_for_tests, start_node, wait_healthy

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)
SEED = 17
EXAMPLES_PER_OPERATION = 25
FUZZ_TIMEOUT = 240  # seconds; a run takes about 30 s on this machine's 2 cores


def served_schema(client) -> dict:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_served_schema_is_valid_openapi(client):
    validate(served_schema(client))  # raises OpenAPIValidationError with the offending part


def test_the_schema_generates_without_warnings(tmp_path):
    # drf-spectacular warns (and guesses) where a view's answer cannot be resolved: a guess is
    # a drift waiting to happen.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_the_schema_documents_the_history_shape_and_the_page_bounds(client):
    schema = served_schema(client)
    history = schema["paths"]["/api/rooms/{room_slug}/messages/"]["get"]
    assert history["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HistoryPage"
    }
    assert set(schema["components"]["schemas"]["HistoryPage"]["properties"]) == {"results", "has_more"}
    assert "offset" not in {p["name"] for p in history["parameters"]}
    for path in ("/api/rooms/", "/api/rooms/{room_slug}/members/"):
        limit = next(p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "limit")
        assert limit["schema"]["maximum"] == MAX_LIMIT
    # In a code span: bare, Swagger UI's Markdown dropped <slug> as a tag and showed /ws/rooms//.
    assert "`/ws/rooms/{slug}/`" in schema["info"]["description"]
    assert "`/ws/user/`" in schema["info"]["description"]  # the sidebar's socket
    for path in ("/api/auth/token/", "/api/rooms/{room_slug}/messages/"):  # the throttled routes
        assert "Retry-After" in schema["paths"][path]["post"]["responses"]["429"]["headers"]


def test_the_schema_documents_joining_as_201_and_joining_again_as_200(client):
    responses = served_schema(client)["paths"]["/api/rooms/{room_slug}/members/"]["post"]["responses"]
    for code in ("200", "201"):
        assert responses[code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Membership"
        }
    assert "Already a member" in responses["200"]["description"]


@pytest.mark.django_db
def test_a_huge_limit_is_clamped_to_the_largest_page_not_a_server_error(user):
    Room.objects.bulk_create(Room(slug=f"r{i}", name=f"r{i}", created_by=user) for i in range(MAX_LIMIT + 5))
    api = APIClient()
    api.force_authenticate(user)
    for limit in (2**63, 2**64, 10**6, MAX_LIMIT + 1):
        response = api.get("/api/rooms/", {"limit": limit})
        assert response.status_code == 200, (limit, response.content[:200])
        assert len(response.data["results"]) == MAX_LIMIT
        assert f"limit={MAX_LIMIT}&" in response.data["next"]
    response = api.get("/api/rooms/", {"limit": 2**64, "offset": 2**64})
    assert response.status_code == 200 and response.data["results"] == []


def fits(schema: dict, component: str, body) -> bool:
    """Whether ``body`` is valid against ``#/components/schemas/<component>`` of ``schema``."""
    document = {"components": schema["components"], "$ref": f"#/components/schemas/{component}"}
    return jsonschema.Draft7Validator(document).is_valid(body)


@pytest.mark.parametrize(
    "error, status, component",
    [
        (services.RateLimited(1.2), 429, "Error"),
        (services.Muted("You are muted.", until="2030-01-01T00:00:00Z"), 403, "Error"),
        (services.NotFound("No such room."), 404, "Error"),
        (DjangoValidationError("The slug is taken."), 400, "ValidationError"),
        (DjangoValidationError({"slug": ["The slug is taken."]}), 400, "ValidationError"),
        (
            DjangoValidationError(
                {"slug": [DjangoValidationError("Not available.", code="slug_unavailable")]}
            ),
            400,
            "ValidationError",
        ),
        (RequestDataTooBig(), 413, "Error"),
        (TooManyFieldsSent(), 400, "ValidationError"),
        (exceptions.Throttled(3), 429, "Error"),
        (exceptions.NotAuthenticated(), 401, "Error"),
    ],
)
def test_every_error_body_the_handler_builds_has_a_documented_shape(client, error, status, component):
    response = exception_handler(error, {})
    assert response.status_code == status
    assert fits(served_schema(client), component, json.loads(JSONRenderer().render(response.data)))
    if status == 429:
        assert int(response["Retry-After"]) >= 1  # whole seconds, rounded up, as the schema says


# --- Schemathesis against a real node ------------------------------------------------------------


@pytest.fixture
def node(db, tmp_path):
    """One daphne node on this test run's database. REST sends are limited to 30 a minute, so
    the fuzzer meets 429 (which must be documented, with ``Retry-After``); log-ins get room
    for the fuzzer's failed ones, so its real log-in is answered 200 and checked too (the
    log-in limit's own 429 is tested in tests/test_api.py)."""
    env = {
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CHANNEL_LAYER_PREFIX": f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_POOL_MAX_SIZE": "4",
        "THROTTLE_SEND_RATE": "30/min",
        "THROTTLE_LOGIN_RATE": "1000/min",
    }
    node = start_node("node-1", env=env, log_dir=tmp_path)
    try:
        wait_healthy(node)
        yield node
    finally:
        node.stop()


@pytest.fixture
def world(db):
    """Rooms seen from the fuzzer's user, each with messages of its own and of another member:
    ``lobby`` (its owner), ``club`` (a plain member: moderation is refused), ``archive``
    (archived: sends refused), ``scratch`` (its owner; free to archive), and ``hidden``, a
    private room of someone else's (which must answer 404 like a missing one)."""
    fuzzer = factories.make_user("fuzzer")
    # Hashed as the node hashes (tests hash with MD5, which the node does not take), so the
    # fuzzer's log-ins with it succeed.
    hasher = PBKDF2PasswordHasher()
    fuzzer.password = hasher.encode(factories.PASSWORD, hasher.salt())
    fuzzer.save(update_fields=["password"])
    other = factories.make_user("other")
    stranger = factories.make_user("stranger")
    ids = []
    for slug, owner, member in [
        ("lobby", fuzzer, other),
        ("club", other, fuzzer),
        ("archive", fuzzer, other),
    ]:
        room = factories.make_room(created_by=owner, slug=slug, description="fuzzed")
        services.member_join(room=room, user=member)
        ids += [
            services.message_post(
                room=room, author=author, body=f"{slug} {i}", client_msg_id=f"{slug}-{i}"
            ).message.pk
            for i, author in enumerate([owner, member] * 2)
        ]
        if slug == "archive":
            services.room_archive(room=room, actor=owner)
    factories.make_room(created_by=fuzzer, slug="scratch")
    factories.make_room(created_by=stranger, slug="hidden", is_private=True)
    return {"token": factories.token_for(fuzzer), "message_ids": ids}


def fuzzer_config(tmp_path: Path, world: dict) -> Path:
    """Path parameters drawn mostly (80 %) from real objects, so the fuzzer reaches the logic
    behind the 404, half the user names and slugs in bodies real ones (a member added; a room
    created with a taken slug, a private room's among them), and most log-ins real (answered
    200 with a token); the rest stay generated. ``rooms/{slug}/`` gets ``scratch`` (and the
    refusing ``club`` and ``hidden``), never ``lobby``: archiving ``lobby`` (``DELETE``) would
    make every later send to it a 409."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"""
[dictionaries.rooms]
values = ["lobby", "club", "archive", "hidden"]
[dictionaries.scratch]
values = ["scratch", "club", "hidden"]
[dictionaries.users]
values = ["me", "other", "fuzzer", "stranger"]
[dictionaries.messages]
values = {json.dumps(world["message_ids"])}
[dictionaries.logins]
values = ["fuzzer"]
[dictionaries.passwords]
values = [{json.dumps(factories.PASSWORD)}]

[parameters]
"path.room_slug" = {{ dictionary = "rooms", probability = 0.8 }}
"path.slug" = {{ dictionary = "scratch", probability = 0.8 }}
"path.username" = {{ dictionary = "users", probability = 0.8 }}
"path.id" = {{ dictionary = "messages", probability = 0.8 }}
"body.username" = {{ dictionary = "users", probability = 0.5 }}
"body.slug" = {{ dictionary = "rooms", probability = 0.5 }}

[[operations]]
include-operation-id = "auth_token_create"
parameters = {{ "body.username" = {{ dictionary = "logins", probability = 0.6 }}, "body.password" = {{ dictionary = "passwords", probability = 0.6 }} }}
""")
    return config


def run_schemathesis(
    schema: str, *args: str, cwd: Path, config: Path | None = None, base_url: str | None = None
):
    """``st run`` in a subprocess (its state, if any, stays in ``cwd``), bounded in time."""
    command = [sys.executable, "-m", "schemathesis.cli"]
    if config is not None:
        command += ["--config-file", str(config)]
    command += [
        "run",
        schema,
        "--checks",
        CHECKS,
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--generation-database",
        "none",
        # Generous: the machine's 2 cores are shared; a slow answer is not what this checks.
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "too_slow",
        "--no-color",
        *args,
    ]
    if base_url:
        command += ["--url", base_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=FUZZ_TIMEOUT, cwd=cwd)


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
def test_schemathesis_finds_no_answer_outside_the_schema_on_a_real_node(node, world, tmp_path, client):
    schema = f"{node.http}/api/schema/"
    methods = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
    total = sum(len(methods & set(ops)) for ops in served_schema(client)["paths"].values())
    result = run_schemathesis(
        schema,
        "--header",
        f"Authorization: Token {world['token']}",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        # DELETE /api/auth/token/ revokes the very token every other request authenticates
        # with: after its first call the rest of the run would see only 401s. It is fuzzed
        # below on its own, with a token of its own.
        "--exclude-operation-id",
        "auth_token_destroy",
        # The multipart upload: a malformed multipart body is refused by daphne's Twisted with an
        # empty 400 (no Content-Type) before Django sees it, which no schema can document beside
        # the route's JSON 400s; its answers (201, 400, 404, 413, 415) are tested in
        # tests/test_attachments.py.
        "--exclude-operation-id",
        "rooms_attachments_create",
        config=fuzzer_config(tmp_path, world),
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{result.stdout[-20000:]}\n{result.stderr[-5000:]}\n{node.log()[-5000:]}"
    assert f"{total - 2} selected / {total} total" in result.stdout, result.stdout[:2000]  # all the others

    throwaway = factories.token_for(factories.make_user("throwaway"))
    result = run_schemathesis(
        schema,
        "--header",
        f"Authorization: Token {throwaway}",
        "--max-examples",
        "5",
        "--include-operation-id",
        "auth_token_destroy",
        cwd=tmp_path,
    )
    assert result.returncode == 0, f"{result.stdout[-20000:]}\n{result.stderr[-5000:]}\n{node.log()[-5000:]}"
    assert "1 selected" in result.stdout, result.stdout[:2000]


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
def test_a_response_that_drifts_from_the_schema_fails_the_fuzzer(node, world, tmp_path, client):
    """The harness can fail: against a schema drifted the way issue 17 found it (history as a
    limit/offset page with ``count``; a room's 404 undocumented), the same run fails with
    ST108 (response violates schema) and ST103 (undocumented status)."""
    schema = served_schema(client)
    schema["components"]["schemas"]["HistoryPage"]["required"] = ["count", "results"]
    schema["components"]["schemas"]["HistoryPage"]["properties"]["count"] = {"type": "integer"}
    del schema["paths"]["/api/rooms/{slug}/"]["get"]["responses"]["404"]
    drifted = tmp_path / "drifted.json"
    drifted.write_text(json.dumps(schema))

    result = run_schemathesis(
        str(drifted),
        "--header",
        f"Authorization: Token {world['token']}",
        "--max-examples",
        "5",
        "--include-operation-id",
        "rooms_messages_list",
        "--include-operation-id",
        "rooms_retrieve",
        config=fuzzer_config(tmp_path, world),
        base_url=node.http,
        cwd=tmp_path,
    )
    assert result.returncode != 0, result.stdout[-5000:]
    assert "ST108" in result.stdout and "ST103" in result.stdout, result.stdout[-5000:]
