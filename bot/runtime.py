"""Service assembly and the aiohttp application (used by ``app.py``, the tests and the benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from microsoft_agents.activity import Activity
from microsoft_agents.hosting.aiohttp import CloudAdapter, start_agent_process
from microsoft_agents.hosting.core import AgentApplication, ClaimsIdentity, TurnState

from bot.audit import AuditLog, load_audit_key
from bot.auth import AuthError, ChannelTokenValidator, service_url_allowed
from bot.devices import DeviceDirectory
from bot.flow import Deps, Workflow
from bot.graph import GraphClient, MsalTokenSource
from bot.logs import safe
from bot.overload import BUSY_AGENT, CAPPED, TurnLimit, busy_invoke
from bot.rbac import RbacChecker
from bot.settings import Settings
from bot.store import Store
from bot.teams import TeamsNotifier, build_agent, close_clients, register_routes

log = logging.getLogger("bot.http")


@dataclass
class Services:
    settings: Settings
    store: Store
    audit: AuditLog
    tokens: MsalTokenSource
    graph: GraphClient
    devices: DeviceDirectory
    rbac: RbacChecker
    workflow: Workflow
    agent: AgentApplication[TurnState]
    adapter: CloudAdapter
    inbound: ChannelTokenValidator
    turns: TurnLimit
    sweeper: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.sweeper
        await self.workflow.drain()
        await self.graph.aclose()
        await close_clients(self.adapter)
        await self.inbound.aclose()
        await self.store.close()


async def build_services(
    settings: Settings,
    *,
    start_sweeper: bool = True,
    agent: tuple[AgentApplication[TurnState], CloudAdapter] | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> Services:
    store = await Store.open(settings.database_url)
    audit = AuditLog(store, await asyncio.to_thread(load_audit_key, settings.audit_key, settings.database_url))
    await audit.seal()
    tokens = MsalTokenSource(settings, settings.graph_resource)
    graph = GraphClient(settings, tokens, GraphClient.build_http(settings))
    devices = DeviceDirectory(graph)
    rbac = RbacChecker(settings, graph)
    app, adapter = agent or build_agent(settings)[:2]
    deps = Deps(settings, store, audit, graph, devices, rbac, TeamsNotifier(adapter, settings))
    if checkpoint is not None:
        deps.checkpoint = checkpoint
    workflow = Workflow(deps)
    register_routes(app, workflow)
    inbound = ChannelTokenValidator(settings)
    turns = TurnLimit(settings.max_concurrent_turns)
    services = Services(settings, store, audit, tokens, graph, devices, rbac, workflow, app, adapter, inbound, turns)
    if start_sweeper:
        services.sweeper = asyncio.create_task(_sweep_forever(workflow, settings.sweep_interval))
    return services


async def _sweep_forever(workflow: Workflow, interval: float) -> None:
    """Crash recovery at start, then expiry and reconciliation every ``interval`` seconds."""
    while True:
        try:
            counts = await workflow.sweep()
            if any(counts.values()):
                log.info("sweep", extra=counts)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sweep failed")
        await asyncio.sleep(interval)


@dataclass
class Holder:
    """Filled at start-up (the aiohttp app is frozen by then, so it holds a mutable box)."""

    services: Services | None = None

    def get(self) -> Services:
        if self.services is None:
            raise web.HTTPServiceUnavailable(text="starting")
        return self.services


SERVICES = web.AppKey("services", Holder)
SETTINGS = web.AppKey("settings", Settings)


@web.middleware
async def request_log(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        extra: dict[str, Any] = {
            "method": request.method,
            "path": safe(request.path, 100),
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }
        activity = request.get("activity_summary")
        if activity:
            extra.update(activity)
        log.info("request", extra=extra)


#: Deeper JSON than this is refused (Teams activities nest about six levels; card data a few more).
MAX_JSON_DEPTH = 32
_BAD_BODY = {"error": "body must be a JSON activity"}


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Is ``value`` nested deeper than ``limit`` (iterative, so hostile input cannot exhaust the stack)?"""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def activity_tenants(body: dict[str, Any]) -> list[str]:
    """Every tenant field present in an activity: ``channelData.tenant.id`` and ``conversation.tenantId``."""
    found: list[str] = []
    channel_data = body.get("channelData")
    tenant = channel_data.get("tenant") if isinstance(channel_data, dict) else None
    if isinstance(tenant, dict) and tenant.get("id") is not None:
        found.append(str(tenant["id"]))
    conversation = body.get("conversation")
    if isinstance(conversation, dict) and conversation.get("tenantId") is not None:
        found.append(str(conversation["tenantId"]))
    return found


