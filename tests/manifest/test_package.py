"""The Teams app package: built into tmp_path, then checked the way Teams would — offline, with the vendored schema."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from PIL import Image
from referencing import Registry

from manifest import build as mb
from manifest.build import ManifestError, PackageOptions, build_package

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "manifest" / "schema" / "MicrosoftTeams.schema.json"
NPM_PACKAGE = ROOT / "node_modules" / "@microsoft" / "app-manifest"
NPM_SCHEMA = NPM_PACKAGE / "build" / "json-schemas" / "teams" / "v1.22" / "MicrosoftTeams.schema.json"

BOT_ID = "1b4f2a9e-3c5d-4e6f-8a9b-0c1d2e3f4a5b"
APP_ID = "7d0c9a8b-6e5f-4a3b-9c2d-1e0f9a8b7c6d"
COMMANDS = {"deprovision", "status", "history", "pending", "help"}


def schema() -> dict[str, Any]:
    data = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def open_package(path: Path) -> tuple[list[str], dict[str, Any], bytes, bytes]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json").decode("utf-8"))
        return names, manifest, archive.read("color.png"), archive.read("outline.png")


def rgba(image: Image.Image) -> list[tuple[int, ...]]:
    data = image.convert("RGBA").tobytes()
    return [tuple(data[i : i + 4]) for i in range(0, len(data), 4)]


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    # An empty registry: a remote $ref would raise instead of being fetched, so this proves validation is offline.
    validator = Draft4Validator(schema(), registry=Registry(), format_checker=Draft4Validator.FORMAT_CHECKER)
    return [f"/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


@pytest.fixture
def package(tmp_path: Path) -> Path:
    options = PackageOptions(bot_id=BOT_ID, version="1.0.0", domain="bot.contoso.com")
    return build_package(options, tmp_path / "dist")


def test_package_holds_exactly_three_files_at_the_zip_root(package: Path) -> None:
    assert package.name == "device-deprovision-1.0.0.zip"
    names, _, _, _ = open_package(package)
    assert sorted(names) == ["color.png", "manifest.json", "outline.png"]


def test_manifest_validates_against_the_vendored_draft4_schema(package: Path) -> None:
    _, manifest, _, _ = open_package(package)
    assert schema_errors(manifest) == []
    assert manifest["manifestVersion"] == "1.22"
    assert manifest["$schema"] == "https://developer.microsoft.com/json-schemas/teams/v1.22/MicrosoftTeams.schema.json"


def test_ids_version_and_domain_are_substituted(package: Path) -> None:
    _, manifest, _, _ = open_package(package)
    assert manifest["id"] == BOT_ID  # the Teams app id defaults to the bot id
    assert manifest["bots"][0]["botId"] == BOT_ID
    assert manifest["version"] == "1.0.0"
    assert manifest["validDomains"] == ["bot.contoso.com"]
    assert manifest["developer"]["websiteUrl"] == "https://bot.contoso.com"
    assert "{{" not in json.dumps(manifest)


def test_explicit_app_id_and_developer_urls(tmp_path: Path) -> None:
    options = PackageOptions(
        bot_id=BOT_ID.upper(),
        version="2.3.14",
        domain="deprovision.contoso.com",
        app_id=APP_ID,
        developer_name="Contoso IT",
        website_url="https://intranet.contoso.com/it",
        privacy_url="https://intranet.contoso.com/privacy",
        terms_url="https://intranet.contoso.com/terms",
    )
    _, manifest, _, _ = open_package(build_package(options, tmp_path))
    assert manifest["id"] == APP_ID
    assert manifest["bots"][0]["botId"] == BOT_ID  # lower-cased
    assert manifest["version"] == "2.3.14"
    assert manifest["developer"] == {
        "name": "Contoso IT",
        "websiteUrl": "https://intranet.contoso.com/it",
        "privacyUrl": "https://intranet.contoso.com/privacy",
        "termsOfUseUrl": "https://intranet.contoso.com/terms",
    }
    assert schema_errors(manifest) == []


def test_bot_scopes_and_commands(package: Path) -> None:
    _, manifest, _, _ = open_package(package)
    (bot,) = manifest["bots"]
    assert sorted(bot["scopes"]) == ["groupChat", "personal", "team"]
    assert bot.get("isNotificationOnly") is False
    titles = []
    for command_list in bot["commandLists"]:
        assert sorted(command_list["scopes"]) == ["groupChat", "personal", "team"]
        for command in command_list["commands"]:
            titles.append(command["title"])
            assert 0 < len(command["title"]) <= 32
            assert command["description"].strip()
            assert command["description"].startswith(command["title"])  # the description shows the syntax
    assert sorted(titles) == sorted(COMMANDS)


def test_names_and_descriptions_within_limits(package: Path) -> None:
    _, manifest, _, _ = open_package(package)
    assert 0 < len(manifest["name"]["short"]) <= 30
    assert len(manifest["name"]["full"]) <= 100
    assert 0 < len(manifest["description"]["short"]) <= 80
    assert len(manifest["description"]["full"]) <= 4000
    assert manifest["description"]["full"] != manifest["description"]["short"]
    assert manifest["accentColor"].startswith("#") and len(manifest["accentColor"]) == 7
    for key in ("websiteUrl", "privacyUrl", "termsOfUseUrl"):
        assert manifest["developer"][key].startswith("https://")


def test_icon_sizes_and_outline_transparency(package: Path) -> None:
    _, manifest, color_png, outline_png = open_package(package)
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}
    with Image.open(io.BytesIO(color_png)) as color:
        assert color.format == "PNG"
        assert color.size == (192, 192)
    with Image.open(io.BytesIO(outline_png)) as outline:
        assert outline.format == "PNG"
        assert outline.size == (32, 32)
        assert outline.mode == "RGBA"
        pixels = rgba(outline)
    assert all(a == 0 or (r, g, b) == (255, 255, 255) for r, g, b, a in pixels)
    assert any(a == 255 for *_, a in pixels), "the glyph is visible"
    assert sum(a == 0 for *_, a in pixels) > len(pixels) // 2, "the background is transparent"


def test_outline_corners_are_transparent(package: Path) -> None:
    _, _, _, outline_png = open_package(package)
    with Image.open(io.BytesIO(outline_png)) as outline:
        rgba = outline.convert("RGBA")
        for xy in ((0, 0), (31, 0), (0, 31), (31, 31)):
            pixel = rgba.getpixel(xy)
            assert isinstance(pixel, tuple) and pixel[3] == 0


def test_committed_icons_are_what_the_generator_draws() -> None:
    with Image.open(mb.OUTLINE_PATH) as committed:
        assert rgba(committed) == rgba(mb.render_outline())
    with Image.open(mb.COLOR_PATH) as committed:
        drawn, stored = rgba(mb.render_color()), rgba(committed)
    worst = max(abs(a - b) for p, q in zip(drawn, stored, strict=True) for a, b in zip(p, q, strict=True))
    assert worst <= 2  # resampling may differ by a rounding step between Pillow versions


def test_same_inputs_give_the_same_zip(tmp_path: Path) -> None:
    options = PackageOptions(bot_id=BOT_ID, version="1.0.0", domain="bot.contoso.com")
    first = build_package(options, tmp_path / "a").read_bytes()
    second = build_package(options, tmp_path / "b").read_bytes()
    assert first == second


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"bot_id": "not-a-guid"}, "bot id"),
        ({"bot_id": "1b4f2a9e3c5d4e6f8a9b0c1d2e3f4a5b"}, "bot id"),
        ({"app_id": "{1b4f2a9e-3c5d-4e6f-8a9b-0c1d2e3f4a5b}"}, "app id"),
        ({"version": "1.0"}, "version"),
        ({"version": "v1.0.0"}, "version"),
        ({"version": "1.0.0-beta.1"}, "version"),
        ({"version": "01.0.0"}, "version"),
        ({"domain": "https://bot.contoso.com"}, "domain"),
        ({"domain": "bot.contoso.com/api/messages"}, "domain"),
        ({"domain": "bot.contoso.com:443"}, "domain"),
        ({"developer_name": "x" * 33}, "developer name"),
        ({"privacy_url": "http://contoso.com/privacy"}, "privacy url"),
    ],
)
def test_invalid_inputs_are_refused_and_nothing_is_written(
    tmp_path: Path, changes: dict[str, str], complaint: str
) -> None:
    values: dict[str, Any] = {"bot_id": BOT_ID, "version": "1.0.0", "domain": "bot.contoso.com", **changes}
    out = tmp_path / "dist"
    with pytest.raises(ManifestError) as caught:
        build_package(PackageOptions(**values), out)
    assert any(p.startswith(complaint) for p in caught.value.problems), caught.value.problems
    assert not out.exists()


def test_every_problem_is_reported_at_once() -> None:
    options = PackageOptions(bot_id="x", version="y", domain="z")
    assert len(options.problems()) == 3


def test_schema_validation_bites() -> None:
    manifest = mb.render_manifest(PackageOptions(bot_id=BOT_ID, version="1.0.0", domain="bot.contoso.com"))
    manifest["name"]["short"] = "A name far too long for the Teams app bar"
    manifest["accentColor"] = "blue"
    del manifest["developer"]["privacyUrl"]
    problems = mb.schema_problems(manifest)
    assert any("/name/short" in p for p in problems)
    assert any("/accentColor" in p for p in problems)
    assert any("privacyUrl" in p for p in problems)
    assert schema_errors(manifest)  # the independent validator agrees


def test_rules_beyond_the_schema_bite() -> None:
    manifest = mb.render_manifest(PackageOptions(bot_id=BOT_ID, version="1.0.0", domain="bot.contoso.com"))
    manifest["manifestVersion"] = "1.17"
    manifest["version"] = "1.0"
    manifest["bots"][0]["scopes"] = ["personal"]
    manifest["bots"][0]["commandLists"][0]["commands"][0]["title"] = "deprovision a ChromeOS device right now"
    manifest["description"]["full"] = "{{FORGOTTEN}}"
    problems = mb.rule_problems(manifest)
    assert any(p.startswith("manifestVersion") for p in problems)
    assert any(p.startswith("version") for p in problems)
    assert any(p.startswith("bots[0].scopes") for p in problems)
    assert any("title must be" in p for p in problems)
    assert any("FORGOTTEN" in p for p in problems)


def test_unknown_placeholder_in_template_is_refused() -> None:
    template = {"name": {"short": "{{NOPE}}"}}
    with pytest.raises(ManifestError, match="NOPE"):
        mb.render_manifest(PackageOptions(bot_id=BOT_ID, version="1.0.0"), template)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_icon_rules_bite() -> None:
    color = _png(Image.new("RGB", (96, 96), (0, 0, 255)))
    outline = mb.render_outline()
    outline.putpixel((0, 0), (128, 128, 128, 255))  # grey, opaque
    problems = mb.icon_problems(color, _png(outline))
    assert any("color.png: expected 192×192" in p for p in problems)
    assert any("neither fully transparent nor white" in p for p in problems)
    opaque = _png(Image.new("RGB", (32, 32), (255, 255, 255)))
    assert any("alpha channel" in p or "no transparent" in p for p in mb.icon_problems(color, opaque))


def test_vendored_schema_is_the_published_file() -> None:
    data = SCHEMA.read_bytes()
    assert hashlib.sha256(data).hexdigest() == mb.SCHEMA_SHA256
    loaded = schema()
    assert loaded["$schema"] == "http://json-schema.org/draft-04/schema#"

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for item in node for r in refs(item)]
        return []

    all_refs = refs(loaded)
    assert all_refs and all(r.startswith("#") for r in all_refs), "only local $refs: validation needs no network"


def test_vendored_schema_matches_the_npm_package() -> None:
    # `make test` installs node_modules first; without it the recorded checksum above still pins the copy.
    if not NPM_PACKAGE.exists():
        assert mb.schema_sha256() == mb.SCHEMA_SHA256
        return
    assert json.loads((NPM_PACKAGE / "package.json").read_text())["version"] == "1.1.2"
    assert NPM_SCHEMA.read_bytes() == SCHEMA.read_bytes()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in mb.BOT_ID_ENV and k != mb.DOMAIN_ENV}
    env.update({"ENV_FILE": "/nonexistent/.env", **extra})
    return env


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manifest", "build", *args],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_without_a_bot_id_or_domain_refuses_the_placeholders(tmp_path: Path) -> None:
    result = _cli("--out", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "not written" in result.stderr
    assert "00000000-0000-0000-0000-000000000000" in result.stderr and "MICROSOFT_APP_ID" in result.stderr
    assert "bot.example.com" in result.stderr and "BOT_DOMAIN" in result.stderr
    assert "--allow-placeholders" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_allow_placeholders_builds_a_test_package_and_warns(tmp_path: Path) -> None:
    result = _cli("--out", str(tmp_path), "--allow-placeholders")
    assert result.returncode == 0, result.stderr
    assert "00000000-0000-0000-0000-000000000000" in result.stderr
    assert "WARNING" in result.stderr
    (zip_path,) = tmp_path.glob("device-deprovision-*.zip")
    _, manifest, _, _ = open_package(zip_path)
    assert manifest["bots"][0]["botId"] == mb.PLACEHOLDER_GUID
    assert manifest["validDomains"] == [mb.PLACEHOLDER_DOMAIN]


def test_cli_reads_the_bot_id_and_domain_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _clean_env(CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID=BOT_ID, BOT_DOMAIN="bot.fabrikam.com")
    assert mb.main(["build", "--version", "3.1.4", "--out", str(tmp_path)], environ=env) == 0
    _, manifest, _, _ = open_package(tmp_path / "device-deprovision-3.1.4.zip")
    assert manifest["bots"][0]["botId"] == BOT_ID
    assert manifest["validDomains"] == ["bot.fabrikam.com"]
    assert "placeholder" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--bot-id", mb.PLACEHOLDER_GUID, "--domain", "bot.contoso.com"], "bot id is the placeholder"),
        (["--bot-id", BOT_ID, "--domain", "bot.contoso.com", "--app-id", mb.PLACEHOLDER_GUID], "app id"),
        (["--bot-id", BOT_ID, "--domain", "deprovision.example.org"], "example domain"),
        (["--bot-id", BOT_ID, "--domain", "example.com"], "example domain"),
    ],
)
def test_explicit_placeholders_are_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], complaint: str
) -> None:
    out = tmp_path / "out"
    assert mb.main(["build", *args, "--version", "1.0.0", "--out", str(out)], environ={}) == 2
    assert complaint in capsys.readouterr().err
    assert not out.exists()
    assert mb.main(["build", *args, "--version", "1.0.0", "--out", str(out), "--allow-placeholders"], environ={}) == 0
    assert "WARNING" in capsys.readouterr().err


def test_default_developer_urls_are_flagged_as_the_organisations_to_provide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["build", "--bot-id", BOT_ID, "--domain", "bot.contoso.com", "--version", "1.0.0", "--out", str(tmp_path)]
    assert mb.main(base, environ={}) == 0
    err = capsys.readouterr().err
    assert "--privacy-url" in err and "--terms-url" in err and "does not serve" in err
    urls = [
        "--website-url",
        "https://contoso.com",
        "--privacy-url",
        "https://contoso.com/p",
        "--terms-url",
        "https://contoso.com/t",
    ]
    assert mb.main([*base, *urls], environ={}) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_cli_refuses_invalid_input_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = mb.main(["build", "--bot-id", "nope", "--version", "1.0", "--out", str(tmp_path / "out")], environ={})
    assert code == 2
    err = capsys.readouterr().err
    assert "bot id" in err and "version" in err
    assert not (tmp_path / "out").exists()
