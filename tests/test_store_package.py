"""The store is SQL only: its modules import the engine's types, the errors, the database and
number helpers, and nothing of a front, a web framework or a provider's SDK."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

STORE = REPO / "proxy" / "store"
ALLOWED_PROXY = ("proxy.policy", "proxy.errors", "proxy.db", "proxy.phone", "proxy.fields",
                 "proxy.store")
ALLOWED_LIBRARIES = {"asyncpg", "msgspec", "orjson"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            assert node.module is not None
            names.add(node.module)
            if node.module == "proxy":  # `from proxy import x` imports proxy.x
                names.update(f"proxy.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(STORE.glob("*.py")), ids=lambda p: p.name)
def test_a_store_module_imports_only_the_core(path: Path) -> None:
    for name in imported(path) - {"__future__", "proxy"}:
        top = name.split(".")[0]
        if top == "proxy":
            assert name.startswith(ALLOWED_PROXY), f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in ALLOWED_LIBRARIES, (
                f"{path.name} imports {name}")

