"""The architecture stays readable from the tree: docs/LAYOUT.md's import rules hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "esl_app"


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _modules(*parts: str) -> list[Path]:
    return sorted(p for part in parts for p in (PKG / part).rglob("*.py"))


def test_the_package_holds_only_packages() -> None:
    loose = sorted(p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py",
                                                                      "__main__.py"))
    assert loose == [], f"loose modules beside the packages: {loose}"


def test_support_modules_are_leaves() -> None:
    for path in _modules("support"):
        assert not [m for m in _imports(path, top_level_only=False)
                    if m.startswith("esl_app")], path.name


def test_nothing_outside_sim_and_cli_imports_the_offline_kit_at_import_time() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).parts
        if rel[0] in ("sim", "cli"):
            continue
        if any(m == "esl_app.sim" or m.startswith("esl_app.sim.")
               for m in _imports(path, top_level_only=True)):
            offenders.append(str(path.relative_to(PKG)))
    assert offenders == []


def test_lower_layers_do_not_reach_up() -> None:
    rules = {("telephony", "media"): ("esl_app.runtime", "esl_app.cli", "esl_app.web",
                                      "esl_app.sim"),
             ("providers",): ("esl_app.telephony", "esl_app.runtime", "esl_app.cli",
                              "esl_app.sim", "esl_app.web"),
             ("scheduling", "db", "config"): ("esl_app.telephony", "esl_app.runtime",
                                              "esl_app.providers", "esl_app.sim")}
    offenders = []
    for parts, banned in rules.items():
        for path in _modules(*parts):
            for mod in _imports(path, top_level_only=False):
                if mod.startswith(banned) and not mod.startswith("esl_app.support.bridge"):
                    offenders.append(f"{path.relative_to(PKG)} imports {mod}")
    assert offenders == []


def test_a_production_worker_wires_its_calls_without_the_offline_kit(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from esl_app.runtime import workers, wiring\n"
            "from esl_app.telephony import server, call, audio\n"
            "from esl_app.http import app\n"
            "cache, stt_for = wiring.for_profile('local')\n"
            "assert stt_for is None and type(cache) is wiring.ProviderCache\n"
            "print(sorted(m for m in sys.modules if m.startswith('esl_app.sim')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_import_cycle_at_module_level() -> None:
    """Importing any module never needs itself back half-initialised."""
    modules = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for mod in _imports(path, top_level_only=True):
            while mod and mod not in modules:  # "pkg.mod.attr" -> "pkg.mod"
                mod = mod.rpartition(".")[0]
            if mod and mod != name:
                deps.add(mod)
        graph[name] = deps
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