_ACTIVITY_LOG = logging.getLogger("microsoft_agents.activity.activity")


def _valid_activity(body: dict[str, Any]) -> bool:
    """Does the SDK's model accept ``body``? (Its validator logs a traceback per refusal: muted for this call —
    synchronous, so nothing else on the event loop logs through that logger meanwhile.)"""
    muted = _ACTIVITY_LOG.disabled
    _ACTIVITY_LOG.disabled = True
    try:
        Activity.model_validate(body)
    except (ValueError, RecursionError):
        return False
    finally:
        _ACTIVITY_LOG.disabled = muted
    return True


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /api/messages``: body limits, the channel token, activity shape, ``serviceUrl`` and tenant, then a turn."""
    services = request.config_dict[SERVICES].get()
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    # Authenticate before anything else looks at the activity.
    identity = await _authenticate(request, services, body)
    if isinstance(identity, web.Response):
        return identity
    refused = _refuse_activity(request, services.settings, body) or _refuse_tenant(services.settings, body, identity)
    if refused is not None:
        return refused
    request["claims_identity"] = identity  # where the SDK's adapter reads it (as its own JWT middleware does)
    return await _run_turn(request, services, body)


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The activity as a JSON object, or the 400 answer."""
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        return web.json_response(_BAD_BODY, status=400)
    if not isinstance(body, dict):
        return web.json_response(_BAD_BODY, status=400)
    if json_depth_exceeds(body):
        log.warning("activity refused: JSON nested too deeply")
        return web.json_response({"error": "activity nested too deeply"}, status=400)
    return body


async def _authenticate(
    request: web.Request, services: Services, body: dict[str, Any]
) -> ClaimsIdentity | web.Response:
    """The channel token's identity (none in anonymous mode, where a bearer token is refused), or the 401 answer."""
    if services.settings.anonymous:
        if request.headers.get("Authorization"):
            log.warning("inbound token refused", extra={"reason": "bearer token sent to a bot in anonymous mode"})
            return web.json_response({"error": "unauthorized"}, status=401)
        return ClaimsIdentity({}, None)
    try:
        return await services.inbound.validate(request.headers.get("Authorization"), body)
    except AuthError as exc:
        log.warning("inbound token refused", extra={"reason": exc.reason})
        return web.json_response({"error": "unauthorized"}, status=401)


def _refuse_activity(request: web.Request, settings: Settings, body: dict[str, Any]) -> web.Response | None:
    """A malformed activity (400) or one naming a ``serviceUrl`` off the allow-list (403); else notes its summary."""
    if not _valid_activity(body):
        log.warning("malformed activity refused")
        return web.json_response({"error": "malformed activity"}, status=400)
    if not service_url_allowed(body.get("serviceUrl"), settings.allowed_service_url_hosts):
        log.warning(
            "activity refused: serviceUrl not allowed", extra={"service_url": safe(body.get("serviceUrl"), 120)}
        )
        return web.json_response({"error": "serviceUrl not allowed"}, status=403)
    request["activity_summary"] = {
        "type": safe(body.get("type", ""), 40),
        "invoke": safe(body.get("name", ""), 60) or None,
        "conversation_type": safe((body.get("conversation") or {}).get("conversationType", ""), 20) or None,
    }
    return None


def _refuse_tenant(settings: Settings, body: dict[str, Any], identity: ClaimsIdentity) -> web.Response | None:
    """403 unless every tenant the activity and its token name is ours, and at least one is named."""
    tenants = activity_tenants(body)
    token_tenant = identity.claims.get("tid")
    if token_tenant is not None:
        tenants.append(str(token_tenant))
    expected = settings.tenant_id.casefold()
    wrong = [t for t in tenants if t.casefold() != expected]
    if not tenants or wrong:
        log.warning(
            "activity from another tenant refused",
            extra={"tenant": safe(wrong[0] if wrong else "", 64)},
        )
        return web.json_response({"error": "tenant not allowed"}, status=403)
    return None


