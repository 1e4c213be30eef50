"""The :class:`Simulator`: one aiohttp HTTPS server for Entra sign-in, Graph and the control API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import tempfile
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

import trustme
from aiohttp import web

from . import botframework
from .botframework import BotFrameworkChannel
from .control import Call, Control, TokenRequest
from .entra import EntraApi
from .graph import INVALID_JSON, DropConnection, GraphApi, GraphRequest, GraphResponse, now_iso
from .seed import build_state, load_seed, remote_action_audit
from .state import JsonDict, TenantState

GRAPH_CONTENT_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
)
_T = TypeVar("_T")
_GRAPH_PATH = re.compile(r"^/(?P<version>v1\.0|beta)(?P<rest>/.*)?$")
_DISCOVERY = re.compile(r"^/(?P<tenant>[^/]+)(?:/v2\.0)?/\.well-known/openid-configuration$")
_TOKEN = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
_DEPROVISION = re.compile(r"/deviceManagement/managedDevices/(?P<id>[^/]+)/deprovision$")
_IDS = re.compile(
    r"(?<=/)([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12,14}"
    r"|[^/]+@[^/]+)(?=/|$)"
)


@dataclass
class _PendingAction:
    due: float  # on the simulator clock (Control.now)
    device_id: str
    action: str
    final_status: str | None
    audit_id: str
    outcome: str  # done | failed
    error: str


class Simulator:
    """Simulated Entra sign-in + Microsoft Graph (Intune, directory) over HTTPS on loopback.

    ``Simulator(seed=load_seed(None), page_size=100, revoke_permissions=())``; then
    ``await sim.start()`` and point MSAL at :attr:`authority_host` and httpx at :attr:`base_url`,
    trusting :attr:`ca_path`.
    """

    def __init__(
        self,
        seed: Mapping[str, Any] | None = None,
        *,
        page_size: int = 100,
        revoke_permissions: Iterable[str] = (),
    ) -> None:
        self.seed: dict[str, Any] = dict(seed) if seed is not None else load_seed(None)
        self.page_size = page_size
        self.control = Control()
        self.state: TenantState = build_state(self.seed)
        self.state.revoke(revoke_permissions)
        self.entra = EntraApi(self)
        self.graph = GraphApi(self)
        self.botframework = BotFrameworkChannel()
        self._pending: list[_PendingAction] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._runner: web.AppRunner | None = None
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._ca_path: str | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        ca = trustme.CA(organization_name="Intune Simulator Test CA")
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        fd, path = tempfile.mkstemp(prefix="intune-sim-ca-", suffix=".pem")
        os.close(fd)
        ca.cert_pem.write_to_path(path)
        self._ca_path = path
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ctx)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 - not binding

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Idle keep-alive TLS connections (e.g. MSAL's requests.Session in another thread) would
        # otherwise wait for a close_notify that never comes and leak their sockets.
        for transport in list(self._transports):
            transport.abort()  # type: ignore[attr-defined]
        self._transports.clear()
        if self._ca_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._ca_path)
            self._ca_path = None

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 15.0) -> None:
        """Serve from a private event loop in a daemon thread.

        Use this when the code under test makes *blocking* HTTP calls (MSAL is synchronous) on
        the event loop the simulator would otherwise share, which would deadlock.
        """
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start(host, port))
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=run, name="intune-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("simulator thread did not start")
        if failure:
            raise failure[0]

    def stop_thread(self, timeout: float = 15.0) -> None:
        if self._thread is None or self._thread_loop is None:
            return
        self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
        self._thread.join(timeout)
        self._thread = None
        self._thread_loop = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- public attributes ---------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def authority_host(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.authority_host}"

    @property
    def authority(self) -> str:
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def botframework_metadata_url(self) -> str:
        """The Bot Framework OpenID metadata (``BOTFRAMEWORK_OPENID_METADATA``); its ``jwks_uri`` gives the keys."""
        return f"{self.base_url}{botframework.METADATA_PATH}"

    @property
    def ca_path(self) -> str:
        if self._ca_path is None:
            raise RuntimeError("simulator not started")
        return self._ca_path

    @property
    def tenant_id(self) -> str:
        return self.state.tenant_id

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def client_secret(self) -> str:
        return self.state.client_secret

    @property
    def calls(self) -> list[Call]:
        return self.control.calls

    @property
    def token_requests(self) -> list[TokenRequest]:
        return self.control.token_requests

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only the simulator CA (for httpx ``verify=``)."""
        return ssl.create_default_context(cafile=self.ca_path)

    def env(self) -> dict[str, str]:
        """Environment for the bot (what ``--env-file`` writes)."""
        return {
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_AUTHORITY_HOST": self.authority_host,
            "GRAPH_BASE_URL": self.base_url,
            "BOTFRAMEWORK_OPENID_METADATA": self.botframework_metadata_url,
            "SSL_CERT_FILE": self.ca_path,
            "REQUESTS_CA_BUNDLE": self.ca_path,
        }

    def deprovision_posts(self, device_id: str | None = None) -> list[Call]:
        """Deprovision POSTs the service accepted (the action ran, even if a fault hid the 204)."""
        out = []
        for call in self.calls:
            m = _DEPROVISION.search(call.path)
            if call.method != "POST" or m is None:
                continue
            if call.handled_status is None or not 200 <= call.handled_status < 300:
                continue
            if device_id is None or m["id"].casefold() == device_id.casefold():
                out.append(call)
        return out

    def round_trips(self) -> list[Call]:
        """Top-level Graph calls only (a $batch counts once)."""
        return [c for c in self.calls if c.batch_id is None]

    def issue_token(self, audience: str = "graph", ttl: float | None = None) -> str:
        return self.entra.issue(audience, ttl)

    def channel_token(self, audience: str, service_url: str | None, **kw: Any) -> str:
        """A Bot Framework channel-to-bot token signed with a published key (see :meth:`BotFrameworkChannel.mint`)."""
        return self.botframework.mint(audience, service_url, **kw)

    def expire_tokens(self) -> None:
        self.entra.expire_all()

    def reset_state(self) -> None:
        """Rebuild the tenant from the seed (a new :attr:`state` object)."""
        self.state = build_state(self.seed)
        self._pending.clear()

    def stats(self) -> dict[str, Any]:
        by_path: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        for call in self.calls:
            by_path[f"{call.method} {_IDS.sub('{id}', call.path)}"] += 1
            by_status[str(call.status)] += 1
        return {
            "calls": len(self.calls),
            "round_trips": len(self.round_trips()),
            "by_path": dict(by_path),
            "by_status": dict(by_status),
            "token_requests": len(self.token_requests),
            "deprovision_accepted": len(self.deprovision_posts()),
            "remote_action_audits": dict(Counter(a["actionState"] for a in self.state.remote_action_audits.values())),
            "faults_pending": len(self.control.faults),
        }

    # -- device actions ------------------------------------------------------------

    def begin_action(
        self,
        device: JsonDict,
        action: str,
        final_status: str | None,
        details: list[JsonDict] | None = None,
    ) -> JsonDict:
        """Intune accepted a remote action: ``pending`` in ``deviceActionResults`` and a new audit row.

        The outcome (``done`` / ``failed`` / ``never``) and delay come from the control knobs for this
        device, fixed now. Returns the ``remoteActionAudit`` row.
        """
        control = self.control
        now = control.now()
        outcome, delay, error = control.outcome_for(device["id"])
        stamp = now_iso(now)
        entry = {"actionName": action, "actionState": "pending", "startDateTime": stamp, "lastUpdatedDateTime": stamp}
        results = [r for r in device["deviceActionResults"] if r.get("actionName") != action]
        device["deviceActionResults"] = [*results, entry]
        initiated_by = control.audit_initiated_by
        if initiated_by is None:
            initiated_by = self.state.client_id
        audit = remote_action_audit(
            {
                "id": str(uuid.uuid4()),
                "action": action,
                "actionState": "pending",
                "requestDateTime": stamp,
                "initiatedByUserPrincipalName": initiated_by,
                "deviceActionDetails": list(details or []),
            },
            device,
        )
        self.state.remote_action_audits[audit["id"]] = audit
        if outcome == "never":
            return audit
        pending = _PendingAction(now + delay, device["id"], action, final_status, audit["id"], outcome, error)
        self._pending.append(pending)
        if delay <= 0:
            self.apply_due_actions()
            return audit
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return audit
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(loop.call_later(delay + 0.001, self.apply_due_actions))
        return audit

    def apply_due_actions(self) -> None:
        """Finish every scheduled action whose time (on the simulator clock) has come."""
        now = self.control.now()
        due = [p for p in self._pending if p.due <= now]
        self._pending = [p for p in self._pending if p.due > now]
        for p in due:
            self._finish(p.device_id, p.action, p.audit_id, p.outcome, p.error, p.final_status, p.due)

    def finish_action(
        self, device_id: str, action: str = "deprovision", outcome: str = "done", error: str | None = None
    ) -> bool:
        """End the pending ``action`` on ``device_id`` now (e.g. one started with outcome ``never``).

        ``outcome`` is ``done`` or ``failed``. Returns False if nothing was pending.
        """
        if outcome not in ("done", "failed"):
            raise ValueError("finish_action outcome must be 'done' or 'failed'")
        return self._on_loop(lambda: self._finish_now(device_id, action, outcome, error))

    def _finish_now(self, device_id: str, action: str, outcome: str, error: str | None) -> bool:
        self.apply_due_actions()
        key = device_id.casefold()
        scheduled = [p for p in self._pending if p.device_id.casefold() == key and p.action == action]
        self._pending = [p for p in self._pending if p not in scheduled]
        device = next((d for i, d in self.state.devices.items() if i.casefold() == key), None)
        if device is None:
            return False
        audits = [
            a["id"]
            for a in self.state.remote_action_audits.values()
            if a["managedDeviceId"].casefold() == key and a["action"] == action and a["actionState"] == "pending"
        ]
        pending = any(
            r.get("actionName") == action and r.get("actionState") == "pending" for r in device["deviceActionResults"]
        )
        if not pending and not audits:
            return False
        final = {"deprovision": self.control.deprovisioned_status, "disable": "Disabled", "reenable": "Active"}
        now = self.control.now()
        for audit_id in audits or [""]:
            self._finish(
                device["id"], action, audit_id, outcome, error or self.control.action_error, final.get(action), now
            )
        return True

    def _finish(
        self,
        device_id: str,
        action: str,
        audit_id: str,
        outcome: str,
        error: str,
        final_status: str | None,
        when: float,
    ) -> None:
        stamp = now_iso(when)
        audit = self.state.remote_action_audits.get(audit_id)
        if audit is not None and audit["actionState"] == "pending":
            audit["actionState"] = outcome
            if outcome == "failed":
                audit["deviceActionDetails"].append({"key": "errorMessage", "value": error})
        device = self.state.devices.get(device_id)
        if device is None:
            return
        for result in device["deviceActionResults"]:
            if result.get("actionName") == action and result.get("actionState") == "pending":
                result["actionState"] = outcome
                result["lastUpdatedDateTime"] = stamp
        if outcome != "done" or final_status is None:
            return
        for prop in device["chromeOSDeviceInfo"]:
            if prop.get("name") == "deviceStatus":
                prop["value"] = final_status
                break
        else:
            device["chromeOSDeviceInfo"].append(
                {"name": "deviceStatus", "value": final_status, "valueType": "string", "updatable": False}
            )

    def advance_clock(self, seconds: float) -> None:
        """Move the simulator clock forward (action completion, audit timestamps, write window)."""
        if seconds < 0:
            raise ValueError("the simulator clock only moves forward")

        def advance() -> None:
            self.control.clock_offset += seconds
            self.apply_due_actions()

        self._on_loop(advance)

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the simulator's own loop when it serves from a thread (else here) and return its result."""
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None or threading.current_thread() is thread or not loop.is_running():
            return fn()
        done = threading.Event()
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, fn()))
            except BaseException as exc:  # re-raised in the calling thread
                outcome.append((False, exc))
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        if not done.wait(15.0):
            raise TimeoutError("simulator loop did not respond")
        ok, value = outcome[0]
        if not ok:
            raise value
        return cast(_T, value)

    # -- HTTP ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            self._transports.add(request.transport)
        path = request.path
        if path.startswith("/_sim/"):
            return await self._handle_control(request)
        m = _GRAPH_PATH.match(path)
        if m:
            return await self._handle_graph(request, m["version"], m["rest"] or "/")
        entra_headers = {
            "x-ms-request-id": str(uuid.uuid4()),
            "client-request-id": request.headers.get("client-request-id", ""),
            "Cache-Control": "no-store, no-cache",
            "Pragma": "no-cache",
        }
        if path == botframework.METADATA_PATH and request.method == "GET":
            return _json(200, self.botframework.openid_configuration(request.host), entra_headers)
        if path == botframework.KEYS_PATH and request.method == "GET":
            status, body = self.botframework.jwks()
            return _json(status, body, entra_headers)
        m = _DISCOVERY.match(path)
        if m and request.method == "GET":
            status, body = self.entra.openid_configuration(request.host, m["tenant"])
            return _json(status, body, entra_headers)
        m = _TOKEN.match(path)
        if m and request.method == "POST":
            form = await request.post()
            fields = {k: str(v) for k, v in form.items()}
            status, body = self.entra.token(m["tenant"], fields)
            return _json(status, body, entra_headers)
        return _json(404, {"error": "not_found", "error_description": f"No route for {path}"})

    async def _handle_graph(self, request: web.Request, version: str, rest: str) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                body = INVALID_JSON
        req = GraphRequest(
            method=request.method,
            version=version,
            path=rest,
            query={k: v for k, v in request.query.items()},
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            base_url=f"https://{request.host}",
        )
        if self.control.latency > 0:
            await asyncio.sleep(self.control.latency)
        try:
            resp = await self.graph.dispatch(req)
        except DropConnection:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=499)
        return _graph_response(resp)

    async def _handle_control(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_sim/control" and request.method == "POST":
            try:
                data = await request.json()
                if not isinstance(data, dict):
                    raise ValueError("control body must be a JSON object")
                self.control.apply_json(data)
                if data.get("reset_state"):
                    self.reset_state()
                if "page_size" in data:
                    self.page_size = int(data["page_size"])
                self.state.revoke(data.get("revoke_permissions") or [])
                self.state.grant(data.get("grant_permissions") or [])
                if "advance_clock" in data:
                    self.advance_clock(float(data["advance_clock"]))
                for spec in data.get("finish_actions") or []:
                    self.finish_action(
                        str(spec["device_id"]),
                        str(spec.get("action", "deprovision")),
                        str(spec.get("outcome", "done")),
                        spec.get("error"),
                    )
            except (ValueError, TypeError, KeyError) as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, self._control_snapshot())
        if path == "/_sim/control" and request.method == "GET":
            return _json(200, self._control_snapshot())
        if path == "/_sim/calls" and request.method == "GET":
            since = int(request.query.get("since", "0") or 0)
            return _json(200, [c.to_json() for c in self.calls[since:]])
        if path == "/_sim/stats" and request.method == "GET":
            return _json(200, self.stats())
        if path == "/_sim/devices" and request.method == "GET":
            self.apply_due_actions()
            return _json(200, list(self.state.devices.values()))
        if path == "/_sim/audits" and request.method == "GET":
            self.apply_due_actions()
            return _json(200, list(self.state.remote_action_audits.values()))
        return _json(404, {"error": f"unknown control endpoint {request.method} {path}"})

    def _control_snapshot(self) -> dict[str, Any]:
        snap = self.control.snapshot()
        snap["page_size"] = self.page_size
        snap["app_permissions"] = sorted(self.state.app_permissions)
        return snap


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def _graph_response(resp: GraphResponse) -> web.Response:
    headers = {
        "Cache-Control": "no-cache",
        "Strict-Transport-Security": "max-age=31536000",
        "x-ms-ags-diagnostic": json.dumps({"ServerInfo": {"DataCenter": "Loopback", "Slice": "E", "Ring": "SIM"}}),
        **resp.headers,
    }
    if resp.body is None:
        return web.Response(status=resp.status, headers=headers)
    headers["Content-Type"] = GRAPH_CONTENT_TYPE
    return web.Response(status=resp.status, body=json.dumps(resp.body).encode(), headers=headers)
