"""The local import closure of a module, read from the code's own import statements (AST),
so that tests can hold dvc.yaml's `deps` to what each stage really runs."""

from __future__ import annotations

import ast
from pathlib import Path

LOCAL_PACKAGES = ("pipeline",)


def module_file(root: Path, module: str) -> Path | None:
    """The file of a local module or package, or None when it is not local."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in `path` names, at any depth (function-level too).
    `from a.b import c` names a.b, and a.b.c in case c is a submodule."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def import_closure(root: Path, module: str, packages: tuple[str, ...] = LOCAL_PACKAGES) -> set[Path]:
    """The files (relative to root) that running `python -m <module>` executes from this
    repository: the module, what it imports, transitively, and their packages' __init__.py."""
    closure: set[Path] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if not name.startswith(tuple(f"{p}." for p in packages)) and name not in packages:
            continue
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            path = module_file(root, ".".join(parts[:depth]))
            if path is None or path.relative_to(root) in closure:
                continue
            closure.add(path.relative_to(root))
            pending.extend(imported_modules(path))
    return closure
