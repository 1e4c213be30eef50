"""Build the Teams app package: ``manifest.json`` + ``color.png`` + ``outline.png`` at the root of one zip.

::

    python -m manifest build --bot-id <guid> --version 1.0.0 [--app-id <guid>] [--domain bot.example.com] [--out dist]
    python -m manifest icons            # redraw color.png (192×192) and outline.png (32×32) in manifest/

``manifest/manifest.json`` is a template: every ``{{NAME}}`` inside a JSON string is replaced by a value
(the substitution happens on the parsed JSON, so a value can never break the document). The result is
validated before anything is written — against the Teams schema vendored in ``manifest/schema/`` (draft-04,
checked offline) and against the rules the schema does not express (semver, GUIDs, icon sizes and
transparency, short command titles) — and a :class:`ManifestError` lists every problem found.

Defaults (``make package`` passes no arguments): the bot id comes from ``MICROSOFT_APP_ID`` or
``CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID`` (environment, then ``.env``); the version is the installed
project's version; the domain is ``BOT_DOMAIN``. Without a bot id or domain the build stops (exit 2): a package
with the nil GUID ``00000000-0000-0000-0000-000000000000`` or an example domain (``bot.example.com``) uploads
but never reaches a bot. ``--allow-placeholders`` builds it anyway, with a warning (for trying the build).

The developer website, privacy and terms URLs default to ``https://<domain>/``, ``/privacy`` and ``/terms``. The
bot does **not** serve these pages: they are the organisation's to provide (``--website-url``, ``--privacy-url``,
``--terms-url``); the build prints a warning when any is left to its default.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE_PATH = HERE / "manifest.json"
COLOR_PATH = HERE / "color.png"
OUTLINE_PATH = HERE / "outline.png"
SCHEMA_PATH = HERE / "schema" / "MicrosoftTeams.schema.json"

#: The Teams manifest schema version the template targets (and the one vendored in ``schema/``).
SCHEMA_VERSION = "1.22"
#: sha256 of ``build/json-schemas/teams/v1.22/MicrosoftTeams.schema.json`` in npm ``@microsoft/app-manifest`` 1.1.2.
SCHEMA_SHA256 = "1405f8ee5b7c1a62c5ade88f967252c7326c8f79eb77e693da4544780c101c2d"
NPM_SCHEMA_PATH = Path("node_modules/@microsoft/app-manifest/build/json-schemas/teams") / (
    f"v{SCHEMA_VERSION}/MicrosoftTeams.schema.json"
)

PLACEHOLDER_GUID = "00000000-0000-0000-0000-000000000000"
PLACEHOLDER_DOMAIN = "bot.example.com"
#: Domains reserved for documentation (RFC 2606 / RFC 6761): a package naming one cannot reach a real bot.
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org", "example", "invalid", "localhost", "test")
DEFAULT_DEVELOPER_NAME = "IT Helpdesk"
PACKAGE_STEM = "device-deprovision"
BOT_ID_ENV = ("MICROSOFT_APP_ID", "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID")
DOMAIN_ENV = "BOT_DOMAIN"

COLOR_SIZE = 192
OUTLINE_SIZE = 32
#: Teams shows at most about 32 characters of a command title (older docs cap it there); the schema allows 128.
MAX_COMMAND_TITLE = 32
BOT_SCOPES = ("personal", "team", "groupChat")

_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
#: Teams' own semver rule (schema ``definitions.semver``): MAJOR.MINOR.PATCH, digits only.
_SEMVER = re.compile(r"^([0-9]|[1-9]+[0-9]*)\.([0-9]|[1-9]+[0-9]*)\.([0-9]|[1-9]+[0-9]*)$")
_DOMAIN = re.compile(r"^(?:\*\.)?(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_HTTPS_URL = re.compile(r"^https://[^\s/?#]+(?:[/?#]\S*)?$")
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same inputs give the same zip


class ManifestError(Exception):
    """The package cannot be built; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class PackageOptions:
    """The values substituted into the template. ``app_id`` defaults to ``bot_id``."""

    bot_id: str
    version: str
    domain: str = PLACEHOLDER_DOMAIN
    app_id: str | None = None
    developer_name: str = DEFAULT_DEVELOPER_NAME
    website_url: str | None = None
    privacy_url: str | None = None
    terms_url: str | None = None

    def problems(self) -> list[str]:
        found: list[str] = []
        if not _GUID.match(self.bot_id):
            found.append(f"bot id: expected a GUID (the bot's Entra app/client id), got {self.bot_id!r}")
        if self.app_id is not None and not _GUID.match(self.app_id):
            found.append(f"app id: expected a GUID, got {self.app_id!r}")
        if not _SEMVER.match(self.version):
            found.append(f"version: expected MAJOR.MINOR.PATCH digits only (e.g. 1.0.0), got {self.version!r}")
        if not _DOMAIN.match(self.domain):
            found.append(
                f"domain: expected a host name without scheme, port or path (e.g. bot.example.com), got {self.domain!r}"
            )
        if not self.developer_name.strip() or len(self.developer_name) > 32:
            found.append(f"developer name: 1-32 characters, got {self.developer_name!r}")
        for label, url in (
            ("website url", self.website_url),
            ("privacy url", self.privacy_url),
            ("terms url", self.terms_url),
        ):
            if url is not None and not _HTTPS_URL.match(url):
                found.append(f"{label}: expected an https:// URL, got {url!r}")
        return found

    def values(self) -> dict[str, str]:
        base = f"https://{self.domain.removeprefix('*.')}"
        return {
            "BOT_ID": self.bot_id.lower(),
            "APP_ID": (self.app_id or self.bot_id).lower(),
            "VERSION": self.version,
            "DOMAIN": self.domain,
            "DEVELOPER_NAME": self.developer_name,
            "WEBSITE_URL": self.website_url or base,
            "PRIVACY_URL": self.privacy_url or f"{base}/privacy",
            "TERMS_URL": self.terms_url or f"{base}/terms",
        }


