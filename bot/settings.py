"""One typed, strict settings object, read once at start-up.

Values come from the process environment and, below it, an optional ``.env`` file (``ENV_FILE`` names another).
Every variable is declared once, in :data:`VARIABLES`: its name, the :class:`Settings` field it fills, its parser
(:mod:`bot.settings_parse`), its default in the variable's own syntax and what it means — the README's
configuration table is generated from that declaration (``python -m bot.settings_doc``; a test keeps it current).
What one variable cannot say alone (credentials that go together, production rules) is checked after all are read.
Every problem is collected and reported together — one line per problem — and the process exits with code 2
before it listens (see ``app.py``). Nothing below ``app.py`` reads ``os.environ``.

A new setting is one :class:`Var` row in :data:`VARIABLES` plus its typed field in :class:`Settings`; then run
``python -m bot.settings_doc`` (README table) and add its ``# NAME=default`` line to ``.env.example``.

A table of dataclasses, not ``pydantic-settings``: the exact one-line problem texts, the env-file rules and the
cross-variable checks stay as they are, with no new dependency.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bot import settings_parse as p

AUDIT_KEY_MIN_BYTES = 32
"""``AUDIT_KEY`` is any secret string of at least this many bytes (UTF-8), used as the HMAC-SHA256 key."""
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
INTUNE_ADMINISTRATOR = "3a2c62db-5318-420d-8d74-23affee5d9d5"
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

CONN = "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"
_HOST_PORT = r"[A-Za-z0-9.-]+(:\d{1,5})?"


class SettingsError(Exception):
    """Raised with every problem found; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Var:
    """One environment variable, declared once.

    ``field``: the :class:`Settings` / :class:`AuditSettings` attribute it fills (``None``: used by a check below, or
    read by another tool). ``parse``: ``None`` when another tool (``doctor``, ``make package``) reads it.
    ``default``: in the variable's own syntax, parsed like a value that was set (``None``: no value).
    ``shown``: the README's default cell when it says more than ``default``. ``blank_is_unset``: an empty value
    counts as not set (for allow-lists an empty value is a mistake, and is reported).
    """

    name: str
    field: str | None
    parse: p.Parse | None
    default: str | None
    doc: str
    shown: str | None = None
    blank_is_unset: bool = True

    def read(self, env: Mapping[str, str], problems: list[str]) -> Any:
        """The parsed value (or default); a problem line per thing wrong, then the default."""
        value = env.get(self.name)
        if self.blank_is_unset:
            value = value.strip() if value and value.strip() else None
        if self.parse is None or (value is None and self.default is None):
            return value
        try:
            return self.parse(value if value is not None else str(self.default))
        except ValueError as exc:
            problems.extend(f"{self.name}: {line}" for line in str(exc).splitlines())
            return None if self.default is None else self.parse(self.default)


def _unslash(value: str) -> str:
    return value.rstrip("/")


def _bare_host(value: str) -> str:
    return value.removeprefix("https://").rstrip("/")


_DURATION = p.duration()
REQUIRED = "**required**"

