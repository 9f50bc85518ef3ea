"""The layers of ARCHITECTURE.md hold: the import contracts in pyproject.toml ([tool.importlinter]) are kept,
every module is in a layer, and no module imports itself round a circle.

import-linter runs in a subprocess on a given tree (grimp finds packages through sys.path and sys.modules, and
this process has already imported the real ones), so the same check runs on a doctored copy to show that it
catches an upward import, a circle and a module no layer names.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "audit", "recsys")

# Strongly connected groups of the whole module graph (across packages too: acyclic_siblings only compares
# modules that share a parent package), by Tarjan's algorithm on grimp's graph.
_CYCLES = """
import json, sys
import grimp
g = grimp.build_graph(*sys.argv[1:])
idx, low, stack, on, out, n = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    idx[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in g.find_modules_directly_imported_by(v):
        if w not in idx:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        group = []
        while True:
            w = stack.pop(); on.discard(w); group.append(w)
            if w == v: break
        if len(group) > 1: out.append(sorted(group))
for m in sorted(g.modules):
    if m not in idx: visit(m)
print(json.dumps(out))
"""


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """`lint-imports` in `tree` (its pyproject.toml, its packages), as a developer runs it by hand."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"],
                          cwd=tree, env=_env(tree), capture_output=True, text=True, timeout=120)


def import_circles(tree: Path) -> list[list[str]]:
    done = subprocess.run([sys.executable, "-c", _CYCLES, *PACKAGES], cwd=tree, env=_env(tree),
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def layer_entries(tree: Path) -> list[str]:
    config = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    entries = []
    for layer in layers["layers"]:
        sep = "|" if "|" in layer else ":"
        entries += [part.strip() for part in layer.split(sep)]
    return entries


def modules(tree: Path) -> list[str]:
    out = []
    for package in PACKAGES:
        for path in sorted((tree / package).rglob("*.py")):
            parts = path.relative_to(tree).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def unplaced(tree: Path) -> list[str]:
    """Modules in no layer. The packages `recsys` and `audit` themselves span several layers and are in none:
    their __init__ must import nothing, or it would be a way round the contracts."""
    entries = layer_entries(tree)
    out = []
    for module in modules(tree):
        if module in ("recsys", "audit"):
            tree_ = ast.parse((tree / module / "__init__.py").read_text())
            if any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(tree_)):
                out.append(module)
        elif not any(module == e or module.startswith(e + ".") for e in entries):
            out.append(module)
    return out


def test_the_import_contracts_are_kept():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_module_is_in_a_layer():
    assert unplaced(ROOT) == []
    entries = layer_entries(ROOT)
    assert len(entries) == len(set(entries))
    assert [e for e in entries if e not in modules(ROOT)] == []   # no stale names either


def test_no_import_circles_anywhere():
    assert import_circles(ROOT) == []


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_checks_catch_an_upward_import_a_circle_and_an_unplaced_module(tmp_path):
    tree = _copy(tmp_path)
    assert unplaced(tree) == []
    # recsys core reaching up into audit (inside a function: lazy imports count too) ...
    with open(tree / "recsys" / "pipeline.py", "a") as f:
        f.write("\n\ndef _sneaky():\n    from audit.stage import AuditStage\n\n    return AuditStage\n")
    # ... a circle within recsys core (pipeline imports lru) ...
    with open(tree / "recsys" / "lru.py", "a") as f:
        f.write("\nimport recsys.pipeline  # noqa: E402\n")
    # ... audit importing the transport, and a module no layer names.
    (tree / "audit" / "new_thing.py").write_text("import service.config  # noqa: F401\n")

    done = lint_imports(tree)
    out = done.stdout
    assert done.returncode != 0, out
    assert "Layers: service > applications > composition root > audit > recsys core BROKEN" in out
    assert "recsys.pipeline -> audit.stage" in out
    assert "No import circles among the modules of any package BROKEN" in out
    assert "Only the transport imports service BROKEN" in out
    assert "audit.new_thing -> service.config" in out
    assert any({"recsys.lru", "recsys.pipeline"} <= set(group) for group in import_circles(tree))
    assert unplaced(tree) == ["audit.new_thing"]
