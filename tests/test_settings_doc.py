"""Settings are declared once (bot/settings.py VARIABLES); the README table and .env.example follow that declaration."""

from __future__ import annotations

import dataclasses
import re

import pytest

from bot.settings import VARIABLES, AuditSettings, Settings, SettingsError, Var, load_settings
from bot.settings_doc import README, table, with_table
from tests.test_env_example import example_assignments
from tests.test_foundation import GRAPH_ONLY

#: Settings fields no single variable fills: the CA bundle comes from REQUESTS_CA_BUNDLE or SSL_CERT_FILE.
DERIVED = {"ca_file"}


def test_the_readme_table_is_generated_from_the_declaration() -> None:
    readme = README.read_text(encoding="utf-8")
    assert with_table(readme) == readme, "README.md is stale: run `python -m bot.settings_doc`"
    assert readme.count("| `") >= len(VARIABLES)


def test_one_row_per_variable_with_its_default() -> None:
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([A-Z_0-9]+)` \| (.*?) \| ", table(), flags=re.MULTILINE)}
    assert list(rows) == [v.name for v in VARIABLES]
    assert rows["ACTION_TTL"] == "`15m`" and rows["AZURE_TENANT_ID"] == "**required**"
    assert rows["APPROVAL_CHANNEL_ID"] == "—"


def test_every_settings_field_is_declared_once() -> None:
    declared = [v.field for v in VARIABLES if v.field]
    assert len(declared) == len(set(declared))
    assert {f.name for f in dataclasses.fields(Settings)} == set(declared) | DERIVED
    assert {f.name for f in dataclasses.fields(AuditSettings)} <= set(declared)
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


@pytest.mark.parametrize("var", [v for v in VARIABLES if v.parse and v.default], ids=lambda v: v.name)
def test_every_default_is_a_valid_value(var: Var) -> None:
    problems: list[str] = []
    assert var.read({var.name: var.default or ""}, problems) == var.read({}, problems)
    assert problems == []


def test_the_example_file_shows_the_declared_defaults() -> None:
    example = example_assignments()
    wrong = {
        v.name: example.get(v.name) for v in VARIABLES if v.default is not None and example.get(v.name) != v.default
    }
    assert wrong == {}


def test_a_bad_value_is_one_line_naming_the_variable_and_a_bad_pair_list_one_line_per_pair() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {
                **GRAPH_ONLY,
                "ALLOW_ANONYMOUS": "true",
                "INVOKE_BUDGET": "5s",
                "DEPROVISION_REASON_MAP": "nope,retiring_device=,upgrade_transfer=ok",
            }
        )
    assert caught.value.problems == [
        "DEPROVISION_REASON_MAP: expected key=value pairs with keys same_model_replacement, "
        "different_model_replacement, retiring_device, upgrade_transfer, got 'nope'",
        "DEPROVISION_REASON_MAP: expected key=value pairs with keys same_model_replacement, "
        "different_model_replacement, retiring_device, upgrade_transfer, got 'retiring_device='",
        "INVOKE_BUDGET: must be at most 4.5s (Teams retries invokes after about 5 s)",
    ]
