"""The tests and the benchmarks share ``testkit`` and nothing else: the tests never reach into ``bench``
(whose extra, e.g. psutil, a fresh ``pip install -e '.[dev]'`` does not bring), ``bench`` never into
``tests``, and Interlock itself imports none of the three."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.processes import ROOT

# package -> the first-party top-level packages it must not import, at any depth (lazy imports too)
FORBIDDEN = {
    "tests": {"bench"},
    "bench": {"tests"},
    "testkit": {"tests", "bench"},
    **{product: {"tests", "bench", "testkit"} for product in ("interlock", "actors", "web", "models")},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in the file, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_their_boundary(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules under {package}/"
    crossings = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_packages(path) & FORBIDDEN[package])
    ]
    assert crossings == []
