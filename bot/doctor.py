"""``python app.py doctor``: check a deployment against the tenant it is configured for, one row per requirement.

Each row is PASS, FAIL or SKIP (a check that could not run because an earlier one failed) with a "how to fix"
that names the exact setting or Microsoft Graph application permission. The exit code is 0 only when every
row passes, 2 when the settings themselves are incomplete, 1 otherwise.

Rows, in order: settings complete → Graph token → read managed devices → deprovision permission consented
(only when the Graph token is a JWT whose ``roles`` claim can be read) → read Intune roles (RBAC) → read Entra
directory roles → check group membership → read Entra device objects → database reachable and migrated →
Bot Framework credentials → Bot Framework inbound auth (production mode, issuer allow-list, signing keys load).

The doctor only reads: it never migrates the database, never creates a SQLite file and never calls a Graph
write. The membership and directory-role checks need a user to ask about: ``DOCTOR_TEST_USER_ID`` (a user's
Entra object id) if set, otherwise a principal holding the Global Administrator role (every tenant has one).
Secrets and tokens are never printed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import sys
import textwrap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from bot.errors import GraphError
from bot.graph import GraphClient, MsalTokenSource, odata_string
from bot.logs import safe
from bot.settings import GLOBAL_ADMINISTRATOR, Settings, SettingsError, load_settings, merged_environment

PASS = "PASS"
FAIL = "FAIL"
SKIP = "SKIP"

BOTFRAMEWORK_RESOURCE = "https://api.botframework.com"
CONN = "CONNECTIONS__SERVICE_CONNECTION__SETTINGS__"
TEST_USER_ENV = "DOCTOR_TEST_USER_ID"
PLACEHOLDER_GROUP = "00000000-0000-0000-0000-000000000000"
DATABASE_TIMEOUT = 15.0

# The application permissions each check proves (graph-intune.md §13).
PERM_DEVICES = "DeviceManagementManagedDevices.Read.All"
PERM_PRIVILEGED = "DeviceManagementManagedDevices.PrivilegedOperations.All"
PERM_DEVICES_RW = "DeviceManagementManagedDevices.ReadWrite.All"
PERM_RBAC = "DeviceManagementRBAC.Read.All"
PERM_MEMBERSHIP = "User.Read.All + GroupMember.Read.All"
PERM_ENTRA_DEVICES = "Device.Read.All"
PERM_DIR_ROLES = "RoleManagement.Read.Directory"
DIRECTORY_READ_ALL = "Directory.Read.All"

CHECK_SETTINGS = "settings complete"
CHECK_TOKEN = "Graph token"
CHECK_DEVICES = "read managed devices"
CHECK_DEPROVISION = "deprovision permission consented"
CHECK_RBAC = "read Intune roles (RBAC)"
CHECK_DIR_ROLES = "read Entra directory roles"
CHECK_MEMBERSHIP = "check group membership"
CHECK_ENTRA_DEVICES = "read Entra device objects"
CHECK_DATABASE = "database reachable and migrated"
CHECK_BOT = "Bot Framework credentials"
CHECK_INBOUND = "Bot Framework inbound auth"
GRAPH_CHECKS = (CHECK_DEVICES, CHECK_RBAC, CHECK_DIR_ROLES, CHECK_MEMBERSHIP, CHECK_ENTRA_DEVICES)

#: Permission names in a 403 body, e.g. Intune's "Application must have one of the following scopes: A, B".
_SCOPE = re.compile(r"\b[A-Z][A-Za-z]+\.(?:Read|ReadWrite|ReadBasic|PrivilegedOperations)(?:\.[A-Za-z]+)*\b")
_AADSTS = re.compile(r"AADSTS(\d+)")


@dataclass
class Row:
    """One line of the report: ``text`` is the detail for PASS and the fix for FAIL/SKIP."""

    check: str
    result: str
    text: str = ""


@dataclass
class _Context:
    """What earlier checks learnt and later ones use."""

    settings: Settings
    test_user: str | None
    member_groups: list[str] = field(default_factory=list)
    principals: list[str] = field(default_factory=list)


# -- fixes ------------------------------------------------------------------------------------------------


def scopes_in(message: str) -> list[str]:
    """Permission names mentioned in a Graph error message, in order, without duplicates."""
    seen: list[str] = []
    for name in _SCOPE.findall(message):
        if name not in seen:
            seen.append(name)
    return seen


def permission_fix(settings: Settings, needed: str, exc: GraphError, *, alternative: str | None = None) -> str:
    """How to fix a Graph error, naming the application permission to grant."""
    if exc.status == 403:
        listed = scopes_in(exc.message)
        first = needed.split(" + ")[0]
        grant = needed if not listed or first in listed else listed[0]
        text = (
            f"Grant the Microsoft Graph application permission {grant} "
            + (f"(or {alternative}) " if alternative and grant == needed else "")
            + f"to app {settings.client_id or '(managed identity)'} and grant admin consent "
            "(Entra admin center → App registrations → API permissions), then run doctor again."
        )
        if listed:
            text += f" Graph said the call needs one of: {', '.join(listed)}."
        else:
            text += f" Graph answered 403 {exc.code}."
        return text
    if exc.status == 401:
        return (
            f"Graph refused the app-only token (401 {exc.code}): check AZURE_TENANT_ID and that GRAPH_RESOURCE is "
            f"{settings.graph_resource!r} for GRAPH_BASE_URL {settings.graph_base_url}."
        )
    if exc.status == 0 or exc.status >= 500:
        return (
            f"Could not get an answer from Graph at {settings.graph_base_url} ({exc.code}: {exc.message}); "
            "check network, proxy and GRAPH_BASE_URL, then run doctor again."
        )
    return f"Graph answered {exc.status} {exc.code}: {exc.message}"


def token_fix(exc: GraphError, *, host: str, tenant_var: str, client_var: str, secret_var: str) -> str:
    """How to fix a failed client-credentials token request, by Entra error (AADSTS code)."""
    code = _AADSTS.search(exc.message)
    number = code.group(1) if code else ""
    message = exc.message.split(" Trace ID:")[0].strip()
    said = f" Entra said: {message[:240]}" if message and exc.code != "token_request_failed" else ""
    if exc.code == "token_request_failed":
        return (
            f"Could not reach https://{host} ({exc.message}): check AZURE_AUTHORITY_HOST, network/proxy and the CA "
            "bundle (REQUESTS_CA_BUNDLE / SSL_CERT_FILE)."
        )
    if number in ("7000215", "7000222") or exc.code == "invalid_client":
        return f"{secret_var} is wrong or expired: create a new client secret for the app and set {secret_var}.{said}"
    if number == "700016" or exc.code == "unauthorized_client":
        return f"{client_var} is not an app registration in tenant {tenant_var} (single-tenant app?).{said}"
    if number in ("90002", "900023") or exc.code == "invalid_tenant":
        return f"{tenant_var} is not a tenant at https://{host}: use the directory (tenant) id GUID.{said}"
    return f"The token request failed ({exc.code}).{said}"


def token_roles(token: str) -> list[str] | None:
    """The ``roles`` claim (consented application permissions) of a JWT access token; None if not a JWT.

    Read without verifying the signature: this only informs the report, it grants nothing.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    roles = payload.get("roles") or []
    return [str(r) for r in roles] if isinstance(roles, list) else []


