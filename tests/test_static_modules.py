"""The room page's ES modules (static/rooms/room/*.js) after ``collectstatic``: every relative
import is rewritten to a hashed file that exists (chatsite.staticfiles.ManifestStaticFilesStorage),
so a page never mixes modules of two deploys; the modules form no import cycle (hashed names
cannot be computed for a cycle: collectstatic fails with "Max post-process passes exceeded")."""

import json
import re
from pathlib import Path

from tests.nodes import collected_static_root

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "static" / "rooms" / "room"
# An import or re-export with a relative path: `import { a } from "./x.js";`, `import "./x.js";`,
# `export { a } from "./x.js";` (what Django's pattern rewrites; it needs the semicolon).
IMPORT = re.compile(r"""^(?:import|export)\b[^;]*?["'](\.{1,2}/[^"']+)["']\s*(;?)""", re.M | re.S)


def source_imports(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"/\*[\s\S]*?\*/|^\s*//.*$", "", path.read_text(), flags=re.M)
    return IMPORT.findall(text)


def test_every_module_import_is_relative_with_a_semicolon_and_there_is_no_cycle():
    graph = {}
    for path in sorted(MODULES.glob("*.js")):
        imports = source_imports(path)
        for target, semicolon in imports:
            assert semicolon == ";", f"{path.name}: the import of {target} needs a semicolon"
            assert (MODULES / target).resolve().is_file(), f"{path.name} imports a missing {target}"
        graph[path.name] = [Path(target).name for target, _ in imports]
    assert "main.js" in graph

    done, on_path = set(), []

    def visit(name):
        assert name not in on_path, f"import cycle: {' -> '.join(on_path[on_path.index(name) :] + [name])}"
        if name in done:
            return
        on_path.append(name)
        for target in graph[name]:
            visit(target)
        on_path.pop()
        done.add(name)

    for name in graph:
        visit(name)
    # every module is reached from main.js (a module nobody imports would never run)
    reached = set()

    def reach(name):
        if name not in reached:
            reached.add(name)
            for target in graph[name]:
                reach(target)

    reach("main.js")
    assert reached == set(graph), f"not imported by the page: {sorted(set(graph) - reached)}"


def test_collected_modules_import_each_other_by_hashed_names_that_exist():
    root = Path(collected_static_root())
    manifest = json.loads((root / "staticfiles.json").read_text())["paths"]
    for path in sorted(MODULES.glob("*.js")):
        name = f"rooms/room/{path.name}"
        hashed = root / manifest[name]
        assert hashed.name != path.name, f"{name} was not given a hashed name"
        imports = [target for target, _ in source_imports(hashed)]
        assert len(imports) == len(source_imports(path)), f"{name}: an import was lost or added"
        for target in imports:
            assert re.search(r"\.[0-9a-f]{12}\.js$", target), f"{name} still imports {target} unhashed"
            assert (hashed.parent / target).resolve().is_file(), f"{name} imports {target}, not collected"