# -- rendering and validation ---------------------------------------------------------------------------


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ManifestError([f"{path}: the template must be a JSON object"])
    return data


def substitute(node: Any, values: Mapping[str, str]) -> Any:
    """Replace ``{{NAME}}`` inside every string of a parsed JSON document; unknown names raise."""
    if isinstance(node, dict):
        return {key: substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(item, values) for item in node]
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise ManifestError([f"template: no value for placeholder {{{{{name}}}}}"])
            return values[name]

        return _PLACEHOLDER.sub(replace, node)
    return node


def render_manifest(options: PackageOptions, template: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The finished manifest for ``options`` (raises :class:`ManifestError` on invalid options)."""
    problems = options.problems()
    if problems:
        raise ManifestError(problems)
    rendered = substitute(dict(template) if template is not None else load_template(), options.values())
    assert isinstance(rendered, dict)
    return rendered


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    schema = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def schema_problems(manifest: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """Validate with draft-04, offline: an empty registry means any remote ``$ref`` fails instead of downloading."""
    from jsonschema import Draft4Validator
    from referencing import Registry

    validator = Draft4Validator(
        schema if schema is not None else load_schema(),
        registry=Registry(),
        format_checker=Draft4Validator.FORMAT_CHECKER,
    )
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    return [f"schema: /{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def rule_problems(manifest: Mapping[str, Any]) -> list[str]:
    """What the Teams schema does not check (v1.22's ``version`` is a bare string; ``const`` is not draft-04)."""
    problems: list[str] = []

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    leftovers = sorted(set(_PLACEHOLDER.findall(dump(manifest))))
    if leftovers:
        problems.append(f"placeholders left unfilled: {', '.join(leftovers)}")
    if manifest.get("manifestVersion") != SCHEMA_VERSION:
        problems.append(
            f"manifestVersion: expected {SCHEMA_VERSION!r} (the vendored schema), got {manifest.get('manifestVersion')!r}"
        )
    expected_schema = f"https://developer.microsoft.com/json-schemas/teams/v{SCHEMA_VERSION}/MicrosoftTeams.schema.json"
    if manifest.get("$schema") != expected_schema:
        problems.append(f"$schema: expected {expected_schema}")
    if not _SEMVER.match(str(manifest.get("version", ""))):
        problems.append(f"version: not MAJOR.MINOR.PATCH: {manifest.get('version')!r}")
    bots = manifest.get("bots") or []
    if len(bots) != 1:
        problems.append("bots: expected exactly one bot")
    for bot in bots:
        if sorted(bot.get("scopes", [])) != sorted(BOT_SCOPES):
            problems.append(f"bots[0].scopes: expected {', '.join(BOT_SCOPES)}")
        titles: list[str] = []
        for command_list in bot.get("commandLists", []):
            for command in command_list.get("commands", []):
                title = str(command.get("title", ""))
                titles.append(title.lower())
                if not title.strip() or len(title) > MAX_COMMAND_TITLE:
                    problems.append(f"command {title!r}: title must be 1-{MAX_COMMAND_TITLE} characters")
                if not str(command.get("description", "")).strip():
                    problems.append(f"command {title!r}: description is empty")
        if len(titles) != len(set(titles)):
            problems.append("commandLists: duplicate command titles")
    return problems


def icon_problems(color_png: bytes, outline_png: bytes) -> list[str]:
    """Sizes, format and the outline rule: every pixel fully transparent or white, and something visible."""
    from PIL import Image

    problems: list[str] = []
    for label, data, size in (("color.png", color_png, COLOR_SIZE), ("outline.png", outline_png, OUTLINE_SIZE)):
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                problems.append(f"{label}: expected a PNG, got {image.format}")
            if image.size != (size, size):
                problems.append(f"{label}: expected {size}×{size} pixels, got {image.size[0]}×{image.size[1]}")
            if label == "outline.png":
                problems.extend(outline_pixel_problems(image))
    return problems


def rgba_pixels(image: Any) -> list[tuple[int, int, int, int]]:
    """Every pixel as (r, g, b, a), row by row (``getdata`` is deprecated in Pillow 13)."""
    data = image.convert("RGBA").tobytes()
    return [(data[i], data[i + 1], data[i + 2], data[i + 3]) for i in range(0, len(data), 4)]


def outline_pixel_problems(image: Any) -> list[str]:
    pixels = rgba_pixels(image)
    bad = [p for p in pixels if p[3] != 0 and p[:3] != (255, 255, 255)]
    problems: list[str] = []
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        problems.append(f"outline.png: needs an alpha channel (mode {image.mode})")
    if bad:
        problems.append(f"outline.png: {len(bad)} pixel(s) are neither fully transparent nor white")
    if not any(p[3] for p in pixels):
        problems.append("outline.png: every pixel is transparent")
    if all(p[3] == 255 for p in pixels):
        problems.append("outline.png: no transparent pixels (the background must be transparent)")
    return problems


def validate(manifest: Mapping[str, Any], color_png: bytes, outline_png: bytes) -> list[str]:
    return schema_problems(manifest) + rule_problems(manifest) + icon_problems(color_png, outline_png)


def package_bytes(manifest: Mapping[str, Any], color_png: bytes, outline_png: bytes) -> bytes:
    """A deterministic zip with the three files at its root."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        for name, data in (
            ("manifest.json", text.encode("utf-8")),
            ("color.png", color_png),
            ("outline.png", outline_png),
        ):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def build_package(options: PackageOptions, out_dir: Path) -> Path:
    """Render, validate, then write ``<out_dir>/device-deprovision-<version>.zip``; nothing is written on error."""
    manifest = render_manifest(options)
    color_png, outline_png = COLOR_PATH.read_bytes(), OUTLINE_PATH.read_bytes()
    problems = validate(manifest, color_png, outline_png)
    if problems:
        raise ManifestError(problems)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PACKAGE_STEM}-{options.version}.zip"
    partial = target.with_suffix(".zip.partial")
    partial.write_bytes(package_bytes(manifest, color_png, outline_png))
    os.replace(partial, target)
    return target


def schema_sha256(path: Path = SCHEMA_PATH) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- icons ----------------------------------------------------------------------------------------------

ACCENT = (0x1F, 0x5F, 0xBF)  # the template's accentColor #1F5FBF
BADGE = (0xD9, 0x3A, 0x2B)
WHITE = (255, 255, 255)

# The glyph on a 32-unit grid: a laptop (screen frame + base) with a "minus" on the screen — "take this device out".
_SCREEN = (6, 6, 26, 21)  # outer box of the screen frame
_FRAME = 2  # frame thickness
_BASE = (2, 22, 30, 25)
_NOTCH = (13, 22, 19, 23)  # the hinge notch cut out of the base
_MINUS = (11, 12, 21, 15)


def _draw_glyph(draw: Any, unit: float, offset: tuple[float, float], fill: Any, hole: Any) -> None:
    ox, oy = offset

    def box(b: tuple[int, int, int, int]) -> list[float]:
        return [ox + b[0] * unit, oy + b[1] * unit, ox + b[2] * unit - 1, oy + b[3] * unit - 1]

    draw.rectangle(box(_SCREEN), fill=fill)
    inner = (_SCREEN[0] + _FRAME, _SCREEN[1] + _FRAME, _SCREEN[2] - _FRAME, _SCREEN[3] - _FRAME)
    draw.rectangle(box(inner), fill=hole)
    draw.rectangle(box(_MINUS), fill=fill)
    draw.rectangle(box(_BASE), fill=fill)
    draw.rectangle(box(_NOTCH), fill=hole)


def render_outline() -> Any:
    """32×32, white glyph on a fully transparent background, no anti-aliasing (alpha is 0 or 255)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (OUTLINE_SIZE, OUTLINE_SIZE), (0, 0, 0, 0))
    _draw_glyph(ImageDraw.Draw(image), 1, (0, 0), (*WHITE, 255), (0, 0, 0, 0))
    return image


def render_color() -> Any:
    """192×192, full-bleed accent background, white glyph and a red "remove" badge; drawn 4× and downsampled."""
    from PIL import Image, ImageDraw

    scale = 4
    size = COLOR_SIZE * scale
    image = Image.new("RGB", (size, size), ACCENT)
    draw = ImageDraw.Draw(image)
    unit = size * 0.70 / 32  # the glyph fills 70 % of the icon, centred
    offset = (size * 0.15, size * 0.13)
    _draw_glyph(draw, unit, offset, WHITE, ACCENT)
    radius = size * 0.17
    cx, cy = size * 0.76, size * 0.74
    draw.ellipse(
        [cx - radius - scale * 6, cy - radius - scale * 6, cx + radius + scale * 6, cy + radius + scale * 6],
        fill=ACCENT,
    )
    draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=BADGE)
    bar_w, bar_h = radius * 1.1, radius * 0.3
    draw.rectangle([cx - bar_w / 2, cy - bar_h / 2, cx + bar_w / 2, cy + bar_h / 2], fill=WHITE)
    return image.resize((COLOR_SIZE, COLOR_SIZE), Image.Resampling.LANCZOS)


