"""Packaging: everything the package imports at run time is a runtime dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llamaserve"


def _imported_modules() -> dict[str, set[str]]:
    """Top-level modules imported anywhere in the package → the files that import them."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_requirements() -> set[str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_normalise(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0])
            for req in project["dependencies"]}


def test_every_imported_module_is_a_runtime_dependency() -> None:
    declared = _runtime_requirements()
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(_imported_modules().items()):
        if module in sys.stdlib_module_names or module in {"llamaserve", "__future__"}:
            continue
        owners = {_normalise(d) for d in distributions.get(module, [])}
        assert owners, f"no installed distribution provides '{module}' ({sorted(files)})"
        if not owners & declared:
            missing.append(f"{module} (from {', '.join(sorted(owners))}; "
                           f"imported by {', '.join(sorted(files))})")
    assert not missing, "imported at run time but not in [project].dependencies: " + \
        "; ".join(missing)
