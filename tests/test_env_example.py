""".env.example lists every setting of the README's configuration table, and its examples are valid settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings, read_env_file

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / ".env.example"
ASSIGNMENT = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$")
CONN = "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"
REQUIRED = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", CONN + "CLIENTID")


def readme_settings() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def example_assignments() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            assert match[1] not in found, f"{match[1]} listed twice"
            found[match[1]] = match[2]
    return found


def test_every_readme_setting_is_in_the_example() -> None:
    table = readme_settings()
    assert len(table) >= 30  # the parser found the table
    missing = sorted(table - set(example_assignments()))
    assert missing == [], f"add these to .env.example: {missing}"


def test_the_example_names_only_known_settings() -> None:
    unknown = sorted(set(example_assignments()) - readme_settings())
    assert unknown == []


def test_the_example_holds_no_secret_and_only_the_required_values_are_active() -> None:
    active = read_env_file(EXAMPLE)
    assert active == dict.fromkeys(REQUIRED, "")


def test_a_copied_example_names_exactly_what_to_fill_in(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"ENV_FILE": str(EXAMPLE)})
    assert sorted(p.split(":")[0] for p in caught.value.problems) == sorted(REQUIRED)


def test_every_example_value_is_a_valid_setting(tmp_path: Path) -> None:
    """Uncomment every line (placeholders in <…> filled in): the settings must load."""
    values = example_assignments()
    values.update(
        {
            "AZURE_TENANT_ID": "contoso.onmicrosoft.com",
            "AZURE_CLIENT_ID": "graph-app",
            "AZURE_CLIENT_SECRET": "s3cret-value",
            CONN + "CLIENTID": "00000000-0000-0000-0000-000000000002",
        }
    )
    values = {name: re.sub(r"<[^>]*>", "00000000-0000-0000-0000-000000000001", value) for name, value in values.items()}
    env_file = tmp_path / "all.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    settings = load_settings({"ENV_FILE": str(env_file)})
    assert settings.approval_channel_id and settings.approval_channel_id.endswith("@thread.tacv2")
    assert settings.action_ttl == 15 * 60 and settings.approval_ttl == 24 * 3600
    assert settings.database_url == "sqlite+aiosqlite:///./data/deprovision.db"
    assert not settings.anonymous
