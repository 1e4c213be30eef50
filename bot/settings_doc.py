"""The README's configuration table, generated from :data:`bot.settings.VARIABLES`.

``python -m bot.settings_doc`` rewrites the table between the two markers in README.md;
``tests/test_settings_doc.py`` fails while the committed README differs from what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bot.settings import VARIABLES, Var

BEGIN = "<!-- settings table: generated from bot/settings.py by `python -m bot.settings_doc` -->"
END = "<!-- end of settings table -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def default_cell(var: Var) -> str:
    if var.shown is not None:
        return var.shown
    return "—" if var.default is None else f"`{var.default}`"


def table() -> str:
    """The Markdown table, one row per variable, markers included."""
    rows = [f"| `{v.name}` | {default_cell(v)} | {v.doc} |" for v in VARIABLES]
    return "\n".join([BEGIN, "| Variable | Default | Meaning |", "|---|---|---|", *rows, END])


def with_table(readme: str) -> str:
    """``readme`` with the region between the markers replaced by :func:`table`."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + table() + readme[end:]


def main() -> int:
    text = README.read_text(encoding="utf-8")
    updated = with_table(text)
    if updated != text:
        README.write_text(updated, encoding="utf-8")
        print(f"updated the configuration table in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
