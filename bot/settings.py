"""One typed, strict settings object, read once at start-up.

Values come from the process environment and, below it, an optional ``.env`` file (``ENV_FILE`` names another).
Every problem is collected and reported together — one line per variable — and the process exits with code 2
before it listens (see ``app.py``). Nothing below ``app.py`` reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

DEFAULT_PORT = 3978
DEFAULT_AUTHORITY_HOST = "login.microsoftonline.com"
DEFAULT_GRAPH_BASE_URL = "https://graph.microsoft.com"
#: The token audience for Graph; it stays Graph's even when GRAPH_BASE_URL points at a stand-in.
DEFAULT_GRAPH_RESOURCE = "https://graph.microsoft.com"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/deprovision.db"
DEFAULT_ACTION_TTL = 15 * 60
DEFAULT_APPROVAL_TTL = 24 * 3600
DEFAULT_RBAC_CACHE_TTL = 5 * 60
#: ``AUDIT_KEY`` is any secret string of at least this many bytes (UTF-8), used as the HMAC-SHA256 key.
AUDIT_KEY_MIN_BYTES = 32
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
INTUNE_ADMINISTRATOR = "3a2c62db-5318-420d-8d74-23affee5d9d5"
#: Where the Bot Framework publishes the keys that sign channel-to-bot tokens (its ``jwks_uri``).
DEFAULT_BOTFRAMEWORK_OPENID_METADATA = "https://login.botframework.com/v1/.well-known/openidconfiguration"
#: The issuer of channel-to-bot tokens (teams-platform.md §13).
DEFAULT_BOTFRAMEWORK_ISSUERS: tuple[str, ...] = ("https://api.botframework.com",)
#: Bot Connector hosts replies may go to: public Teams, Bot Framework channels, and the US government clouds
#: (GCC, GCC High, DoD). ``*.`` matches any subdomain.
DEFAULT_SERVICE_URL_HOSTS: tuple[str, ...] = (
    "smba.trafficmanager.net",
    "*.botframework.com",
    "smba.infra.gcc.teams.microsoft.com",
    "smba.infra.gov.teams.microsoft.us",
    "smba.infra.dod.teams.microsoft.us",
)
#: Added to the default allow-list in anonymous local mode (the Agents Playground and test connectors).
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")

#: Google's four deprovision reasons offered to users (key) → the string sent as ``deprovisionReason`` (value).
#: The strings Intune accepts are UNVERIFIED (graph-intune.md §2); override with ``DEPROVISION_REASON_MAP``.
DEFAULT_REASON_MAP: dict[str, str] = {
    "same_model_replacement": "same_model_replacement",
    "different_model_replacement": "different_model_replacement",
    "retiring_device": "retiring_device",
    "upgrade_transfer": "upgrade_transfer",
}

_CONN = "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"
_TENANT_RE = re.compile(r"^(?:[0-9a-fA-F-]{30,40}|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.-]+(?::\d{1,5})?$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(Exception):
    """Raised with every problem found; ``problems`` holds one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Everything the bot is configured with. Build with :func:`load_settings`."""

    tenant_id: str
    client_id: str
    client_secret: str | None = None
    client_certificate_path: str | None = None
    use_managed_identity: bool = False
    authority_host: str = DEFAULT_AUTHORITY_HOST
    graph_base_url: str = DEFAULT_GRAPH_BASE_URL
    graph_resource: str = DEFAULT_GRAPH_RESOURCE
    ca_file: str | None = None
    port: int = DEFAULT_PORT
    host: str = "0.0.0.0"  # noqa: S104 - a bot behind Azure Bot Service must listen on all interfaces
    app_env: Literal["development", "production"] = "development"
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    bot_client_id: str | None = None
    bot_client_secret: str | None = None
    bot_tenant_id: str | None = None
    bot_auth_type: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    action_ttl: float = DEFAULT_ACTION_TTL
    approval_mode: Literal["none", "peer"] = "none"
    approval_ttl: float = DEFAULT_APPROVAL_TTL
    approval_channel_id: str | None = None
    approver_group_id: str | None = None
    rbac_cache_ttl: float = DEFAULT_RBAC_CACHE_TTL
    entra_admin_roles_allowed: bool = True
    entra_admin_role_ids: tuple[str, ...] = (GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR)
    reason_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_REASON_MAP))
    graph_timeout: float = 20.0
    graph_max_retry_wait: float = 30.0
    graph_retry_after_cap: float = 10.0
    invoke_budget: float = 3.0
    max_concurrent_turns: int = 32
    sweep_interval: float = 30.0
    submit_lease_grace: float = 10.0
    # Following a write in Intune's own record (remoteActionAudits, deviceActionResults, chromeOSDeviceInfo)
    completion_first_check: float = 30.0
    completion_max_interval: float = 600.0
    completion_timeout: float = 24 * 3600.0
    chrome_status_properties: tuple[str, ...] = ("deviceStatus", "status", "deprovisionStatus")
    deprovisioned_values: tuple[str, ...] = ("deprovisioned",)
    # HMAC key of the audit chain (None = development key beside the database); kept out of repr()
    audit_key: str | None = field(default=None, repr=False)
    allow_anonymous: bool = False
    botframework_openid_metadata: str = DEFAULT_BOTFRAMEWORK_OPENID_METADATA
    botframework_issuers: tuple[str, ...] = DEFAULT_BOTFRAMEWORK_ISSUERS
    allowed_service_url_hosts: tuple[str, ...] = DEFAULT_SERVICE_URL_HOSTS

    @property
    def anonymous(self) -> bool:
        """Bot Framework anonymous mode (no bot app id; needs ALLOW_ANONYMOUS=true): no inbound token check, no outbound
        token, loopback only (local use)."""
        return not self.bot_client_id

    @property
    def authority(self) -> str:
        return f"https://{self.authority_host}/{self.tenant_id}"

    @property
    def bot_authority(self) -> str:
        """Where the bot's own Bot Connector token comes from: the same Entra host as Graph's token."""
        return f"https://{self.authority_host}/{self.bot_tenant_id or self.tenant_id}"

    @property
    def credential_kind(self) -> str:
        if self.client_secret:
            return "client_secret"
        if self.client_certificate_path:
            return "certificate"
        return "managed_identity"

    def secrets(self) -> list[str]:
        """Values that must never reach a log."""
        values = [self.client_secret, self.bot_client_secret, self.audit_key]
        return [v for v in values if v and len(v) >= 4]

    def sdk_configuration(self) -> dict[str, object]:
        """The nested mapping the Agents SDK expects (``load_configuration_from_env`` shape)."""
        conn: dict[str, object] = {"ANONYMOUS_ALLOWED": self.anonymous}
        if self.bot_client_id:
            conn["CLIENTID"] = self.bot_client_id
            if self.bot_client_secret:
                conn["CLIENTSECRET"] = self.bot_client_secret
            if self.bot_tenant_id:
                conn["TENANTID"] = self.bot_tenant_id
            if self.bot_auth_type:
                conn["AUTHTYPE"] = self.bot_auth_type
            conn["AUTHORITY"] = self.bot_authority
        return {
            "CONNECTIONS": {"SERVICE_CONNECTION": {"SETTINGS": conn}},
            "AGENTAPPLICATION": {},
            "CONNECTIONSMAP": [],
        }


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a simple dotenv file: ``KEY=VALUE`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def merged_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the optional ``.env`` file (the environment wins)."""
    env = dict(os.environ if environ is None else environ)
    env_file = Path(env.get("ENV_FILE", ".env"))
    if env_file.is_file():
        return {**read_env_file(env_file), **env}
    return env


