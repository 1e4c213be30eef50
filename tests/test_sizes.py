"""The house stays small enough to read: no function over 60 lines, no class over 300, no bot/flow module over 300.

Read from the source with :mod:`ast` (a function's span is its ``def`` line, decorators excluded, to its last line),
over every ``.py`` outside ``simulator/`` (tests included), virtual environments and ``node_modules``. What is not split yet
is listed in :data:`EXEMPT`, each with why; an entry that no longer exceeds its limit fails the check too, so the list
only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION = 60
MAX_CLASS = 300
MAX_FLOW_MODULE = 299  # "under 300 lines"
NOT_SCANNED = {"simulator"}  # the simulator stands in for Microsoft's cloud and keeps its own shapes

#: ``(path, qualified name)`` → why it is still over its limit. Shrink this list; never grow it.
EXEMPT: dict[tuple[str, str], str] = {}
#: Folders whose code is frozen once written: a migration must keep doing exactly what it did when it shipped.
EXEMPT_FOLDERS = ("bot/migrations/versions/",)


def python_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if parts[0] in NOT_SCANNED or any(p.startswith(".") or p == "node_modules" for p in parts):
            continue
        yield path


def spans(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, str, int]]:
    """``(kind, qualified name, lines)`` of every function and class, nested ones as ``Outer.inner``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            yield kind, name, (node.end_lineno or node.lineno) - node.lineno + 1
            yield from spans(node, f"{name}.")
        else:
            yield from spans(node, prefix)


def oversized() -> dict[tuple[str, str], str]:
    """Everything over its limit, exempt or not: ``(path, name)`` → what and how long."""
    found: dict[tuple[str, str], str] = {}
    for path in python_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(EXEMPT_FOLDERS):
            continue
        text = path.read_text(encoding="utf-8")
        for kind, name, lines in spans(ast.parse(text, filename=rel)):
            limit = MAX_CLASS if kind == "class" else MAX_FUNCTION
            if lines > limit:
                found[(rel, name)] = f"{kind} of {lines} lines (limit {limit})"
        if rel.startswith("bot/flow/") and len(text.splitlines()) > MAX_FLOW_MODULE:
            found[(rel, "<module>")] = f"module of {len(text.splitlines())} lines (limit {MAX_FLOW_MODULE})"
    return found


def test_the_reader_sees_functions_classes_and_nesting() -> None:
    source = (
        "class A:\n    def f(self):\n        def g():\n            pass\n        return g\n\nasync def h():\n    pass\n"
    )
    assert list(spans(ast.parse(source))) == [
        ("class", "A", 5),
        ("function", "A.f", 4),
        ("function", "A.f.g", 2),
        ("function", "h", 2),
    ]
    scanned = {path.relative_to(ROOT).parts[0] for path in python_files()}
    assert {"app.py", "bot", "bench", "cards", "manifest"} <= scanned
    assert not scanned & (NOT_SCANNED | {".venv", "node_modules"})


def test_no_function_class_or_flow_module_over_its_limit() -> None:
    found = oversized()
    new = sorted(f"{path}: {name}: {what}" for (path, name), what in found.items() if (path, name) not in EXEMPT)
    assert not new, "split into well-named pieces (or, for a frozen file, say why in EXEMPT):\n" + "\n".join(new)


def test_every_exemption_is_still_needed() -> None:
    found = oversized()
    stale = sorted(f"{path}: {name}" for path, name in EXEMPT if (path, name) not in found)
    assert not stale, "within its limit now: remove from EXEMPT in tests/test_sizes.py:\n" + "\n".join(stale)