async def _run_turn(request: web.Request, services: Services, body: dict[str, Any]) -> web.StreamResponse:
    """Hand the activity to the SDK, within ``MAX_CONCURRENT_TURNS`` for messages and invokes."""
    if body.get("type") not in CAPPED:
        return _answer(await start_agent_process(request, services.agent, services.adapter))
    async with services.turns.slot() as admitted:
        if admitted:
            return _answer(await start_agent_process(request, services.agent, services.adapter))
    # Beyond MAX_CONCURRENT_TURNS (see bot.overload): a fast, clear answer instead of an ever longer queue.
    request["activity_summary"]["busy"] = True
    if body.get("type") == "invoke":
        return busy_invoke()
    log.warning("turn refused: busy", extra={"type": "message"})
    return _answer(await services.adapter.process(request, BUSY_AGENT))


def _answer(response: web.Response | None) -> web.Response:
    return response if response is not None else web.Response(status=202)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


READINESS_TOKEN_TIMEOUT = 5.0
#: After a failed readiness check at start-up, check again after 1, 2, 4 … seconds, at most this far apart.
READINESS_RETRY_FIRST = 1.0
READINESS_RETRY_MAX = 30.0


async def readiness(services: Services) -> tuple[bool, dict[str, str]]:
    """The one readiness verdict: ``/readyz`` answers with it and the "bot ready" log line waits for it.

    Ready means the database answers and a Graph token can be obtained (msal caches it, so this is cheap once warm).
    """
    checks: dict[str, str] = {}
    checks["database"] = "ok" if await services.store.ping() else "unreachable"
    try:
        await asyncio.wait_for(services.tokens.token(), timeout=READINESS_TOKEN_TIMEOUT)
        checks["graph_token"] = "ok"
    except Exception as exc:
        checks["graph_token"] = f"failed: {type(exc).__name__}"
    return all(v == "ok" for v in checks.values()), checks


def not_ready_reason(checks: dict[str, str]) -> str:
    return ", ".join(f"{name} {result}" for name, result in checks.items() if result != "ok")


async def readyz(request: web.Request) -> web.Response:
    services = request.config_dict[SERVICES].get()
    ready, checks = await readiness(services)
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503
    )


async def announce_readiness(services: Services) -> None:
    """Log "bot ready" only once :func:`readiness` passes; until then "bot started, not ready: <why>" (once per
    distinct reason), checking again with exponential back-off. Runs as a task from start-up; ends when ready."""
    settings = services.settings
    facts: dict[str, Any] = {
        "port": settings.port,
        "anonymous": settings.anonymous,
        "graph": settings.graph_base_url,
        "database": settings.database_url.split("://")[0],
        "approval_mode": settings.approval_mode,
    }
    delay = READINESS_RETRY_FIRST
    reported: str | None = None
    while True:
        try:
            ready, checks = await readiness(services)
        except Exception as exc:  # a readiness check must never kill the announcer
            ready, checks = False, {"readiness": f"failed: {type(exc).__name__}"}
        if ready:
            log.info("bot ready", extra=facts)
            return
        why = not_ready_reason(checks)
        if why != reported:
            log.warning(f"bot started, not ready: {why}", extra={**facts, "checks": checks})
            reported = why
        await asyncio.sleep(delay)
        delay = min(delay * 2, READINESS_RETRY_MAX)


def build_app(
    settings: Settings, *, start_sweeper: bool = True, checkpoint: Callable[[str], None] | None = None
) -> web.Application:
    """The aiohttp application: ``POST /api/messages`` (channel token checked by :mod:`bot.auth`), health.

    ``checkpoint`` is called at named points of a submission (``before_graph``, ``after_graph``): the crash tests'
    launcher kills the process there.
    """
    app = web.Application(middlewares=[request_log], client_max_size=256 * 1024)
    app[SETTINGS] = settings
    holder = Holder()
    app[SERVICES] = holder
    agent, adapter, _connections = build_agent(settings)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = await build_services(
            settings, start_sweeper=start_sweeper, agent=(agent, adapter), checkpoint=checkpoint
        )
        holder.services = services
        # Start-up objects (SDK, pydantic models, SQLAlchemy metadata) live for the whole process: keep them out of
        # the garbage collector's full passes, which otherwise pause the event loop under load.
        gc.collect()
        gc.freeze()
        # "bot ready" is logged by the same checks /readyz runs, once they pass (see announce_readiness).
        announcer = asyncio.create_task(announce_readiness(services))
        yield
        log.info("shutting down")
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer
        await services.close()

    app.router.add_post("/api/messages", messages)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(lifecycle)
    return app


def summary(services: Services) -> str:
    return json.dumps({"graph_calls": services.graph.stats.calls, "token_requests": services.tokens.stats.requests})