def write_icons(directory: Path = HERE) -> tuple[Path, Path]:
    color, outline = directory / "color.png", directory / "outline.png"
    render_color().save(color, format="PNG", optimize=True)
    render_outline().save(outline, format="PNG", optimize=True)
    return color, outline


# -- command line ---------------------------------------------------------------------------------------


def project_version() -> str:
    try:
        return metadata.version("chromeos-deprovision-bot")
    except metadata.PackageNotFoundError:
        return "1.0.0"


def default_bot_id(env: Mapping[str, str]) -> str | None:
    for name in BOT_ID_ENV:
        value = (env.get(name) or "").strip()
        if value:
            return value
    return None


def _environment() -> dict[str, str]:
    from bot.settings import merged_environment

    return merged_environment()


def placeholder_problems(options: PackageOptions) -> list[str]:
    """Values that are placeholders rather than the real bot's: the nil GUID or a reserved example domain."""
    found: list[str] = []
    if options.bot_id.strip().lower() == PLACEHOLDER_GUID:
        found.append(
            f"bot id is the placeholder {PLACEHOLDER_GUID}: pass --bot-id or set {' or '.join(BOT_ID_ENV)} "
            "to the Azure Bot's Microsoft App ID"
        )
    if options.app_id is not None and options.app_id.strip().lower() == PLACEHOLDER_GUID:
        found.append(f"app id is the placeholder {PLACEHOLDER_GUID}: pass a real --app-id or leave it out")
    host = options.domain.strip().lower().removeprefix("*.").rstrip(".")
    if any(host == d or host.endswith("." + d) for d in EXAMPLE_DOMAINS):
        found.append(
            f"domain {options.domain!r} is an example domain: pass --domain or set {DOMAIN_ENV} to the bot's "
            "public host name"
        )
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m manifest", description="Teams app package for the bot")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="write dist/device-deprovision-<version>.zip")
    build.add_argument(
        "--bot-id", help="the bot's Entra app (client) id; default MICROSOFT_APP_ID or CONNECTIONS__…__CLIENTID"
    )
    build.add_argument("--app-id", help="the Teams app id (GUID); default: the bot id")
    build.add_argument("--version", help="app version MAJOR.MINOR.PATCH; default: the project version")
    build.add_argument(
        "--domain", help=f"the bot's public host name for validDomains; default {DOMAIN_ENV} or {PLACEHOLDER_DOMAIN}"
    )
    build.add_argument("--developer-name", default=DEFAULT_DEVELOPER_NAME)
    build.add_argument("--website-url", help="default https://<domain>")
    build.add_argument("--privacy-url", help="default https://<domain>/privacy")
    build.add_argument("--terms-url", help="default https://<domain>/terms")
    build.add_argument("--out", default="dist", help="output directory (default dist)")
    build.add_argument(
        "--allow-placeholders",
        action="store_true",
        help=f"build even with the placeholder bot id {PLACEHOLDER_GUID} or an example domain (a test package)",
    )
    sub.add_parser("icons", help="redraw manifest/color.png and manifest/outline.png")
    return parser