def deprovision_consent_row(roles: Sequence[str]) -> Row:
    """Which of the candidate gates for deprovision the app holds (graph-intune.md §2; the real gate is UNVERIFIED).

    Graph's published permission maps listed deprovision under ``ReadWrite.All`` (2021) and later ``Read.All`` (2022),
    never ``PrivilegedOperations.All``, which every other state-changing remote action names.
    """
    candidates = (PERM_DEVICES, PERM_DEVICES_RW, PERM_PRIVILEGED)
    held = [p for p in candidates if p in roles]
    missing = [p for p in candidates if p not in roles]
    summary = f"holds {', '.join(held) or 'none of them'}; not {', '.join(missing) or '—'}."
    if PERM_PRIVILEGED in roles or PERM_DEVICES_RW in roles:
        return Row(
            CHECK_DEPROVISION,
            PASS,
            f"Candidate gates for deprovision: {summary} Which one Intune enforces is UNVERIFIED: grant one at a "
            "time and record which makes a 403 go away (docs/deploy.md §2).",
        )
    return Row(
        CHECK_DEPROVISION,
        FAIL,
        f"Candidate gates for deprovision: {summary} Grant {PERM_DEVICES_RW} (Graph's 2021 permission map) or "
        f"{PERM_PRIVILEGED} (what other remote actions need) with admin consent — the real gate is UNVERIFIED "
        "(the Graph docs list only Read scopes for it).",
    )


