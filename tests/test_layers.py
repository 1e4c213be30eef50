"""The import graph keeps its walls: the bot never imports the simulator, cards import only the text layer of bot/.

Read from the source (every import statement, also those inside functions), so a lazy import cannot hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What cards/ may import from bot/, and what those modules may import from bot/ in turn.
TEXT_LAYER = {"bot.messages", "bot.markup", "bot.decision"}
CARDS_MAY_IMPORT = {"bot.messages", "bot.markup"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from bot import messages`` → ``bot.messages``)."""
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if is_module(candidate) else base)
    return found


def modules_under(folder: str) -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted((ROOT / folder).rglob("*.py"))}


def test_the_reader_resolves_the_forms_used_here() -> None:
    cards = modules_under("cards")
    assert "bot.messages" in cards["cards.deprovision"]  # from bot import messages as m
    assert "bot.markup" in cards["cards.elements"]  # from bot.markup import Markup, md
    flow = modules_under("bot/flow")
    assert any(name.startswith("bot.") for imports in flow.values() for name in imports)


@pytest.mark.parametrize("folder", ["bot", "cards"])
def test_production_code_never_imports_the_simulator_tests_or_bench(folder: str) -> None:
    offenders = {
        module: sorted(name for name in imports if name.split(".")[0] in {"simulator", "tests", "bench"})
        for module, imports in modules_under(folder).items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_cards_import_only_the_text_layer_of_bot() -> None:
    from_bot = {
        module: sorted(name for name in imports if name == "bot" or name.startswith("bot."))
        for module, imports in modules_under("cards").items()
    }
    assert {m: names for m, names in from_bot.items() if not set(names) <= CARDS_MAY_IMPORT} == {}


def test_the_text_layer_depends_on_nothing_else_in_bot() -> None:
    bot = modules_under("bot")
    for module in sorted(TEXT_LAYER):
        from_bot = {name for name in bot[module] if name.startswith("bot.")}
        assert from_bot <= TEXT_LAYER, (module, from_bot - TEXT_LAYER)