def _options(args: argparse.Namespace, env: Mapping[str, str]) -> PackageOptions:
    """The package's options from the flags, then the environment, then the placeholders."""
    return PackageOptions(
        bot_id=args.bot_id or default_bot_id(env) or PLACEHOLDER_GUID,
        version=args.version or project_version(),
        domain=args.domain or (env.get(DOMAIN_ENV) or "").strip() or PLACEHOLDER_DOMAIN,
        app_id=args.app_id,
        developer_name=args.developer_name,
        website_url=args.website_url,
        privacy_url=args.privacy_url,
        terms_url=args.terms_url,
    )


def _not_written(problems: Sequence[str], *, hint: str = "") -> int:
    print("The app package was not written:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if hint:
        print(f"  ({hint})", file=sys.stderr)
    return 2


def _warn_defaulted_pages(args: argparse.Namespace, domain: str) -> None:
    """The privacy and terms pages default to the bot's host, which does not serve them."""
    defaulted = [
        flag
        for flag, value in (
            ("--website-url", args.website_url),
            ("--privacy-url", args.privacy_url),
            ("--terms-url", args.terms_url),
        )
        if not value
    ]
    if defaulted:
        print(
            f"WARNING: {', '.join(defaulted)} not given: the package points at https://{domain.removeprefix('*.')}/"
            "[privacy|terms], which the bot does not serve — publish your organisation's pages and pass their URLs.",
            file=sys.stderr,
        )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "icons":
        for path in write_icons():
            print(f"wrote {path}")
        return 0

    options = _options(args, dict(environ) if environ is not None else _environment())
    placeholders = placeholder_problems(options)
    if placeholders and not args.allow_placeholders:
        hint = "Teams would never reach your bot; --allow-placeholders builds a test package anyway"
        return _not_written(options.problems() + placeholders, hint=hint)
    for problem in placeholders:
        print(f"WARNING: {problem}. Teams will not reach your bot with this package.", file=sys.stderr)
    _warn_defaulted_pages(args, options.domain)
    try:
        target = build_package(options, Path(args.out))
    except ManifestError as exc:
        return _not_written(exc.problems)
    values = options.values()
    print(f"wrote {target} (app id {values['APP_ID']}, bot id {values['BOT_ID']}, version {options.version})")
    return 0
