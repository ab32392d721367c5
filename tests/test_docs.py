"""The docs are true where they make claims: README stays a short front page, every link resolves,
and the configuration table, the protocol's codes and the REST routes match the code. Fast: files
only, no nodes, no database."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading):
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_readme_is_under_150_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) < 150


def test_every_relative_link_in_readme_and_docs_resolves():
    bad = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md":
                heads = {_slug(h) for h in re.findall(r"^#+\s+(.*)$", dest.read_text(), re.M)}
                if anchor not in heads:
                    bad.append(f"{page.name}: {target} (no such heading)")
    assert not bad, bad


def _settings_vars():
    src = (ROOT / "chatsite" / "settings.py").read_text()
    names = set(re.findall(r'env(?:\.[a-z_]+)?\(\s*"([A-Z][A-Z0-9_]+)"', src))
    names |= set(re.findall(r'environ(?:\.get)?[\(\[]\s*"([A-Z][A-Z0-9_]+)"', src))
    names |= set(re.findall(r'getenv\(\s*"([A-Z][A-Z0-9_]+)"', src))
    return names


def _table_vars():
    text = (ROOT / "docs" / "operations.md").read_text()
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]{3,})(?:=[^`]*)?`", line))
    return names


def test_every_setting_read_from_the_environment_is_in_the_configuration_table():
    missing = _settings_vars() - _table_vars()
    assert not missing, sorted(missing)


def test_every_variable_in_the_configuration_table_is_read_somewhere():
    sources = (
        "\n".join(
            p.read_text(errors="replace")
            for d in ("chatsite", "rooms", "bin")
            for p in (ROOT / d).rglob("*")
            if p.is_file() and p.suffix in ("", ".py", ".sh")
        )
        + (ROOT / "Makefile").read_text()
    )
    unread = {v for v in _table_vars() if v not in sources}
    assert not unread, sorted(unread)


def test_every_websocket_error_and_close_code_is_in_the_protocol_page():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    missing = []
    for name in ("consumers.py", "user_consumer.py"):
        path = ROOT / "rooms" / name
        if not path.exists():
            continue
        src = path.read_text()
        for code in set(re.findall(r'"code":\s*"([a-z_]+)"', src)):
            if code not in doc:
                missing.append(code)
        for close in set(re.findall(r"\b(4\d\d\d)\b", src)):
            if close not in doc:
                missing.append(close)
    assert not missing, sorted(missing)


def test_every_rest_route_is_in_the_rest_page():
    doc = (ROOT / "docs" / "rest.md").read_text()
    src = (ROOT / "rooms" / "api_urls.py").read_text()
    routes = re.findall(r'path\(\s*"([^"]*)"', src)
    assert routes
    missing = [r for r in routes if re.sub(r"<[^>]*>", "", r).split("/")[0] not in doc]
    assert not missing, missing


def test_readme_make_test_is_what_ci_runs():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