# -- Graph checks -----------------------------------------------------------------------------------------


async def _probe(name: str, call: Callable[[], Awaitable[Row]], fix: Callable[[GraphError], str]) -> Row:
    try:
        return await call()
    except GraphError as exc:
        return Row(name, FAIL, fix(exc))
    except Exception as exc:  # the doctor reports, it never crashes
        return _unexpected(name, exc)


def _unexpected(name: str, exc: Exception) -> Row:
    return Row(name, FAIL, f"Unexpected {type(exc).__name__}: {safe(str(exc), 200)}")


async def graph_rows(ctx: _Context) -> list[Row]:
    settings = ctx.settings
    tokens = MsalTokenSource(settings, settings.graph_resource)
    try:
        token = await tokens.token()
    except GraphError as exc:
        fix = token_fix(
            exc,
            host=settings.authority_host,
            tenant_var="AZURE_TENANT_ID",
            client_var="AZURE_CLIENT_ID",
            secret_var="AZURE_CLIENT_SECRET",
        )
        if settings.use_managed_identity:
            fix = f"The managed identity could not get a Graph token ({exc.code}): is one assigned to this host?"
        return [Row(CHECK_TOKEN, FAIL, fix)] + [Row(name, SKIP, f"needs a {CHECK_TOKEN}") for name in GRAPH_CHECKS]

    rows = [Row(CHECK_TOKEN, PASS, f"app-only token for {settings.graph_resource} ({settings.credential_kind})")]
    roles = token_roles(token)
    async with GraphClient.build_http(settings) as http:
        graph = GraphClient(settings, tokens, http, max_attempts=2)
        rows.append(await _probe(CHECK_DEVICES, lambda: _devices(graph), _intune_fix(settings, PERM_DEVICES)))
        if roles is not None:
            rows.append(deprovision_consent_row(roles))
        rows.append(await _probe(CHECK_RBAC, lambda: _rbac(graph, ctx), _intune_fix(settings, PERM_RBAC)))
        rows.append(await _directory_roles(graph, ctx))
        try:
            rows.append(await _membership(graph, ctx))
        except Exception as exc:
            rows.append(_unexpected(CHECK_MEMBERSHIP, exc))
        rows.append(
            await _probe(
                CHECK_ENTRA_DEVICES,
                lambda: _entra_devices(graph),
                lambda exc: permission_fix(settings, PERM_ENTRA_DEVICES, exc, alternative=DIRECTORY_READ_ALL),
            )
        )
    return rows


def _intune_fix(settings: Settings, needed: str) -> Callable[[GraphError], str]:
    def fix(exc: GraphError) -> str:
        text = permission_fix(settings, needed, exc)
        if exc.status not in (0, 401, 403) and exc.status < 500:
            text += " (Intune Graph calls also need an active Intune licence in the tenant.)"
        return text

    return fix


async def _devices(graph: GraphClient) -> Row:
    body = await graph.get("/beta/deviceManagement/managedDevices", {"$top": "1", "$select": "id"})
    found = "at least one device" if body.get("value") else "no devices yet"
    return Row(CHECK_DEVICES, PASS, f"{PERM_DEVICES} works ({found})")


async def _rbac(graph: GraphClient, ctx: _Context) -> Row:
    await graph.get("/beta/deviceManagement/roleDefinitions", {"$top": "1", "$select": "id"})
    body = await graph.get("/beta/deviceManagement/roleAssignments", {"$top": "20"})
    assignments = body.get("value", [])
    for assignment in assignments:
        for group in assignment.get("members") or []:
            if str(group) not in ctx.member_groups:
                ctx.member_groups.append(str(group))
    if not assignments:
        return Row(CHECK_RBAC, PASS, f"{PERM_RBAC} works; no Intune role assignments yet (only Entra admins qualify)")
    return Row(CHECK_RBAC, PASS, f"{PERM_RBAC} works (role definitions and assignments readable)")


