"""CA bundles named in ``.env`` / ``ENV_FILE`` reach every TLS client in the process, not only the bot's own.

The bot's Graph clients (msal via requests, httpx) are configured from :class:`~bot.settings.Settings`, but other
clients in the process — the Agents SDK's msal and aiohttp sessions, anything using OpenSSL's defaults — read
``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE`` from the process environment only. :func:`apply_ca_bundles` therefore
copies the env file's values into ``os.environ`` at start-up, before any client is built (``app.py``).

When the environment already names a bundle (many images set ``SSL_CERT_FILE`` to the system bundle) and the env
file names another, both are trusted: they are concatenated into one PEM file (in the temp directory, removed at
exit) and both variables point at it. Without a CA in the env file nothing changes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from bot.settings import SettingsError, read_env_file

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def _named(values: Mapping[str, str]) -> list[str]:
    return [values[name].strip() for name in CA_VARIABLES if (values.get(name) or "").strip()]


def _unique(paths: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for path in paths:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def combined_bundle(paths: list[str], directory: Path | None = None) -> str:
    """One PEM file holding every certificate of ``paths``; removed at exit unless ``directory`` is given."""
    data = b"".join(Path(path).read_bytes().rstrip(b"\n") + b"\n" for path in paths)
    fd, name = tempfile.mkstemp(prefix="deprovision-ca-", suffix=".pem", dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if directory is None:
        atexit.register(_remove, name)
    return name


def apply_ca_bundles(env: MutableMapping[str, str], *, directory: Path | None = None) -> str | None:
    """Make the CA bundle(s) named in the env file (``ENV_FILE``, default ``.env``) part of ``env`` — ``app.py``
    passes ``os.environ`` (nothing below ``app.py`` touches the process environment itself).

    Returns the bundle both variables now name, or None when the env file names no CA bundle (nothing changed).
    Raises :class:`SettingsError` when a named bundle does not exist.
    """
    env_file = Path(env.get("ENV_FILE", ".env"))
    from_file = _named(read_env_file(env_file)) if env_file.is_file() else []
    if not from_file:
        return None
    paths = _unique(_named(env) + from_file)
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        raise SettingsError(
            [f"SSL_CERT_FILE / REQUESTS_CA_BUNDLE: no such CA bundle {path!r} (PEM file)" for path in missing]
        )
    bundle = paths[0] if len(paths) == 1 else combined_bundle(paths, directory)
    for name in CA_VARIABLES:
        env[name] = bundle
    return bundle