def parse_duration(text: str) -> float:
    """``"900"`` / ``"900s"`` / ``"15m"`` / ``"24h"`` / ``"1d"`` / ``"500ms"`` → seconds."""
    match = _DURATION_RE.match(text.strip().lower())
    if not match:
        raise ValueError(text)
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def normalise_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite:///`` URLs and pick the async drivers."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise :class:`SettingsError` listing all problems."""
    env = merged_environment(environ)
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    def boolean(name: str, default: bool) -> bool:
        value = get(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        problems.append(f"{name}: expected one of true/false/1/0/yes/no/on/off, got {value!r}")
        return default

    def duration(name: str, default: float) -> float:
        value = get(name)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError:
            problems.append(f"{name}: expected a duration such as 900, 15m, 24h, got {value!r}")
            return default
        if seconds <= 0:
            problems.append(f"{name}: must be greater than zero")
        return seconds

    def names(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = get(name)
        return tuple(v.strip() for v in value.split(",") if v.strip()) if value else default

    def choice(name: str, options: tuple[str, ...], default: str) -> str:
        value = (get(name) or default).lower()
        if value not in options:
            problems.append(f"{name}: expected one of {', '.join(options)}, got {value!r}")
            return default
        return value

    tenant_id = get("AZURE_TENANT_ID")
    if tenant_id is None:
        problems.append("AZURE_TENANT_ID: required — the Entra tenant id (GUID) the bot serves")
    elif not _TENANT_RE.match(tenant_id):
        problems.append(f"AZURE_TENANT_ID: expected a tenant GUID, got {tenant_id!r}")

    use_mi = boolean("AZURE_USE_MANAGED_IDENTITY", False)
    client_id = get("AZURE_CLIENT_ID")
    secret = get("AZURE_CLIENT_SECRET")
    cert = get("AZURE_CLIENT_CERTIFICATE_PATH")
    if client_id is None and not use_mi:
        problems.append("AZURE_CLIENT_ID: required — the client id of the app registration used for Graph")
    if secret is None and cert is None and not use_mi:
        problems.append(
            "AZURE_CLIENT_SECRET: required unless AZURE_CLIENT_CERTIFICATE_PATH is set "
            "or AZURE_USE_MANAGED_IDENTITY=true"
        )
    if cert is not None and secret is None and not Path(cert).is_file():
        problems.append(f"AZURE_CLIENT_CERTIFICATE_PATH: no such file {cert!r} (PEM with private key + cert)")

    authority_host = get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY_HOST
    authority_host = authority_host.removeprefix("https://").rstrip("/")
    if not _HOST_RE.match(authority_host):
        problems.append(f"AZURE_AUTHORITY_HOST: expected a host name with optional :port, got {authority_host!r}")

    graph_base_url = (get("GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE_URL).rstrip("/")
    if not re.match(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?$", graph_base_url):
        problems.append(f"GRAPH_BASE_URL: expected https://host[:port] with no path, got {graph_base_url!r}")

    port_text = get("PORT") or str(DEFAULT_PORT)
    port = DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        problems.append(f"PORT: expected a TCP port 1-65535, got {port_text!r}")
    else:
        port = int(port_text)

    app_env = choice("APP_ENV", ("development", "production"), "development")
    log_format = choice("LOG_FORMAT", ("json", "text"), "json" if app_env == "production" else "text")
    log_level = (get("LOG_LEVEL") or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        problems.append(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    bot_client_id = get(_CONN + "CLIENTID")
    bot_secret = get(_CONN + "CLIENTSECRET")
    bot_tenant = get(_CONN + "TENANTID")
    bot_auth_type = get(_CONN + "AUTHTYPE")
    allow_anonymous = boolean("ALLOW_ANONYMOUS", False)
    if allow_anonymous and app_env == "production":
        problems.append("ALLOW_ANONYMOUS: anonymous Bot Framework mode is refused when APP_ENV=production")
    if bot_client_id is None:
        if app_env == "production":
            problems.append(
                f"{_CONN}CLIENTID: required when APP_ENV=production "
                "(anonymous Bot Framework mode is for local use only)"
            )
        elif not allow_anonymous:
            problems.append(
                f"{_CONN}CLIENTID: required — the Azure Bot's app id; for a local demo without one set "
                "ALLOW_ANONYMOUS=true (unauthenticated, listens on 127.0.0.1 only)"
            )
    elif bot_secret is None and (bot_auth_type or "ClientSecret").lower() == "clientsecret":
        problems.append(f"{_CONN}CLIENTSECRET: required with CLIENTID (or set {_CONN}AUTHTYPE)")

    database_url = normalise_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        problems.append(
            f"DATABASE_URL: expected sqlite:///path or postgresql://..., got {database_url.split('@')[-1]!r}"
        )

    approval_mode = choice("APPROVAL_MODE", ("none", "peer"), "none")

    reason_map = dict(DEFAULT_REASON_MAP)
    mapping = get("DEPROVISION_REASON_MAP")
    if mapping:
        for item in mapping.split(","):
            key, sep, wire = item.partition("=")
            key, wire = key.strip(), wire.strip()
            if not sep or key not in DEFAULT_REASON_MAP or not wire:
                problems.append(
                    "DEPROVISION_REASON_MAP: expected key=value pairs with keys "
                    f"{', '.join(DEFAULT_REASON_MAP)}, got {item.strip()!r}"
                )
                continue
            reason_map[key] = wire

    role_ids = tuple(r.strip() for r in (get("ENTRA_ADMIN_ROLE_IDS") or "").split(",") if r.strip()) or (
        GLOBAL_ADMINISTRATOR,
        INTUNE_ADMINISTRATOR,
    )

    metadata_url = get("BOTFRAMEWORK_OPENID_METADATA") or DEFAULT_BOTFRAMEWORK_OPENID_METADATA
    if not re.match(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?/\S*$", metadata_url):
        problems.append(f"BOTFRAMEWORK_OPENID_METADATA: expected an https:// URL, got {metadata_url!r}")
    issuers = DEFAULT_BOTFRAMEWORK_ISSUERS
    issuers_text = env.get("BOTFRAMEWORK_ISSUERS")
    if issuers_text is not None:
        issuers = tuple(i.strip() for i in issuers_text.split(",") if i.strip())
        if not issuers:
            problems.append(
                "BOTFRAMEWORK_ISSUERS: the issuer allow-list is empty; expected a comma list such as "
                f"{','.join(DEFAULT_BOTFRAMEWORK_ISSUERS)}"
            )
    anonymous = bot_client_id is None
    hosts_text = env.get("ALLOWED_SERVICE_URL_HOSTS")
    if hosts_text is None:
        hosts = DEFAULT_SERVICE_URL_HOSTS + (LOOPBACK_HOSTS if anonymous else ())
    else:
        hosts = tuple(h.strip().lower() for h in hosts_text.split(",") if h.strip())
        bad = [h for h in hosts if not re.match(r"^(\*\.)?[a-z0-9.:-]+$", h)]
        if not hosts or bad:
            problems.append(
                "ALLOWED_SERVICE_URL_HOSTS: expected a comma list of host names (a leading *. matches any "
                f"subdomain), got {hosts_text!r}"
            )

    invoke_budget = duration("INVOKE_BUDGET", 3.0)
    if invoke_budget > 4.5:
        problems.append("INVOKE_BUDGET: must be at most 4.5s (Teams retries invokes after about 5 s)")
    turns_text = get("MAX_CONCURRENT_TURNS") or "32"
    max_turns = 32
    if not turns_text.isdigit() or not 0 < int(turns_text) <= 10_000:
        problems.append(f"MAX_CONCURRENT_TURNS: expected a whole number 1-10000, got {turns_text!r}")
    else:
        max_turns = int(turns_text)

    audit_key = _audit_key(get("AUDIT_KEY"), app_env, problems)

    settings = Settings(
        tenant_id=tenant_id or "",
        client_id=client_id or "",
        client_secret=secret,
        client_certificate_path=None if secret else cert,
        use_managed_identity=use_mi and not secret and not cert,
        authority_host=authority_host,
        graph_base_url=graph_base_url,
        graph_resource=(get("GRAPH_RESOURCE") or DEFAULT_GRAPH_RESOURCE).rstrip("/"),
        ca_file=get("REQUESTS_CA_BUNDLE") or get("SSL_CERT_FILE"),
        port=port,
        # Anonymous mode never listens beyond this machine, whatever HOST says.
        host="127.0.0.1" if anonymous else (get("HOST") or "0.0.0.0"),  # noqa: S104
        app_env=app_env,  # type: ignore[arg-type]
        log_format=log_format,  # type: ignore[arg-type]
        log_level=log_level,
        bot_client_id=bot_client_id,
        bot_client_secret=bot_secret,
        bot_tenant_id=bot_tenant,
        bot_auth_type=bot_auth_type,
        database_url=database_url,
        action_ttl=duration("ACTION_TTL", DEFAULT_ACTION_TTL),
        approval_mode=approval_mode,  # type: ignore[arg-type]
        approval_ttl=duration("APPROVAL_TTL", DEFAULT_APPROVAL_TTL),
        approval_channel_id=get("APPROVAL_CHANNEL_ID"),
        approver_group_id=get("APPROVER_GROUP_ID"),
        rbac_cache_ttl=duration("RBAC_CACHE_TTL", DEFAULT_RBAC_CACHE_TTL),
        entra_admin_roles_allowed=boolean("ENTRA_ADMIN_ROLES_ALLOWED", True),
        entra_admin_role_ids=role_ids,
        reason_map=reason_map,
        graph_timeout=duration("GRAPH_TIMEOUT", 20.0),
        graph_max_retry_wait=duration("GRAPH_MAX_RETRY_WAIT", 30.0),
        graph_retry_after_cap=duration("GRAPH_RETRY_AFTER_CAP", 10.0),
        invoke_budget=invoke_budget,
        max_concurrent_turns=max_turns,
        sweep_interval=duration("SWEEP_INTERVAL", 30.0),
        submit_lease_grace=duration("SUBMIT_LEASE_GRACE", 10.0),
        completion_first_check=duration("COMPLETION_FIRST_CHECK", 30.0),
        completion_max_interval=duration("COMPLETION_MAX_INTERVAL", 600.0),
        completion_timeout=duration("COMPLETION_TIMEOUT", 24 * 3600.0),
        chrome_status_properties=names(
            "INTUNE_CHROME_STATUS_PROPERTIES", ("deviceStatus", "status", "deprovisionStatus")
        ),
        deprovisioned_values=names("INTUNE_DEPROVISIONED_VALUES", ("deprovisioned",)),
        audit_key=audit_key,
        allow_anonymous=allow_anonymous,
        botframework_openid_metadata=metadata_url,
        botframework_issuers=issuers,
        allowed_service_url_hosts=hosts,
    )
    if problems:
        raise SettingsError(problems)
    return settings


def _audit_key(value: str | None, app_env: str, problems: list[str]) -> str | None:
    """``AUDIT_KEY``: required in production, at least :data:`AUDIT_KEY_MIN_BYTES` bytes when set."""
    if value is None:
        if app_env == "production":
            problems.append(
                "AUDIT_KEY: required when APP_ENV=production — a random secret of at least "
                f"{AUDIT_KEY_MIN_BYTES} characters that keys the audit trail's hash chain (keep it in Key Vault)"
            )
        return None
    if len(value.encode()) < AUDIT_KEY_MIN_BYTES:
        problems.append(f"AUDIT_KEY: must be at least {AUDIT_KEY_MIN_BYTES} bytes long (a random secret)")
        return None
    return value


@dataclass(frozen=True)
class AuditSettings:
    """What the ``audit`` commands need: the database and the audit key — not the Graph or Bot settings."""

    database_url: str = DEFAULT_DATABASE_URL
    app_env: Literal["development", "production"] = "development"
    log_format: Literal["json", "text"] = "text"
    log_level: str = "INFO"
    audit_key: str | None = field(default=None, repr=False)

    def secrets(self) -> list[str]:
        return [self.audit_key] if self.audit_key else []


def load_audit_settings(environ: Mapping[str, str] | None = None) -> AuditSettings:
    """Read only ``DATABASE_URL``, ``APP_ENV``, ``LOG_FORMAT``, ``LOG_LEVEL`` and ``AUDIT_KEY`` (for the ``audit`` CLI)."""
    env = merged_environment(environ)
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    app_env = (get("APP_ENV") or "development").lower()
    if app_env not in ("development", "production"):
        problems.append(f"APP_ENV: expected one of development, production, got {app_env!r}")
        app_env = "development"
    log_format = (get("LOG_FORMAT") or ("json" if app_env == "production" else "text")).lower()
    if log_format not in ("json", "text"):
        problems.append(f"LOG_FORMAT: expected one of json, text, got {log_format!r}")
        log_format = "text"
    log_level = (get("LOG_LEVEL") or "INFO").upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        problems.append(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        log_level = "INFO"
    database_url = normalise_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        problems.append(
            f"DATABASE_URL: expected sqlite:///path or postgresql://..., got {database_url.split('@')[-1]!r}"
        )
    # Required in production only by ``audit verify`` (``app.py`` says so); ``head`` and ``export`` need no key.
    audit_key = _audit_key(get("AUDIT_KEY"), "development", problems)
    if problems:
        raise SettingsError(problems)
    return AuditSettings(
        database_url=database_url,
        app_env=app_env,  # type: ignore[arg-type]
        log_format=log_format,  # type: ignore[arg-type]
        log_level=log_level,
        audit_key=audit_key,
    )