def _dir_roles_fix(settings: Settings) -> Callable[[GraphError], str]:
    def fix(exc: GraphError) -> str:
        if exc.status == 404 and exc.code.startswith("Request_ResourceNotFound"):
            return f"{TEST_USER_ENV} names no user in the tenant: set it to a user's Entra object id."
        return permission_fix(settings, PERM_DIR_ROLES, exc, alternative=DIRECTORY_READ_ALL)

    return fix


async def _directory_roles(graph: GraphClient, ctx: _Context) -> Row:
    settings = ctx.settings

    async def call() -> Row:
        if ctx.test_user is None:
            body = await graph.get(
                "/v1.0/roleManagement/directory/roleAssignments",
                {"$filter": f"roleDefinitionId eq {odata_string(GLOBAL_ADMINISTRATOR)}", "$select": "id,principalId"},
            )
            ctx.principals = [str(r["principalId"]) for r in body.get("value", []) if r.get("principalId")]
        subject = ctx.test_user or (ctx.principals[0] if ctx.principals else None)
        if subject is None:
            return Row(CHECK_DIR_ROLES, PASS, f"{PERM_DIR_ROLES} works (no Global Administrator assignment found)")
        # The bot's own query (bot/rbac.py): transitive, with $count and ConsistencyLevel: eventual.
        body = await graph.get(
            "/beta/roleManagement/directory/transitiveRoleAssignments",
            {
                "$count": "true",
                "$filter": f"principalId eq {odata_string(subject)}",
                "$select": "roleDefinitionId",
            },
            headers={"ConsistencyLevel": "eventual"},
        )
        held = len(body.get("value", []))
        return Row(CHECK_DIR_ROLES, PASS, f"{PERM_DIR_ROLES} works ({held} role(s) for {subject})")

    row = await _probe(CHECK_DIR_ROLES, call, _dir_roles_fix(settings))
    if row.result == PASS and not settings.entra_admin_roles_allowed:
        row.text += "; not needed while ENTRA_ADMIN_ROLES_ALLOWED=false"
    return row


async def _membership(graph: GraphClient, ctx: _Context) -> Row:
    settings = ctx.settings
    candidates = [ctx.test_user] if ctx.test_user else ctx.principals[:3]
    if not candidates:
        return Row(
            CHECK_MEMBERSHIP,
            SKIP,
            f"No user to test with: set {TEST_USER_ENV}=<Entra object id of a helpdesk user> and run doctor again.",
        )
    group = settings.approver_group_id or (ctx.member_groups[0] if ctx.member_groups else PLACEHOLDER_GROUP)
    last: GraphError | None = None
    for user in candidates:
        try:
            response = await graph.post(f"/v1.0/users/{user}/checkMemberGroups", {"groupIds": [group]})
        except GraphError as exc:
            last = exc
            if exc.status == 404 and not ctx.test_user:
                continue  # that principal is a group or a service principal: try the next one
            break
        member = group in (response.body or {}).get("value", [])
        relation = "is" if member else "is not"
        return Row(CHECK_MEMBERSHIP, PASS, f"{PERM_MEMBERSHIP} works ({user} {relation} a member of {group})")
    assert last is not None
    if last.status == 404:
        hint = (
            f"{TEST_USER_ENV} names no user in the tenant"
            if ctx.test_user
            else "the Global Administrator principals are not users"
        )
        return Row(CHECK_MEMBERSHIP, FAIL, f"{hint}: set {TEST_USER_ENV} to a user's Entra object id.")
    return Row(CHECK_MEMBERSHIP, FAIL, permission_fix(settings, PERM_MEMBERSHIP, last, alternative=DIRECTORY_READ_ALL))


async def _entra_devices(graph: GraphClient) -> Row:
    await graph.get("/v1.0/devices", {"$top": "1", "$select": "id,deviceId"})
    return Row(CHECK_ENTRA_DEVICES, PASS, f"{PERM_ENTRA_DEVICES} works")


# -- database ---------------------------------------------------------------------------------------------


