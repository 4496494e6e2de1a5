"""Rules for the package's code as a whole: documented public API, no import circles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "durable_sessions"


def modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts]


def _overload(node: ast.AST) -> bool:
    decorators = getattr(node, "decorator_list", [])
    return any(getattr(d, "id", getattr(d, "attr", None)) == "overload" for d in decorators)


def test_every_module_and_public_function_and_class_has_a_docstring():
    missing = []
    for path in modules():
        tree = ast.parse(path.read_text())
        if not ast.get_docstring(tree):
            missing.append(f"{path.relative_to(PACKAGE)}: the module")

        def walk(node: ast.AST, prefix: str, path: Path = path) -> None:
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    continue
                if child.name.startswith("_") or _overload(child) or child.name == "Meta":
                    continue
                if not ast.get_docstring(child):
                    missing.append(
                        f"{path.relative_to(PACKAGE)}:{child.lineno}: {prefix}{child.name}"
                    )
                if isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")

        walk(tree, "")
    assert not missing, "\n".join(missing)


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    names = {}
    for path in modules():
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names[name] = path
    graph: dict[str, set[str]] = {name: set() for name in names}
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                graph[name].add(node.module)
                graph[name].update(
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if f"{node.module}.{a.name}" in names
                )
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in names)
    packages = {name for name, path in names.items() if path.name == "__init__.py"}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()] - packages:  # a package re-exports, it is the edge
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    circles = sorted(name for name in names if name not in packages and name in reach(name))
    assert not circles, f"modules in an import circle: {circles}"
