"""bench/: the generator writes tables only (bench/RESULTS.md, from results.json); the reading is written by hand.

Runs the generator on the committed results.json — never the benchmark itself (minutes of CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.report import render

BENCH = Path(__file__).resolve().parents[1] / "bench"
SECTIONS = (
    "## Run",
    "## Targets",
    "## Message turn",
    "## Confirm turn",
    "## CPU and database work per turn",
    "## Graph calls per complete flow",
    "## Token requests",
    "## Memory and start-up",
    "## Event-loop lag inside the bot process",
)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((BENCH / "results.json").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def rendered(results: dict[str, Any]) -> str:
    return render(results)


def test_the_generator_writes_headings_and_tables_only(rendered: str) -> None:
    title, provenance, *rest = [line for line in rendered.splitlines() if line]
    assert title == "# Benchmark results" and "REPORT.md" in provenance
    prose = [line for line in rest if not line.startswith(("## ", "| ", "|---"))]
    assert prose == []


def test_every_section_has_a_table(rendered: str) -> None:
    for heading in SECTIONS:
        assert heading in rendered
    for section in rendered.split("\n## ")[1:]:
        assert "\n| " in section and "\n|---" in section, section.splitlines()[0]


def test_every_table_row_has_as_many_cells_as_its_header(rendered: str) -> None:
    for block in rendered.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            widths = {row.count(" | ") for row in rows if not row.startswith("|---")}
            assert len(widths) == 1, rows[0]


def test_the_committed_tables_are_those_of_the_committed_results(rendered: str) -> None:
    assert (BENCH / "RESULTS.md").read_text(encoding="utf-8") == rendered, "regenerate: bench.report.render"


def test_the_reading_is_hand_written_and_points_at_the_tables() -> None:
    report = (BENCH / "REPORT.md").read_text(encoding="utf-8")
    assert "Written by hand" in report and "(RESULTS.md)" in report
    assert not [line for line in report.splitlines() if line.startswith("|")]  # the tables live in RESULTS.md


def test_the_client_table_shows_the_bots_graph_transport_when_measured(results: dict[str, Any]) -> None:
    cell = {"cpu_ms_per_request": 0.3, "wall_ms_per_request": 0.4}
    clients = {
        "requests": 300,
        "repeats": 3,
        **{f"{v}_c{c}": cell for v in ("httpx", "httpx_aiohttp", "aiohttp") for c in (1, 10)},
    }
    rendered = render({**results, "http_clients": clients})
    assert "httpx over aiohttp (the bot's Graph client)" in rendered and "median of 3 repeats" in rendered
    assert "| httpx_aiohttp | 10 | 0.30 | 0.40 |" in rendered