def _database_label(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme.split('+')[0]}://{rest.split('@')[-1]}"  # never the password


async def database_row(settings: Settings) -> Row:
    from bot.migrations import head_revision
    from bot.store import Store

    url = settings.database_url
    label = _database_label(url)
    migrate = "run `python app.py migrate` (the bot also migrates when it starts)"
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:" and not await asyncio.to_thread(Path(path).is_file):
            return Row(CHECK_DATABASE, FAIL, f"No database file at {path}: {migrate}.")
    try:
        store = await Store.open(url, migrate=False)
    except Exception as exc:  # bad URL or missing driver
        return Row(CHECK_DATABASE, FAIL, f"Cannot open {label} ({type(exc).__name__}): check DATABASE_URL.")
    try:
        try:
            reachable = await asyncio.wait_for(store.ping(), timeout=DATABASE_TIMEOUT)
        except TimeoutError:
            reachable = False
        if not reachable:
            return Row(
                CHECK_DATABASE,
                FAIL,
                f"Cannot connect to {label}: check DATABASE_URL (host, port, user, password, database), "
                "firewall rules and that the server is running.",
            )
        current, head = await store.current_revision(), head_revision()
        if current is None:
            return Row(CHECK_DATABASE, FAIL, f"{label} has no schema yet: {migrate}.")
        if current != head:
            return Row(CHECK_DATABASE, FAIL, f"{label} is at revision {current}, this code expects {head}: {migrate}.")
        return Row(CHECK_DATABASE, PASS, f"{label} at revision {head} (head)")
    finally:
        await store.close()


# -- Bot Framework ----------------------------------------------------------------------------------------


async def bot_framework_row(settings: Settings) -> Row:
    """Get a token for the Bot Connector with the bot's own credentials, as the SDK will when it replies."""
    if settings.anonymous:
        return Row(
            CHECK_BOT,
            FAIL,
            f"Anonymous mode (local use only): set {CONN}CLIENTID, {CONN}CLIENTSECRET and {CONN}TENANTID "
            "to the Azure Bot's Microsoft App ID, a client secret of that app registration and its tenant id.",
        )
    if not settings.bot_tenant_id:
        return Row(
            CHECK_BOT, FAIL, f"Set {CONN}TENANTID to the tenant id of the bot's app registration (single-tenant bot)."
        )
    kind = (settings.bot_auth_type or "ClientSecret").lower()
    base = replace(settings, tenant_id=settings.bot_tenant_id, client_certificate_path=None)
    if kind == "clientsecret":
        bot = replace(base, client_id=settings.bot_client_id or "", client_secret=settings.bot_client_secret)
    elif kind == "usermanagedidentity":
        bot = replace(base, client_id=settings.bot_client_id or "", client_secret=None, use_managed_identity=True)
    elif kind == "systemmanagedidentity":
        bot = replace(base, client_id="", client_secret=None, use_managed_identity=True)
    else:
        return Row(
            CHECK_BOT,
            SKIP,
            f"{CONN}AUTHTYPE={settings.bot_auth_type}: doctor tests ClientSecret and managed identities only; "
            "send the bot a message in Teams to test this one.",
        )
    try:
        await MsalTokenSource(bot, BOTFRAMEWORK_RESOURCE).token()
    except Exception as exc:
        if not isinstance(exc, GraphError):
            return Row(CHECK_BOT, FAIL, f"The token request failed ({type(exc).__name__}).")
        return Row(
            CHECK_BOT,
            FAIL,
            token_fix(
                exc,
                host=settings.authority_host,
                tenant_var=f"{CONN}TENANTID",
                client_var=f"{CONN}CLIENTID",
                secret_var=f"{CONN}CLIENTSECRET",
            ),
        )
    how = settings.bot_auth_type or "ClientSecret"
    return Row(CHECK_BOT, PASS, f"token for {BOTFRAMEWORK_RESOURCE} as app {settings.bot_client_id} ({how})")


