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


# The lookups that import a module by name (pipeline/kinds/__init__.py, pipeline/data/__init__.py):
# a lookup module in a closure brings in the module it would import for each name looked up.
LOOKUPS = {Path("pipeline/kinds/registry.py"): ("head", "pipeline.kinds.{}"),
           Path("pipeline/kinds/specs.py"): ("head", "pipeline.kinds.{}_spec"),
           Path("pipeline/data/registry.py"): ("data", "pipeline.data.{}")}


def lookup_closure(root: Path, module: str, names: dict[str, set[str]]) -> set[Path]:
    """`import_closure` of `module` plus, wherever a lookup module is in it, the closure of each
    module it would import for `names` ({"head": heads looked up, "data": data kinds looked up})."""
    closure = import_closure(root, module)
    grown = True
    while grown:
        grown = False
        for lookup, (field, template) in LOOKUPS.items():
            if lookup not in closure:
                continue
            for name in sorted(names.get(field, ())):
                more = import_closure(root, template.format(name))
                if not more <= closure:
                    closure |= more
                    grown = True
    return closure
