"""The emulator is the client's independent counterpart: it imports nothing of the product."""

from __future__ import annotations

import ast
from pathlib import Path

import emulator

_PRODUCT_PACKAGES = ("worker", "tasks", "config", "cli")


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_no_emulator_module_imports_worker_tasks_config_or_cli() -> None:
    """Every module under emulator/ imports only the standard library, third parties and emulator.*."""
    package_dir = Path(emulator.__file__).parent
    sources = sorted(package_dir.rglob("*.py"))
    assert len(sources) > 10
    offending = {
        f"{path.name}: {module}"
        for path in sources
        for module in _imported_modules(path)
        if module.split(".", 1)[0] in _PRODUCT_PACKAGES
    }
    assert offending == set()
