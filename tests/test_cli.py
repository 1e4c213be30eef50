"""The CLI is one ``main()``: ``python app.py …`` and the installed ``chromeos-deprovision-bot …`` console script."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "chromeos-deprovision-bot"
#: What pip's console-script wrapper does: load the entry point from its "module:function" value, then exit with it.
WRAPPER = (
    "import sys; from importlib.metadata import EntryPoint; "
    "sys.argv[0] = sys.argv[1]; entry = EntryPoint(sys.argv[1], sys.argv.pop(2), 'console_scripts'); "
    "del sys.argv[1]; sys.exit(entry.load()())"
)


def pyproject() -> dict[str, Any]:  # TOML tables: nested dicts of any value
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def entry_point() -> str:
    return str(pyproject()["project"]["scripts"][SCRIPT])


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script, from a directory without app.py, importing the project the way an install does."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "ENV_FILE": "/nonexistent/.env"}
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, SCRIPT, entry_point(), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_script_is_declared_and_its_module_is_installed() -> None:
    module = entry_point().split(":")[0]
    setuptools = pyproject()["tool"]["setuptools"]
    assert entry_point() == "app:main"
    assert module in setuptools["py-modules"]
    assert (ROOT / f"{module}.py").is_file()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["serve", "doctor", "migrate", "audit", "actions"]),
        (("doctor",), ["doctor [-h]"]),
        (("audit",), ["verify", "head", "export"]),
        (("actions", "resolve"), ["--done", "--failed", "--note"]),
    ],
)
def test_help_through_the_console_script(tmp_path: Path, args: tuple[str, ...], expected: list[str]) -> None:
    result = run_script(tmp_path, *args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {SCRIPT} {' '.join(args)}".rstrip())
    for text in expected:
        assert text in result.stdout


def test_the_script_and_app_py_are_the_same_cli(tmp_path: Path) -> None:
    script = run_script(tmp_path, "doctor", "--help")
    app = subprocess.run(
        [sys.executable, "app.py", "doctor", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert app.returncode == script.returncode == 0
    assert app.stdout.replace("app.py", SCRIPT) == script.stdout


def test_the_script_reports_configuration_problems_with_exit_2(tmp_path: Path) -> None:
    result = run_script(tmp_path, "migrate")
    assert result.returncode == 2
    assert "AZURE_TENANT_ID: required" in result.stderr