async def inbound_auth_row(settings: Settings) -> Row:
    """Production auth mode, a non-empty issuer allow-list, and the channel's signing keys can be loaded."""
    from bot.auth import AuthError, ChannelTokenValidator

    if settings.anonymous:
        return Row(
            CHECK_INBOUND,
            FAIL,
            "Anonymous mode (ALLOW_ANONYMOUS=true): requests to /api/messages are not authenticated. Set "
            f"{CONN}CLIENTID (and its credential) and remove ALLOW_ANONYMOUS for any real deployment.",
        )
    if not settings.botframework_issuers:
        return Row(
            CHECK_INBOUND,
            FAIL,
            "BOTFRAMEWORK_ISSUERS is empty: set it to https://api.botframework.com (comma list) so that only "
            "tokens from the Bot Framework are accepted.",
        )
    validator = ChannelTokenValidator(settings)
    try:
        count = await validator.load_keys()
    except AuthError as exc:
        return Row(
            CHECK_INBOUND,
            FAIL,
            f"Could not load the channel's signing keys from BOTFRAMEWORK_OPENID_METADATA="
            f"{settings.botframework_openid_metadata} ({exc.reason}): check outbound HTTPS to that host, proxy "
            "and SSL_CERT_FILE.",
        )
    finally:
        await validator.aclose()
    return Row(
        CHECK_INBOUND,
        PASS,
        f"{count} signing key(s) from {settings.botframework_openid_metadata}; issuers "
        f"{', '.join(settings.botframework_issuers)}; audience {settings.bot_client_id}; replies only to "
        f"{', '.join(settings.allowed_service_url_hosts)}",
    )


# -- report -----------------------------------------------------------------------------------------------


def render(rows: Sequence[Row], secrets: Sequence[str] = (), width: int = 118) -> str:
    """A plain-text table: CHECK | RESULT | HOW TO FIX (the detail on PASS rows)."""
    name_width = max(len("CHECK"), *(len(r.check) for r in rows))
    indent = name_width + 2 + 6 + 2
    lines = [f"{'CHECK':<{name_width}}  RESULT  HOW TO FIX / DETAIL", f"{'-' * name_width}  ------  {'-' * 19}"]
    for row in rows:
        text = row.text
        for secret in secrets:
            text = text.replace(secret, "***")
        wrapped = textwrap.wrap(text, width=max(40, width - indent)) or [""]
        lines.append(f"{row.check:<{name_width}}  {row.result:<6}  {wrapped[0]}")
        lines.extend(" " * indent + more for more in wrapped[1:])
    counts = {result: sum(r.result == result for r in rows) for result in (PASS, FAIL, SKIP)}
    lines.append("")
    lines.append(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped")
    if counts[FAIL] or counts[SKIP]:
        lines.append("Fix the FAIL rows (SKIP rows depend on them) and run `python app.py doctor` again.")
    else:
        lines.append("All checks passed. Next: message the bot in Teams (desktop and mobile).")
    return "\n".join(lines)


async def run_doctor(environ: Mapping[str, str] | None = None, *, out: TextIO | None = None) -> int:
    """Check the configured tenant, permissions, database and Bot Framework credentials; print a table.

    Returns 0 when every check passes, 2 when settings are incomplete, 1 otherwise.
    """
    stream = out if out is not None else sys.stdout
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        rows = [Row(CHECK_SETTINGS, FAIL, problem) for problem in exc.problems]
        print(render(rows), file=stream)
        print("The other checks need complete settings and did not run.", file=stream)
        return 2
    env = merged_environment(environ)
    test_user = (env.get(TEST_USER_ENV) or "").strip() or None
    ctx = _Context(settings, test_user)
    rows = [
        Row(
            CHECK_SETTINGS,
            PASS,
            f"tenant {settings.tenant_id}, Graph app {settings.client_id or '(managed identity)'} "
            f"({settings.credential_kind}), APP_ENV={settings.app_env}",
        )
    ]
    rows += await graph_rows(ctx)
    for name, check in (
        (CHECK_DATABASE, database_row),
        (CHECK_BOT, bot_framework_row),
        (CHECK_INBOUND, inbound_auth_row),
    ):
        try:
            rows.append(await check(settings))
        except Exception as exc:
            rows.append(_unexpected(name, exc))
    print(render(rows, settings.secrets()), file=stream)
    return 0 if all(r.result == PASS for r in rows) else 1