#: Every environment variable the bot and its tools read, in the order the README's table shows them.
# fmt: off
VARIABLES: tuple[Var, ...] = (
    # -- Bot Framework -------------------------------------------------------------------------------------------
    Var(CONN + "CLIENTID", "bot_client_id", p.text, None,
        "Azure Bot (Bot Framework) app id = the audience every inbound channel token must carry (production auth "
        "mode). **Required** unless `ALLOW_ANONYMOUS=true`"),
    Var("ALLOW_ANONYMOUS", "allow_anonymous", p.boolean, "false",
        "`true` (and no `CLIENTID`) = anonymous local mode: no inbound token check, no outbound token, listens on "
        "**127.0.0.1 whatever `HOST` says**, a loud warning at start; refused when `APP_ENV=production`. `make run` "
        "and the tests set it"),
    Var("BOTFRAMEWORK_OPENID_METADATA", "botframework_openid_metadata",
        p.matching(rf"^https://{_HOST_PORT}/\S*$", "an https:// URL"),
        "https://login.botframework.com/v1/.well-known/openidconfiguration",
        "where the channel's token-signing keys are published (its `jwks_uri`); keys are cached, re-read daily and "
        "on an unknown key id (at most every 30 s)"),
    Var("BOTFRAMEWORK_ISSUERS", "botframework_issuers",
        p.non_empty_names("issuer allow-list", ",".join(DEFAULT_BOTFRAMEWORK_ISSUERS)),
        ",".join(DEFAULT_BOTFRAMEWORK_ISSUERS),
        "comma list: the only `iss` values accepted on inbound tokens (must not be empty)", blank_is_unset=False),
    Var("ALLOWED_SERVICE_URL_HOSTS", "allowed_service_url_hosts", p.host_names, ",".join(DEFAULT_SERVICE_URL_HOSTS),
        "comma list of hosts (`*.` = any subdomain) an activity's `serviceUrl` may name (HTTP 403 otherwise) and "
        "proactive messages may go to; `https` only, `http` for loopback",
        shown=f"`{','.join(DEFAULT_SERVICE_URL_HOSTS)}` (+ `{','.join(LOOPBACK_HOSTS)}` in anonymous mode)",
        blank_is_unset=False),
    Var(CONN + "CLIENTSECRET", "bot_client_secret", p.text, None,
        "its secret (or set `…__AUTHTYPE`, e.g. `UserManagedIdentity`, as the Agents SDK documents)"),
    Var(CONN + "TENANTID", "bot_tenant_id", p.text, None, "the bot registration's tenant (single-tenant bot)"),
    Var(CONN + "AUTHTYPE", "bot_auth_type", p.text, None,
        "how the Agents SDK gets the bot's own token when not by `CLIENTSECRET` (e.g. `UserManagedIdentity`)",
        shown="`ClientSecret`"),
    # -- Microsoft Graph ----------------------------------------------------------------------------------------
    Var("AZURE_TENANT_ID", "tenant_id",
        p.matching(r"^(?:[0-9a-fA-F-]{30,40}|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)$", "a tenant GUID"), None,
        "the Entra tenant the bot serves; activities in which any tenant field present (`channelData.tenant.id`, "
        "`conversation.tenantId`, the token's `tid`) differs, or that carry none, are refused (HTTP 403, no reply, "
        "no Graph call)", shown=REQUIRED),
    Var("AZURE_CLIENT_ID", "client_id", p.text, None,
        "app registration used for Graph (application permissions, see [docs/deploy.md](docs/deploy.md))",
        shown=REQUIRED),
    Var("AZURE_CLIENT_SECRET", "client_secret", p.text, None, "Graph credential, option 1"),
    Var("AZURE_CLIENT_CERTIFICATE_PATH", "client_certificate_path", p.text, None,
        "option 2: a PEM file with private key + certificate (used when no secret is set)"),
    Var("AZURE_USE_MANAGED_IDENTITY", "use_managed_identity", p.boolean, "false",
        "option 3: managed identity (user-assigned when `AZURE_CLIENT_ID` is set, else system-assigned)"),
    Var("AZURE_AUTHORITY_HOST", "authority_host",
        p.matching(rf"^{_HOST_PORT}$", "a host name with optional :port", _bare_host), "login.microsoftonline.com",
        "Entra host, may include a port (instance discovery is off for non-Microsoft hosts); the bot's own Bot "
        "Connector token is requested from it too"),
    Var("GRAPH_BASE_URL", "graph_base_url",
        p.matching(rf"^https://{_HOST_PORT}$", "https://host[:port] with no path", _unslash),
        "https://graph.microsoft.com", "Graph host (`https://host[:port]`, no path)"),
    # The token audience stays Graph's even when GRAPH_BASE_URL points at a stand-in.
    Var("GRAPH_RESOURCE", "graph_resource", _unslash, "https://graph.microsoft.com",
        "token audience for Graph (`/.default` is appended); change for national clouds"),
    # -- Process --------------------------------------------------------------------------------------------------
    Var("DATABASE_URL", "database_url", p.database_url, "sqlite:///./data/deprovision.db",
        "SQLite file (WAL, zero set-up) or `postgresql://user:pass@host/db` for several instances"),
    Var("AUDIT_KEY", "audit_key", p.secret_of_at_least(AUDIT_KEY_MIN_BYTES), None,
        "secret (any string of at least 32 bytes) that keys the audit trail's HMAC chain; keep it in Key Vault, "
        "apart from the database and its backups. Unset in development: a random key created 0600 beside the SQLite "
        "file (`<database>.audit.key`), or `./data/audit-dev.key` for PostgreSQL, with a warning. The `audit` "
        "commands need only `DATABASE_URL` and `AUDIT_KEY`", shown="— (**required when `APP_ENV=production`**)"),
    Var("PORT", "port", p.port, "3978", "where the bot listens"),
    # A bot behind Azure Bot Service must listen on all interfaces.
    Var("HOST", "host", p.text, "0.0.0.0", "the interface it listens on (anonymous mode always binds 127.0.0.1)"),  # noqa: S104
    Var("APP_ENV", "app_env", p.choice("development", "production"), "development",
        "`production` refuses anonymous mode and defaults to JSON logs"),
    Var("LOG_FORMAT", "log_format", p.choice("json", "text"), None,
        "one structured line per request and per Graph call (`json` or `text`); secrets and tokens are masked",
        shown="`text` (`json` in production)"),
    Var("LOG_LEVEL", "log_level", p.log_level, "INFO", "`DEBUG`, `INFO`, `WARNING` or `ERROR`"),
    # -- Deprovisioning and approvals -------------------------------------------------------------------------------
    Var("ACTION_TTL", "action_ttl", _DURATION, "15m",
        "how long a confirmation card stays valid; a device of a confirmed bulk request not sent within it expires"),
    Var("APPROVAL_MODE", "approval_mode", p.choice("none", "peer"), "none",
        "`peer` = a second eligible person must approve"),
    Var("APPROVAL_TTL", "approval_ttl", _DURATION, "24h", "how long an approval may wait"),
    Var("APPROVAL_CHANNEL_ID", "approval_channel_id", p.text, None,
        "post approval cards to this Teams channel (`19:…@thread.tacv2`) instead of the requester's conversation"),
    Var("APPROVER_GROUP_ID", "approver_group_id", p.text, None,
        "approvers must also be transitive members of this Entra group"),
    Var("RBAC_CACHE_TTL", "rbac_cache_ttl", _DURATION, "5m",
        "role definitions/assignments cache (refreshed in the background); group memberships are never cached"),
    Var("ENTRA_ADMIN_ROLES_ALLOWED", "entra_admin_roles_allowed", p.boolean, "true",
        "Global Administrator / Intune Administrator may deprovision without an Intune role"),
    Var("ENTRA_ADMIN_ROLE_IDS", "entra_admin_role_ids", p.names_or((GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR)),
        f"{GLOBAL_ADMINISTRATOR},{INTUNE_ADMINISTRATOR}",
        "comma-separated Entra role template ids treated as admins", shown="the two role template ids"),
    Var("DEPROVISION_REASON_MAP", "reason_map", p.pairs_over(DEFAULT_REASON_MAP),
        ",".join(f"{k}={v}" for k, v in DEFAULT_REASON_MAP.items()),
        "`key=wire,…` for the four reasons (`same_model_replacement`, `different_model_replacement`, "
        "`retiring_device`, `upgrade_transfer`) — the strings Intune accepts are **UNVERIFIED**",
        shown="Google's legacy strings"),
    # -- Tuning ----------------------------------------------------------------------------------------------------
    Var("GRAPH_TIMEOUT", "graph_timeout", _DURATION, "20s", "read timeout per Graph call"),
    Var("GRAPH_MAX_RETRY_WAIT", "graph_max_retry_wait", _DURATION, "30s",
        "total wait bound when Graph throttles or fails (across the retries of one call)"),
    Var("GRAPH_RETRY_AFTER_CAP", "graph_retry_after_cap", _DURATION, "10s",
        "the longest single wait for Graph's `Retry-After`"),
    Var("INVOKE_BUDGET", "invoke_budget", p.duration(at_most=4.5, why="Teams retries invokes after about 5 s"), "3s",
        "how long a card click waits for Graph before answering \"working…\" (Teams retries after ~5 s)"),
    Var("MAX_CONCURRENT_TURNS", "max_concurrent_turns", p.whole(1, 10_000), "32",
        "messages and card clicks one process works on at once; more wait up to 1 s for a free slot, then get "
        "\"busy, please try again in a moment\" (bounds latency and event-loop lag under overload)"),
    Var("SWEEP_INTERVAL", "sweep_interval", _DURATION, "30s", "expiry and crash-recovery sweep"),
    Var("SUBMIT_LEASE_GRACE", "submit_lease_grace", _DURATION, "10s",
        "added to the longest possible Graph call before another instance may reconcile an abandoned *submitting* "
        "action"),
    Var("COMPLETION_FIRST_CHECK", "completion_first_check", _DURATION, "30s",
        "after Graph accepts a deprovision (or its answer is lost), when the bot first reads Intune's own record of "
        "it (`remoteActionAudits`, `deviceActionResults`); an unknown write with no record after twice this is "
        "settled as not carried out"),
    Var("COMPLETION_MAX_INTERVAL", "completion_max_interval", _DURATION, "10m",
        "the checks back off (doubling) up to this interval"),
    Var("COMPLETION_TIMEOUT", "completion_timeout", _DURATION, "24h",
        "after this the bot stops checking and shows \"Not confirmed by Intune\" (an operator settles it with "
        "`python app.py actions resolve`)"),
    Var("INTUNE_CHROME_STATUS_PROPERTIES", "chrome_status_properties", p.names, "deviceStatus,status,deprovisionStatus",
        "names inside `chromeOSDeviceInfo` read as the ChromeOS status (case-insensitive; **UNVERIFIED**, the raw "
        "values are logged at debug level)"),
    Var("INTUNE_DEPROVISIONED_VALUES", "deprovisioned_values", p.names, "deprovisioned",
        "status values that mean the device is deprovisioned (case-insensitive; **UNVERIFIED**)"),
    # -- Bulk requests (`deprovision` + a list) -------------------------------------------------------------------
    Var("BULK_MAX", "bulk_max", p.whole(1, 1000), "100",
        "most devices one `deprovision` list may name (the Intune admin center's bulk limit); more gets a clear answer "
        "and nothing happens"),
    Var("BULK_CONCURRENCY", "bulk_concurrency", p.whole(1, 50), "10",
        "deprovision POSTs in flight at once per bulk request (a window's writes go out in about budget ÷ this × "
        "Graph's answer time, a delay every later window inherits)"),
    Var("BULK_WRITE_BUDGET", "bulk_write_budget", p.rate, "200/20s",
        "Intune's write budget per app (writes/window, graph-intune.md §10): a bulk run never sends more within any "
        "window; Graph's `429`/`Retry-After` is honoured on top (other instances' writes are not counted)"),
    Var("BULK_UPDATE_INTERVAL", "bulk_update_interval", _DURATION, "3s",
        "at most one in-place update of a bulk request's card per interval (Teams throttles message updates); the "
        "final card is always sent"),
    # -- Operator tools (read by the tool named, not at start-up) -----------------------------------------------------
    Var("DOCTOR_TEST_USER_ID", None, None, None, "`doctor` only: a user object id to test group membership with"),
    Var("MICROSOFT_APP_ID", None, None, None,
        "`make package` only: the bot id written into the Teams app package (else `…__CLIENTID`)"),
    Var("BOT_DOMAIN", None, None, None, "`make package` only: the bot's public host written into the package"),
    # -- TLS (`bot/tls.py` applies a bundle named in `.env` to the whole process) ------------------------------------
    Var("SSL_CERT_FILE", None, p.text, None,
        "CA bundle trusted by msal, httpx and the Agents SDK's clients (the demo and tests use this for the "
        "simulator's CA). A bundle named in `.env` is applied to the whole process at start-up; if the environment "
        "names another, both are trusted", shown="system"),
    Var("REQUESTS_CA_BUNDLE", None, p.text, None, "the same, under the name `requests` reads (read first when both are set)",
        shown="system"),
)
# fmt: on
BY_NAME: dict[str, Var] = {v.name: v for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    """Everything the bot is configured with. Build with :func:`load_settings`; defaults live in :data:`VARIABLES`."""

    tenant_id: str
    client_id: str
    client_secret: str | None
    client_certificate_path: str | None
    use_managed_identity: bool
    authority_host: str
    graph_base_url: str
    graph_resource: str
    ca_file: str | None
    port: int
    host: str
    app_env: Literal["development", "production"]
    log_format: Literal["json", "text"]
    log_level: str
    bot_client_id: str | None
    bot_client_secret: str | None
    bot_tenant_id: str | None
    bot_auth_type: str | None
    database_url: str
    action_ttl: float
    approval_mode: Literal["none", "peer"]
    approval_ttl: float
    approval_channel_id: str | None
    approver_group_id: str | None
    rbac_cache_ttl: float
    entra_admin_roles_allowed: bool
    entra_admin_role_ids: tuple[str, ...]
    reason_map: dict[str, str]
    graph_timeout: float
    graph_max_retry_wait: float
    graph_retry_after_cap: float
    invoke_budget: float
    max_concurrent_turns: int
    sweep_interval: float
    submit_lease_grace: float
    # Following a write in Intune's own record (remoteActionAudits, deviceActionResults, chromeOSDeviceInfo)
    completion_first_check: float
    completion_max_interval: float
    completion_timeout: float
    chrome_status_properties: tuple[str, ...]
    deprovisioned_values: tuple[str, ...]
    # HMAC key of the audit chain (None = development key beside the database); kept out of repr()
    audit_key: str | None = field(repr=False)
    allow_anonymous: bool
    botframework_openid_metadata: str
    botframework_issuers: tuple[str, ...]
    allowed_service_url_hosts: tuple[str, ...]
    # Bulk requests (``deprovision`` + a list): size, concurrency, Intune's write budget, card update pace
    bulk_max: int
    bulk_concurrency: int
    bulk_write_budget: tuple[int, float]
    bulk_update_interval: float

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


def _read(env: Mapping[str, str], names: Iterable[str], problems: list[str]) -> dict[str, Any]:
    """Each named variable's value by its field (or by its name when it fills no field)."""
    return {(var.field or var.name): var.read(env, problems) for var in map(BY_NAME.__getitem__, names)}


def _log_format(values: dict[str, Any]) -> str:
    return str(values["log_format"] or ("json" if values["app_env"] == "production" else "text"))


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise :class:`SettingsError` listing all problems."""
    env = merged_environment(environ)
    problems: list[str] = []
    values = _read(env, (v.name for v in VARIABLES if v.parse is not None), problems)
    _check_credentials(values, problems)
    _check_bot_framework(values, problems)
    anonymous = values["bot_client_id"] is None
    secret, cert = values["client_secret"], values["client_certificate_path"]
    requests_bundle, ssl_bundle = values.pop("REQUESTS_CA_BUNDLE"), values.pop("SSL_CERT_FILE")
    values.update(
        tenant_id=values["tenant_id"] or "",
        client_id=values["client_id"] or "",
        client_certificate_path=None if secret else cert,
        use_managed_identity=values["use_managed_identity"] and not secret and not cert,
        ca_file=requests_bundle or ssl_bundle,
        log_format=_log_format(values),
    )
    if anonymous:
        values["host"] = "127.0.0.1"  # anonymous mode never listens beyond this machine, whatever HOST says
        if "ALLOWED_SERVICE_URL_HOSTS" not in env:
            values["allowed_service_url_hosts"] += LOOPBACK_HOSTS
    if values["audit_key"] is None and values["app_env"] == "production" and "AUDIT_KEY" not in _reported(problems):
        problems.append(
            "AUDIT_KEY: required when APP_ENV=production — a random secret of at least "
            f"{AUDIT_KEY_MIN_BYTES} characters that keys the audit trail's hash chain (keep it in Key Vault)"
        )
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def _reported(problems: list[str]) -> set[str]:
    """The variable names that already have a problem."""
    return {line.split(":", 1)[0] for line in problems}


def _check_credentials(values: dict[str, Any], problems: list[str]) -> None:
    """The Graph credential: a tenant, and a client id with a secret or certificate, or a managed identity."""
    use_mi, secret, cert = values["use_managed_identity"], values["client_secret"], values["client_certificate_path"]
    if values["tenant_id"] is None and "AZURE_TENANT_ID" not in _reported(problems):
        problems.append("AZURE_TENANT_ID: required — the Entra tenant id (GUID) the bot serves")
    if values["client_id"] is None and not use_mi:
        problems.append("AZURE_CLIENT_ID: required — the client id of the app registration used for Graph")
    if secret is None and cert is None and not use_mi:
        problems.append(
            "AZURE_CLIENT_SECRET: required unless AZURE_CLIENT_CERTIFICATE_PATH is set "
            "or AZURE_USE_MANAGED_IDENTITY=true"
        )
    if cert is not None and secret is None and not Path(cert).is_file():
        problems.append(f"AZURE_CLIENT_CERTIFICATE_PATH: no such file {cert!r} (PEM with private key + cert)")


def _check_bot_framework(values: dict[str, Any], problems: list[str]) -> None:
    """The bot's own identity: required unless anonymous local mode was asked for (never in production)."""
    production = values["app_env"] == "production"
    if values["allow_anonymous"] and production:
        problems.append("ALLOW_ANONYMOUS: anonymous Bot Framework mode is refused when APP_ENV=production")
    if values["bot_client_id"] is None:
        if production:
            problems.append(
                f"{CONN}CLIENTID: required when APP_ENV=production (anonymous Bot Framework mode is for local use only)"
            )
        elif not values["allow_anonymous"]:
            problems.append(
                f"{CONN}CLIENTID: required — the Azure Bot's app id; for a local demo without one set "
                "ALLOW_ANONYMOUS=true (unauthenticated, listens on 127.0.0.1 only)"
            )
    elif values["bot_client_secret"] is None and (values["bot_auth_type"] or "ClientSecret").lower() == "clientsecret":
        problems.append(f"{CONN}CLIENTSECRET: required with CLIENTID (or set {CONN}AUTHTYPE)")


@dataclass(frozen=True)
class AuditSettings:
    """What the ``audit`` commands need: the database and the audit key — not the Graph or Bot settings."""

    database_url: str
    app_env: Literal["development", "production"]
    log_format: Literal["json", "text"]
    log_level: str
    audit_key: str | None = field(repr=False)

    def secrets(self) -> list[str]:
        return [self.audit_key] if self.audit_key else []


def load_audit_settings(environ: Mapping[str, str] | None = None) -> AuditSettings:
    """Read only ``DATABASE_URL``, ``APP_ENV``, ``LOG_FORMAT``, ``LOG_LEVEL`` and ``AUDIT_KEY`` (for the ``audit`` CLI).

    ``AUDIT_KEY`` is required in production only by ``audit verify`` (``app.py`` says so); ``head`` and ``export``
    need no key.
    """
    problems: list[str] = []
    names = ("DATABASE_URL", "APP_ENV", "LOG_FORMAT", "LOG_LEVEL", "AUDIT_KEY")
    values = _read(merged_environment(environ), names, problems)
    if problems:
        raise SettingsError(problems)
    return AuditSettings(**{**values, "log_format": _log_format(values)})
