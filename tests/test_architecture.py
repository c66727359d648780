"""The layout shows the architecture: packages depend on each other in one direction only, and
``stages/`` holds the pipeline's stages (what the CLI runs), nothing else."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "modelyard"
#: The modules of ``stages/``: one per stage of the pipeline (fetch and prepare are ``data``),
#: and ``init_project`` (``modelyard init``, the project file the pipeline starts from).
STAGES = {
    "fetch",
    "prepare",
    "train",
    "evaluate",
    "export",
    "sweep",
    "crossval",
    "promote",
    "demo",
    "monitor",
    "init_project",
}


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules imported when the file runs: ``if TYPE_CHECKING:`` blocks are left out."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def package_dependencies() -> dict[str, set[str]]:
    """modelyard subpackage -> the other subpackages its modules import (lazily or not)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue  # cli.py and __main__.py sit on top of everything
        for module in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = module.split(".")
            if names[0] == "modelyard" and len(names) > 1 and names[1] != parts[0]:
                edges[parts[0]].add(names[1])
    return edges


def test_packages_depend_on_each_other_in_one_direction() -> None:
    edges = package_dependencies()
    loops = sorted(
        f"{a} <-> {b}" for a, targets in edges.items() for b in targets if a in edges.get(b, ())
    )
    assert not loops, loops


def test_core_depends_on_no_other_package() -> None:
    assert not package_dependencies().get("core"), package_dependencies().get("core")


def test_stages_holds_the_stages_only() -> None:
    modules = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__"}
    assert modules == STAGES
