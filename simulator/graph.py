"""Microsoft Graph (Intune + directory) routes, auth, faults and `$batch`.

Everything here works on :class:`GraphRequest` / :class:`GraphResponse`, so `$batch`
sub-requests run through exactly the same pipeline as top-level requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .control import Call, Fault
from .odata import (
    GUID_RE,
    FilterError,
    QueryError,
    decode_skiptoken,
    encode_skiptoken,
    matches,
    parse_filter,
    parse_select,
    parse_top,
    project,
)
from .seed import is_chromeos
from .state import JsonDict

if TYPE_CHECKING:
    from .server import Simulator

INVALID_JSON = object()
MAX_BATCH = 20
MAX_MEMBER_CHECK = 20

DEVICE_FILTERABLE = (
    "deviceName",
    "serialNumber",
    "azureADDeviceId",
    "userId",
    "userPrincipalName",
    "operatingSystem",
    "deviceType",
    "managementAgent",
)
V1_DEVICE_EXCLUDED = frozenset(
    {
        "chromeOSDeviceInfo",
        "roleScopeTagIds",
        "deviceType",
        "ownerType",
        "managementState",
        "chassisType",
        "azureActiveDirectoryDeviceId",
        "aadRegistered",
        "lostModeState",
        "retireAfterDateTime",
        "autopilotEnrolled",
        "processorArchitecture",
        "joinType",
        "skuFamily",
        "skuNumber",
        "managementFeatures",
    }
)
ENTRA_DEVICE_FILTERABLE = ("id", "deviceId", "displayName", "operatingSystem")
DIR_ROLE_FILTERABLE = ("principalId", "roleDefinitionId", "directoryScopeId")
USER_FIELDS = (
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
GROUP_FIELDS = (
    "id",
    "displayName",
    "description",
    "groupTypes",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "isAssignableToRole",
)


def _perm(*alternatives: tuple[str, ...]) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(a) for a in alternatives)


P_DEVICE_READ = _perm(
    ("DeviceManagementManagedDevices.Read.All",),
    ("DeviceManagementManagedDevices.ReadWrite.All",),
)
P_DEVICE_ACTION = _perm(
    ("DeviceManagementManagedDevices.PrivilegedOperations.All",),
    ("DeviceManagementManagedDevices.ReadWrite.All",),
)
P_RBAC = _perm(("DeviceManagementRBAC.Read.All",), ("DeviceManagementRBAC.ReadWrite.All",))
P_USER = _perm(("User.Read.All",), ("User.ReadBasic.All",), ("Directory.Read.All",))
P_MEMBERSHIP = _perm(("User.Read.All", "GroupMember.Read.All"), ("Directory.Read.All",))
P_GROUP = _perm(("GroupMember.Read.All",), ("Group.Read.All",), ("Directory.Read.All",))
P_DEVICE = _perm(("Device.Read.All",), ("Directory.Read.All",))
P_DIR_ROLES = _perm(("RoleManagement.Read.Directory",), ("RoleManagement.Read.All",), ("Directory.Read.All",))


def now_iso(ts: float | None = None) -> str:
    """Graph/.NET style UTC timestamp with 7 fractional digits."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


@dataclass
class GraphRequest:
    method: str
    version: str  # "v1.0" | "beta"
    path: str  # after the version, starts with "/"
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    base_url: str
    batch_id: str | None = None

    @property
    def full_path(self) -> str:
        return f"/{self.version}{self.path}"


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class GraphError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        intune: bool = False,
        inner: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.intune = intune
        self.inner = dict(inner or {})


class DropConnection(Exception):
    """Close the client connection without any response."""


Handler = Callable[["GraphApi", GraphRequest, "re.Match[str]"], GraphResponse]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    permissions: tuple[frozenset[str], ...] = ()
    versions: frozenset[str] = frozenset({"v1.0", "beta"})
    intune: bool = False
    write: bool = False
    query_options: frozenset[str] = frozenset()


ROUTES: list[Route] = []


def route(
    method: str,
    pattern: str,
    permissions: tuple[frozenset[str], ...] = (),
    *,
    beta_only: bool = False,
    intune: bool = False,
    write: bool = False,
    options: str = "",
) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append(
            Route(
                method=method,
                pattern=re.compile(pattern),
                handler=fn,
                permissions=permissions,
                versions=frozenset({"beta"} if beta_only else {"v1.0", "beta"}),
                intune=intune,
                write=write,
                query_options=frozenset(options.split()),
            )
        )
        return fn

    return deco


DEFAULT_ERRORS = {
    400: ("BadRequest", "Bad request."),
    403: ("Forbidden", "Forbidden."),
    404: ("ResourceNotFound", "Resource not found."),
    409: ("Conflict", "Conflict."),
    429: ("TooManyRequests", "Please retry again later."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The request timed out."),
}


def _fmt_seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


class GraphApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    # -- pipeline ------------------------------------------------------------------

    async def dispatch(self, req: GraphRequest) -> GraphResponse:
        """Auth (top level only) → queued fault → route → record the call."""
        request_id = str(uuid.uuid4())
        client_request_id = req.headers.get("client-request-id") or str(uuid.uuid4())
        call = Call(
            method=req.method,
            path=req.full_path,
            query=dict(req.query),
            body=None if req.body is INVALID_JSON else req.body,
            status=0,
            headers=_redact(req.headers),
            batch_id=req.batch_id,
            request_id=request_id,
        )
        try:
            resp = await self._dispatch(req, call)
        except GraphError as exc:
            resp = self._error(exc, req, request_id, client_request_id)
        except DropConnection:
            self.sim.control.calls.append(call)
            raise
        resp.headers["request-id"] = request_id
        resp.headers["client-request-id"] = client_request_id
        call.status = resp.status
        self.sim.control.calls.append(call)
        return resp

    async def _dispatch(self, req: GraphRequest, call: Call) -> GraphResponse:
        self.sim.apply_due_actions()
        if req.batch_id is None:
            self._authenticate(req)
        control = self.sim.control
        fault = control.take_fault(req.method, req.full_path)
        if fault is not None:
            call.fault = True
        if fault is not None and fault.status is None and not fault.drop:
            await asyncio.sleep(fault.delay)  # slow but otherwise normal answer
            fault = None
        if fault is not None and not fault.after_apply:
            return await self._fault_reply(fault)
        try:
            resp = await self._route(req)
            call.handled_status = resp.status
        except GraphError as exc:
            call.handled_status = exc.status
            if fault is None:
                raise
        if fault is not None:
            return await self._fault_reply(fault)
        return resp

    async def _fault_reply(self, fault: Fault) -> GraphResponse:
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            raise DropConnection()
        status = int(fault.status or 500)
        code, message = DEFAULT_ERRORS.get(status, ("UnknownError", "Unknown error."))
        headers = {}
        inner: dict[str, Any] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = _fmt_seconds(fault.retry_after)
        if status == 429:
            inner = {"code": "429", "message": "Please retry after", "status": "429"}
        raise GraphError(
            status,
            fault.code or code,
            fault.message or message,
            headers=headers,
            inner=inner,
        )

    def _authenticate(self, req: GraphRequest) -> None:
        header = req.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        www = {
            "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline'
            '.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        }
        if scheme.casefold() != "bearer" or not token.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", headers=www)
        issued = self.sim.entra.tokens.get(token.strip())
        if issued is None:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "CompactToken parsing failed with error code: 80049217",
                headers=www,
            )
        if issued.audience != "graph":
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                headers=www,
            )
        if issued.expires_at <= time.time():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
                headers=www,
            )

    async def _route(self, req: GraphRequest) -> GraphResponse:
        if req.path == "/$batch":
            if req.method != "POST":
                raise GraphError(405, "BadRequest", "Only POST is supported on $batch.")
            if req.batch_id is not None:
                raise GraphError(400, "BadRequest", "Nested $batch requests are not supported.")
            return await self._batch(req)
        method_mismatch = False
        for r in ROUTES:
            m = r.pattern.match(req.path)
            if m is None or req.version not in r.versions:
                continue
            if r.method != req.method:
                method_mismatch = True
                continue
            self._check_permissions(r, req)
            self._check_query_options(r, req)
            if r.write:
                wait = self.sim.control.write_allowed()
                if wait is not None:  # Intune's per-app write budget (§10): Graph's plain 429 body
                    raise GraphError(
                        429,
                        "TooManyRequests",
                        "Please retry again later.",
                        headers={"Retry-After": _fmt_seconds(wait)},
                        inner={"code": "429", "message": "Please retry after", "status": "429"},
                    )
            return r.handler(self, req, m)
        if method_mismatch:
            raise GraphError(
                405,
                "BadRequest",
                f"No HTTP resource was found that matches the request URI with method '{req.method}'.",
            )
        segment = req.path.rstrip("/").rsplit("/", 1)[-1] or req.version
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def _check_permissions(self, r: Route, req: GraphRequest) -> None:
        if not r.permissions:
            return
        granted = self.sim.state.app_permissions
        if any(alt <= granted for alt in r.permissions):
            return
        if r.intune:
            names = ", ".join("+".join(sorted(a)) for a in r.permissions)
            raise GraphError(
                403,
                "Forbidden",
                "Application is not authorized to perform this operation. Application must have "
                f"one of the following scopes: {names}",
                intune=True,
            )
        raise GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")

    def _check_query_options(self, r: Route, req: GraphRequest) -> None:
        for key in req.query:
            if key.startswith("$") and key not in r.query_options and key != "$skiptoken":
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Query option '{key[1:].capitalize()}' is not allowed. To allow it, set the "
                    "'AllowedQueryOptions' property on EnableQueryAttribute or "
                    "QueryValidationSettings.",
                )

    def _error(self, exc: GraphError, req: GraphRequest, request_id: str, client_request_id: str) -> GraphResponse:
        message = exc.message
        if exc.intune and self.sim.control.intune_error_envelope:
            message = json.dumps(
                {
                    "_version": 3,
                    "Message": f"{exc.message} - Operation ID (for customer support): "
                    f"{uuid.uuid4()} - Activity ID: {client_request_id} - Url: "
                    "https://fef.msub02.manage.microsoft.com/DeviceFE/StatelessDeviceFEService"
                    f"{req.path}?api-version=2025-02-10 - CustomApiErrorPhrase: ",
                    "CustomApiErrorPhrase": "",
                    "RetryAfter": exc.headers.get("Retry-After"),
                    "ErrorSourceService": "",
                    "HttpHeaders": "{}",
                },
                separators=(",", ":"),
            )
        inner: dict[str, Any] = {
            **exc.inner,
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id,
            "client-request-id": client_request_id,
        }
        body = {"error": {"code": exc.code, "message": message, "innerError": inner}}
        return GraphResponse(exc.status, body, dict(exc.headers))

    # -- $batch --------------------------------------------------------------------

    async def _batch(self, req: GraphRequest) -> GraphResponse:
        body = req.body
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > MAX_BATCH:
            raise GraphError(
                400,
                "BadRequest",
                f"Number of batch requests ({len(requests)}) exceeds the maximum of {MAX_BATCH}.",
            )
        seen: dict[str, int] = {}
        for item in requests:
            if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) and item.get(k) for k in ("id", "method", "url")
            ):
                raise GraphError(400, "BadRequest", "Every batch request needs string id, method and url.")
            if item["id"] in seen:
                raise GraphError(400, "BadRequest", f"Batch request id '{item['id']}' is not unique.")
            for dep in item.get("dependsOn") or []:
                if dep not in seen:
                    raise GraphError(
                        400,
                        "BadRequest",
                        f"Request '{item['id']}' depends on unknown or later request '{dep}'.",
                    )
            seen[item["id"]] = 0
        batch_id = str(uuid.uuid4())
        responses: list[JsonDict] = []
        for item in requests:
            failed = [d for d in item.get("dependsOn") or [] if seen[d] >= 400]
            if failed:
                sub = GraphResponse(
                    424,
                    {
                        "error": {
                            "code": "FailedDependency",
                            "message": f"Dependent request(s) {', '.join(failed)} failed.",
                        }
                    },
                )
            else:
                sub = await self._sub_request(req, item, batch_id)
            seen[item["id"]] = sub.status
            entry: JsonDict = {"id": item["id"], "status": sub.status}
            headers = {k: v for k, v in sub.headers.items() if k in ("Retry-After", "Location")}
            if sub.body is not None:
                headers["Content-Type"] = "application/json"
                entry["headers"] = headers
                entry["body"] = sub.body
            else:
                entry["headers"] = headers
            responses.append(entry)
        # Graph documents that responses may come back in any order; do not keep request order.
        responses.reverse()
        return GraphResponse(200, {"responses": responses})

    async def _sub_request(self, parent: GraphRequest, item: JsonDict, batch_id: str) -> GraphResponse:
        url = str(item["url"])
        if "://" in url:
            return self._error(
                GraphError(400, "BadRequest", "Batch request urls must be relative."),
                parent,
                str(uuid.uuid4()),
                str(uuid.uuid4()),
            )
        parts = urlsplit(url if url.startswith("/") else "/" + url)
        headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        if "body" in item and item["body"] is not None and "content-type" not in headers:
            return self._error(
                GraphError(
                    400,
                    "BadRequest",
                    "Content-Type header is required for a batch request with a body.",
                ),
                parent,
                str(uuid.uuid4()),
                str(uuid.uuid4()),
            )
        for key in ("authorization", "client-request-id"):
            if key in parent.headers and key not in headers:
                headers[key] = parent.headers[key]
        sub = GraphRequest(
            method=str(item["method"]).upper(),
            version=parent.version,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=headers,
            body=item.get("body"),
            base_url=parent.base_url,
            batch_id=batch_id,
        )
        return await self.dispatch(sub)

    # -- helpers -------------------------------------------------------------------

    def context(self, req: GraphRequest, fragment: str, select: Sequence[str] | None = None) -> str:
        sel = f"({','.join(select)})" if select else ""
        suffix = ""
        if fragment.endswith("/$entity"):
            fragment, suffix = fragment[: -len("/$entity")], "/$entity"
        return f"{req.base_url}/{req.version}/$metadata#{fragment}{sel}{suffix}"

    def select(self, req: GraphRequest, allowed: Sequence[str], type_name: str) -> list[str] | None:
        try:
            return parse_select(req.query.get("$select"), allowed, type_name)
        except QueryError as exc:
            raise GraphError(400, "BadRequest", str(exc)) from exc

    def page(
        self,
        req: GraphRequest,
        rows: list[JsonDict],
        fragment: str,
        select: Sequence[str] | None,
        *,
        count: bool = False,
        view: Callable[[JsonDict], JsonDict] | None = None,
    ) -> GraphResponse:
        """One page of ``rows`` (``view`` is applied to the returned rows only)."""
        page_size = max(1, int(self.sim.page_size))
        try:
            top = parse_top(req.query.get("$top"), page_size)
            key_src = "|".join(f"{k}={v}" for k, v in sorted(req.query.items()) if k != "$skiptoken")
            key = hashlib.sha256(f"{req.full_path}|{key_src}".encode()).hexdigest()[:12]
            token = req.query.get("$skiptoken")
            offset = decode_skiptoken(token, key) if token is not None else 0
        except QueryError as exc:
            raise GraphError(400, "BadRequest", str(exc)) from exc
        size = top or page_size
        body: JsonDict = {"@odata.context": self.context(req, fragment, select)}
        if count:
            body["@odata.count"] = len(rows)
        end = offset + size
        if end < len(rows):
            params = {k: v for k, v in req.query.items() if k != "$skiptoken"}
            params["$skiptoken"] = encode_skiptoken(end, key)
            query = urlencode(params, quote_via=quote, safe="$',()")
            body["@odata.nextLink"] = f"{req.base_url}{req.full_path}?{query}"
        body["value"] = [project(view(r) if view else r, select) for r in rows[offset:end]]
        return GraphResponse(200, body)

    def entity(self, req: GraphRequest, item: JsonDict, fragment: str, select: Sequence[str] | None) -> GraphResponse:
        body = {"@odata.context": self.context(req, f"{fragment}/$entity", select)}
        body.update(project(item, select))
        return GraphResponse(200, body)

    def json_body(self, req: GraphRequest) -> JsonDict:
        if req.body is None or req.body == "":
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        if req.body is INVALID_JSON or not isinstance(req.body, dict):
            raise GraphError(400, "BadRequest", "Invalid JSON. A JSON object was expected.")
        return req.body

    def filter_clauses(
        self, req: GraphRequest, allowed: Sequence[str], resource: str, *, directory: bool, startswith: bool = False
    ) -> list[tuple[str, str]] | None:
        text = req.query.get("$filter")
        if text is None:
            return None
        try:
            return parse_filter(text, allowed, startswith=startswith)
        except FilterError as exc:
            if directory:
                prop = exc.prop or text.split(" ", 1)[0]
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"Unsupported or invalid query filter clause specified for property '{prop}' "
                    f"of resource '{resource}'.",
                ) from exc
            raise GraphError(400, "BadRequest", f"Invalid filter clause: {exc.detail}") from exc

    # -- Intune managed devices ----------------------------------------------------

    def device_view(self, req: GraphRequest, device: JsonDict, *, in_list: bool) -> JsonDict:
        view: JsonDict = json.loads(json.dumps(device))
        status_name = self.sim.control.chrome_status_property
        for prop in view.get("chromeOSDeviceInfo") or []:
            if prop.get("name") == "deviceStatus":
                prop["name"] = status_name
        if in_list:
            view.update(chromeOSDeviceInfo=[], notes=None, udid=None, ethernetMacAddress=None)
            view["physicalMemoryInBytes"] = 0
        if req.version == "v1.0":
            for key in V1_DEVICE_EXCLUDED:
                view.pop(key, None)
        return view

    def device_fields(self, req: GraphRequest) -> list[str]:
        sample = next(iter(self.sim.state.devices.values()), {"id": ""})
        fields = [k for k in sample if not k.startswith("@")]
        if req.version == "v1.0":
            fields = [f for f in fields if f not in V1_DEVICE_EXCLUDED]
        return fields

    def get_device(self, raw_id: str) -> JsonDict:
        if not GUID_RE.match(raw_id):
            raise GraphError(
                400,
                "BadRequest",
                f"Invalid managed device id '{raw_id}': the key must be a GUID.",
                intune=True,
            )
        for device_id, device in self.sim.state.devices.items():
            if device_id.casefold() == raw_id.casefold():
                return device
        raise GraphError(
            404,
            "ResourceNotFound",
            f"Resource not found: managedDevice with id '{raw_id}' does not exist.",
            intune=True,
        )


# ---------------------------------------------------------------------------------
# Route handlers
# ---------------------------------------------------------------------------------

DEV = r"^/deviceManagement/managedDevices"


@route("GET", DEV + "$", P_DEVICE_READ, intune=True, options="$filter $select $top $count")
def list_managed_devices(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    devices = list(api.sim.state.devices.values())
    filterable = [p for p in DEVICE_FILTERABLE if p in api.device_fields(req)]
    if not api.sim.control.ignore_filters:
        clauses = api.filter_clauses(req, filterable, "managedDevice", directory=False, startswith=True)
        if clauses is not None:
            devices = [d for d in devices if matches(d, clauses)]
    select = api.select(req, api.device_fields(req), "microsoft.graph.managedDevice")
    count = req.query.get("$count", "").lower() == "true"
    return api.page(
        req,
        devices,
        "deviceManagement/managedDevices",
        select,
        count=count,
        view=lambda d: api.device_view(req, d, in_list=True),
    )


@route("GET", DEV + r"/(?P<id>[^/]+)$", P_DEVICE_READ, intune=True, options="$select")
def get_managed_device(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    device = api.get_device(m["id"])
    select = api.select(req, api.device_fields(req), "microsoft.graph.managedDevice")
    view = api.device_view(req, device, in_list=False)
    return api.entity(req, view, "deviceManagement/managedDevices", select)


def _start_action(
    api: GraphApi, device: JsonDict, action: str, final_status: str | None, details: list[JsonDict] | None = None
) -> GraphResponse:
    api.sim.begin_action(device, action, final_status, details)
    return GraphResponse(204)


def _chrome_status(device: JsonDict) -> str | None:
    """The stored Google device status (always kept under ``deviceStatus``; views may rename it)."""
    for prop in device.get("chromeOSDeviceInfo") or []:
        if prop.get("name") == "deviceStatus":
            return str(prop.get("value"))
    return None


def _require_chromeos(device: JsonDict, action: str) -> None:
    if not is_chromeos(device):
        raise GraphError(
            400,
            "BadRequest",
            f"The {action} action is not supported on this device platform "
            f"('{device.get('operatingSystem')}'). It is supported on ChromeOS devices only.",
            intune=True,
        )


@route("POST", DEV + r"/(?P<id>[^/]+)/deprovision$", P_DEVICE_ACTION, beta_only=True, intune=True, write=True)
def deprovision(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    body = api.json_body(req)
    extra = [k for k in body if k != "deprovisionReason"]
    if extra:
        raise GraphError(
            400,
            "BadRequest",
            f"The parameter '{extra[0]}' in the request payload is not a valid parameter for "
            "the operation 'deprovision'.",
        )
    reason = body.get("deprovisionReason")
    device = api.get_device(m["id"])
    if not isinstance(reason, str) or not reason.strip():
        raise GraphError(400, "BadRequest", "deprovisionReason is required.", intune=True)
    _require_chromeos(device, "deprovision")
    accepted = api.sim.state.accepted_deprovision_reasons
    if reason not in accepted:
        raise GraphError(
            400,
            "BadRequest",
            f"Invalid deprovisionReason '{reason}'.",
            intune=True,
        )
    for result in device["deviceActionResults"]:
        if result.get("actionName") == "deprovision" and result.get("actionState") == "pending":
            raise GraphError(
                400,
                "BadRequest",
                "A deprovision action is already pending for this device.",
                intune=True,
            )
    status = (_chrome_status(device) or "").casefold()
    if status in ("deprovisioned", api.sim.control.deprovisioned_status.casefold()):
        raise GraphError(400, "BadRequest", "The device is already deprovisioned.", intune=True)
    details = [{"key": "deprovisionReason", "value": reason}]
    return _start_action(api, device, "deprovision", api.sim.control.deprovisioned_status, details)


@route("POST", DEV + r"/(?P<id>[^/]+)/disable$", P_DEVICE_ACTION, beta_only=True, intune=True, write=True)
def disable(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    device = api.get_device(m["id"])
    _require_chromeos(device, "disable")
    return _start_action(api, device, "disable", "Disabled")


@route("POST", DEV + r"/(?P<id>[^/]+)/reenable$", P_DEVICE_ACTION, beta_only=True, intune=True, write=True)
def reenable(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    device = api.get_device(m["id"])
    _require_chromeos(device, "reenable")
    return _start_action(api, device, "reenable", "Active")


# -- Intune remote action audits ----------------------------------------------------------

AUDITS = r"^/deviceManagement/remoteActionAudits"
AUDIT_TYPE = "microsoft.graph.remoteActionAudit"
AUDIT_FILTERABLE = ("managedDeviceId", "action", "actionState", "deviceDisplayName", "initiatedByUserPrincipalName")
AUDIT_FIELDS = (
    "id",
    "deviceDisplayName",
    "userName",
    "initiatedByUserPrincipalName",
    "action",
    "requestDateTime",
    "deviceOwnerUserPrincipalName",
    "deviceIMEI",
    "actionState",
    "managedDeviceId",
    "deviceActionDetails",
    "deviceActionCategory",
    "bulkDeviceActionId",
)
P_AUDIT_READ = _perm(
    ("DeviceManagementConfiguration.Read.All",),
    ("DeviceManagementConfiguration.ReadWrite.All",),
    ("DeviceManagementManagedDevices.Read.All",),
    ("DeviceManagementManagedDevices.ReadWrite.All",),
)


def _audit_order(req: GraphRequest, rows: list[JsonDict]) -> list[JsonDict]:
    text = req.query.get("$orderby")
    if text is None:
        return rows  # storage order: oldest first
    parts = text.split()
    if not parts or len(parts) > 2 or parts[0].casefold() != "requestdatetime":
        raise GraphError(
            400,
            "BadRequest",
            f"Invalid $orderby '{text}': only 'requestDateTime [asc|desc]' is supported.",
            intune=True,
        )
    direction = parts[1].casefold() if len(parts) == 2 else "asc"
    if direction not in ("asc", "desc"):
        raise GraphError(400, "BadRequest", f"Invalid $orderby direction '{parts[1]}'.", intune=True)
    return sorted(rows, key=lambda r: _time_key(str(r["requestDateTime"])), reverse=direction == "desc")


def _time_key(stamp: str) -> tuple[str, str]:
    """Sort key for ``YYYY-MM-DDTHH:MM:SS[.fffffff]Z`` stamps with any number of fractional digits."""
    base, _, frac = stamp.rstrip("Z").partition(".")
    return base, frac.ljust(7, "0")


@route("GET", AUDITS + "$", P_AUDIT_READ, beta_only=True, intune=True, options="$filter $select $top $orderby $count")
def list_remote_action_audits(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rows = list(api.sim.state.remote_action_audits.values())
    if not api.sim.control.ignore_audit_filters:
        clauses = api.filter_clauses(req, AUDIT_FILTERABLE, "remoteActionAudit", directory=False)
        if clauses is not None:
            rows = [r for r in rows if matches(r, clauses)]
    rows = _audit_order(req, rows)
    select = api.select(req, AUDIT_FIELDS, AUDIT_TYPE)
    count = req.query.get("$count", "").lower() == "true"
    return api.page(
        req,
        rows,
        "deviceManagement/remoteActionAudits",
        select,
        count=count,
        view=lambda r: json.loads(json.dumps(r)),
    )


@route("GET", AUDITS + r"/(?P<id>[^/]+)$", P_AUDIT_READ, beta_only=True, intune=True, options="$select")
def get_remote_action_audit(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    audit = _get_or_404(api.sim.state.remote_action_audits, m["id"], "remoteActionAudit")
    select = api.select(req, AUDIT_FIELDS, AUDIT_TYPE)
    return api.entity(req, json.loads(json.dumps(audit)), "deviceManagement/remoteActionAudits", select)


# -- Intune RBAC ----------------------------------------------------------------------

RBAC = r"^/deviceManagement/"
ROLE_DEF_TYPE = "microsoft.graph.deviceAndAppManagementRoleDefinition"
ROLE_ASSIGN_TYPE = "microsoft.graph.deviceAndAppManagementRoleAssignment"


def _role_def_view(req: GraphRequest, rd: JsonDict) -> JsonDict:
    view: JsonDict = json.loads(json.dumps(rd))
    if req.version == "v1.0":
        for key in ("permissions", "isBuiltInRoleDefinition", "roleScopeTagIds"):
            view.pop(key, None)
        for perm in view["rolePermissions"]:
            perm.pop("actions", None)
    return view


def _assignment_view(req: GraphRequest, ra: JsonDict) -> JsonDict:
    view = {k: v for k, v in json.loads(json.dumps(ra)).items() if k != "roleDefinitionId"}
    if req.version == "v1.0":
        for key in ("scopeMembers", "scopeType", "roleScopeTagIds"):
            view.pop(key, None)
    return view


def _get_or_404(items: Mapping[str, JsonDict], key: str, what: str) -> JsonDict:
    for k, v in items.items():
        if k.casefold() == key.casefold():
            return v
    raise GraphError(404, "ResourceNotFound", f"Resource not found: {what} with id '{key}'.", intune=True)


def _fields(req: GraphRequest, sample: JsonDict) -> list[str]:
    return [k for k in sample if not k.startswith("@") and k != "roleDefinitionId"]


@route("GET", RBAC + r"roleDefinitions$", P_RBAC, intune=True, options="$select $top")
def list_role_definitions(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rows = [_role_def_view(req, rd) for rd in api.sim.state.role_definitions.values()]
    select = api.select(req, _fields(req, rows[0]) if rows else ["id"], ROLE_DEF_TYPE)
    return api.page(req, rows, "deviceManagement/roleDefinitions", select)


@route("GET", RBAC + r"roleDefinitions/(?P<id>[^/]+)$", P_RBAC, intune=True, options="$select")
def get_role_definition(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rd = _role_def_view(req, _get_or_404(api.sim.state.role_definitions, m["id"], "roleDefinition"))
    select = api.select(req, _fields(req, rd), ROLE_DEF_TYPE)
    return api.entity(req, rd, "deviceManagement/roleDefinitions", select)


@route("GET", RBAC + r"roleDefinitions/(?P<id>[^/]+)/roleAssignments$", P_RBAC, intune=True, options="$select $top")
def list_definition_assignments(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rd = _get_or_404(api.sim.state.role_definitions, m["id"], "roleDefinition")
    thin = ("@odata.type", "id", "displayName", "description", "resourceScopes", "members")
    rows = [
        {k: json.loads(json.dumps(ra.get(k, [] if k in ("resourceScopes", "members") else ""))) for k in thin}
        for ra in api.sim.state.role_assignments.values()
        if str(ra.get("roleDefinitionId", "")).casefold() == rd["id"].casefold()
    ]
    select = api.select(req, thin[1:], "microsoft.graph.roleAssignment")
    return api.page(req, rows, f"deviceManagement/roleDefinitions('{rd['id']}')/roleAssignments", select)


def _expand(api: GraphApi, req: GraphRequest, row: JsonDict, ra: JsonDict) -> JsonDict:
    expand = req.query.get("$expand")
    if expand is None:
        return row
    if expand.strip().casefold() != "roledefinition":
        raise GraphError(
            400,
            "BadRequest",
            f"Could not find a property named '{expand}' on type '{ROLE_ASSIGN_TYPE}'.",
        )
    rd = api.sim.state.role_definitions.get(str(ra.get("roleDefinitionId", "")))
    row["roleDefinition"] = _role_def_view(req, rd) if rd is not None else None
    return row


@route("GET", RBAC + r"roleAssignments$", P_RBAC, intune=True, options="$select $top $expand")
def list_role_assignments(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    assignments = list(api.sim.state.role_assignments.values())
    rows = [_expand(api, req, _assignment_view(req, ra), ra) for ra in assignments]
    fields = _fields(req, _assignment_view(req, assignments[0])) if assignments else ["id"]
    select = api.select(req, fields, ROLE_ASSIGN_TYPE)
    if select is not None and "roleDefinition" in req.query.get("$expand", ""):
        select = [*select, "roleDefinition"]
    return api.page(req, rows, "deviceManagement/roleAssignments", select)


@route("GET", RBAC + r"roleAssignments/(?P<id>[^/]+)$", P_RBAC, intune=True, options="$select $expand")
def get_role_assignment(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    ra = _get_or_404(api.sim.state.role_assignments, m["id"], "roleAssignment")
    row = _expand(api, req, _assignment_view(req, ra), ra)
    select = api.select(req, _fields(req, _assignment_view(req, ra)), ROLE_ASSIGN_TYPE)
    if select is not None and "roleDefinition" in row:
        select = [*select, "roleDefinition"]
    return api.entity(req, row, "deviceManagement/roleAssignments", select)


@route("GET", RBAC + r"roleScopeTags$", P_RBAC, beta_only=True, intune=True, options="$select $top")
def list_scope_tags(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rows = [dict(t) for t in api.sim.state.role_scope_tags.values()]
    select = api.select(req, ["id", "displayName", "description", "isBuiltIn"], "microsoft.graph.roleScopeTag")
    return api.page(req, rows, "deviceManagement/roleScopeTags", select)


@route("GET", RBAC + r"roleScopeTags/(?P<id>[^/]+)$", P_RBAC, beta_only=True, intune=True, options="$select")
def get_scope_tag(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    tag = dict(_get_or_404(api.sim.state.role_scope_tags, m["id"], "roleScopeTag"))
    select = api.select(req, ["id", "displayName", "description", "isBuiltIn"], "microsoft.graph.roleScopeTag")
    return api.entity(req, tag, "deviceManagement/roleScopeTags", select)


# -- Directory: users, groups, devices ---------------------------------------------------


def _user_or_404(api: GraphApi, key: str) -> JsonDict:
    user = api.sim.state.find_user(key)
    if user is None:
        raise _dir_not_found(key)
    return user


def _dir_not_found(key: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
    )


def _check_member_groups(api: GraphApi, req: GraphRequest, object_id: str) -> GraphResponse:
    body = api.json_body(req)
    ids = body.get("groupIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise GraphError(400, "Request_BadRequest", "groupIds must be a list of group ids.")
    if len(ids) > MAX_MEMBER_CHECK:
        raise GraphError(
            400,
            "Request_BadRequest",
            f"The request contains more than {MAX_MEMBER_CHECK} group ids "
            f"({len(ids)}); checkMemberGroups accepts at most {MAX_MEMBER_CHECK}.",
        )
    member_of = {g.casefold() for g in api.sim.state.transitive_groups(object_id)}
    value = [i for i in ids if i.casefold() in member_of]
    return GraphResponse(
        200,
        {"@odata.context": api.context(req, "Collection(Edm.String)"), "value": value},
    )


def _get_member_groups(api: GraphApi, req: GraphRequest, object_id: str) -> GraphResponse:
    body = api.json_body(req)
    flag = body.get("securityEnabledOnly")
    if not isinstance(flag, bool):
        raise GraphError(400, "Request_BadRequest", "The parameter 'securityEnabledOnly' is required.")
    groups = api.sim.state.groups
    value = [
        gid
        for gid in sorted(api.sim.state.transitive_groups(object_id))
        if not flag or groups[gid].get("securityEnabled")
    ]
    return GraphResponse(
        200,
        {"@odata.context": api.context(req, "Collection(Edm.String)"), "value": value},
    )


def _group_view(group: JsonDict) -> JsonDict:
    view = {"@odata.type": "#microsoft.graph.group"}
    view.update({k: json.loads(json.dumps(group.get(k))) for k in GROUP_FIELDS})
    return view


@route("GET", r"^/users/(?P<id>[^/]+)$", P_USER, options="$select")
def get_user(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    user = _user_or_404(api, m["id"])
    select = api.select(req, USER_FIELDS, "microsoft.graph.user")
    row = {k: user.get(k) for k in USER_FIELDS}
    return api.entity(req, row, "users", select)


@route("POST", r"^/users/(?P<id>[^/]+)/checkMemberGroups$", P_MEMBERSHIP)
def user_check_member_groups(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    return _check_member_groups(api, req, _user_or_404(api, m["id"])["id"])


@route("POST", r"^/users/(?P<id>[^/]+)/getMemberGroups$", P_MEMBERSHIP)
def user_get_member_groups(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    return _get_member_groups(api, req, _user_or_404(api, m["id"])["id"])


@route(
    "GET",
    r"^/users/(?P<id>[^/]+)/transitiveMemberOf(?P<cast>/microsoft\.graph\.group)?$",
    P_MEMBERSHIP,
    options="$select $top $count",
)
def user_transitive_member_of(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    user = _user_or_404(api, m["id"])
    count = req.query.get("$count", "").lower() == "true"
    if count and req.headers.get("consistencylevel", "").lower() != "eventual":
        raise _consistency_error()
    groups = api.sim.state.groups
    rows = [_group_view(groups[g]) for g in sorted(api.sim.state.transitive_groups(user["id"]))]
    select = api.select(req, GROUP_FIELDS, "microsoft.graph.group")
    return api.page(req, rows, "groups" if m["cast"] else "directoryObjects", select, count=count)


@route("GET", r"^/groups/(?P<id>[^/]+)$", P_GROUP, options="$select")
def get_group(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    group = api.sim.state.groups.get(m["id"])
    if group is None:
        raise _dir_not_found(m["id"])
    select = api.select(req, GROUP_FIELDS, "microsoft.graph.group")
    return api.entity(req, _group_view(group), "groups", select)


ENTRA_DEVICE_FIELDS = (
    "id",
    "deviceId",
    "displayName",
    "operatingSystem",
    "operatingSystemVersion",
    "accountEnabled",
    "trustType",
    "isManaged",
)


@route("GET", r"^/devices$", P_DEVICE, options="$filter $select $top $count")
def list_entra_devices(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    devices = list(api.sim.state.entra_devices.values())
    clauses = api.filter_clauses(req, ENTRA_DEVICE_FILTERABLE, "Device", directory=True)
    if clauses is not None:
        devices = [d for d in devices if matches(d, clauses)]
    select = api.select(req, ENTRA_DEVICE_FIELDS, "microsoft.graph.device")
    rows = [{"@odata.type": "#microsoft.graph.device", **d} for d in devices]
    return api.page(req, rows, "devices", select)


def _entra_device_or_404(api: GraphApi, key: str) -> JsonDict:
    for oid, device in api.sim.state.entra_devices.items():
        if oid.casefold() == key.casefold():
            return device
    raise _dir_not_found(key)


@route("GET", r"^/devices/(?P<id>[^/]+)$", P_DEVICE, options="$select")
def get_entra_device(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    device = _entra_device_or_404(api, m["id"])
    select = api.select(req, ENTRA_DEVICE_FIELDS, "microsoft.graph.device")
    return api.entity(req, dict(device), "devices", select)


@route("POST", r"^/devices/(?P<id>[^/]+)/checkMemberGroups$", P_DEVICE)
def device_check_member_groups(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    return _check_member_groups(api, req, _entra_device_or_404(api, m["id"])["id"])


@route("POST", r"^/devices/(?P<id>[^/]+)/getMemberGroups$", P_DEVICE)
def device_get_member_groups(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    return _get_member_groups(api, req, _entra_device_or_404(api, m["id"])["id"])


# -- Directory roles ---------------------------------------------------------------------

DIR = r"^/roleManagement/directory/"


def _consistency_error() -> GraphError:
    return GraphError(
        400,
        "Request_UnsupportedQuery",
        "Unsupported Query. This query requires the 'ConsistencyLevel: eventual' request header "
        "(advanced query capabilities).",
    )


@route("GET", DIR + r"roleAssignments$", P_DIR_ROLES, options="$filter $select $top")
def list_directory_role_assignments(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rows = [dict(a) for a in api.sim.state.directory_role_assignments.values()]
    clauses = api.filter_clauses(req, DIR_ROLE_FILTERABLE, "unifiedRoleAssignment", directory=True)
    if clauses is not None:
        rows = [r for r in rows if matches(r, clauses)]
    select = api.select(req, ("id", *DIR_ROLE_FILTERABLE), "microsoft.graph.unifiedRoleAssignment")
    return api.page(req, rows, "roleManagement/directory/roleAssignments", select)


@route(
    "GET",
    DIR + r"transitiveRoleAssignments$",
    P_DIR_ROLES,
    beta_only=True,
    options="$filter $select $top $count",
)
def list_transitive_role_assignments(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    if req.headers.get("consistencylevel", "").lower() != "eventual":
        raise _consistency_error()
    clauses = api.filter_clauses(req, ("principalId", "roleDefinitionId"), "unifiedRoleAssignment", directory=True)
    if not clauses:
        raise GraphError(
            400,
            "Request_UnsupportedQuery",
            "A filter on principalId or roleDefinitionId is required for transitiveRoleAssignments.",
        )
    rows = [dict(a) for a in api.sim.state.directory_role_assignments.values()]
    for prop, value in clauses:
        if prop == "principalId":
            user = api.sim.state.find_user(value)
            principal = user["id"] if user is not None else value
            principals = {principal.casefold()} | {g.casefold() for g in api.sim.state.transitive_groups(principal)}
            rows = [r for r in rows if r["principalId"].casefold() in principals]
        else:
            rows = [r for r in rows if str(r[prop]).casefold() == value.casefold()]
    select = api.select(req, ("id", *DIR_ROLE_FILTERABLE), "microsoft.graph.unifiedRoleAssignment")
    count = req.query.get("$count", "").lower() == "true"
    return api.page(req, rows, "roleManagement/directory/transitiveRoleAssignments", select, count=count)


@route("GET", DIR + r"roleDefinitions$", P_DIR_ROLES, options="$select $top")
def list_directory_role_definitions(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rows = [dict(d) for d in api.sim.state.directory_role_definitions.values()]
    fields = ("id", "displayName", "description", "isBuiltIn", "isEnabled", "templateId")
    select = api.select(req, fields, "microsoft.graph.unifiedRoleDefinition")
    return api.page(req, rows, "roleManagement/directory/roleDefinitions", select)


@route("GET", DIR + r"roleDefinitions/(?P<id>[^/]+)$", P_DIR_ROLES, options="$select")
def get_directory_role_definition(api: GraphApi, req: GraphRequest, m: re.Match[str]) -> GraphResponse:
    rd = api.sim.state.directory_role_definitions.get(m["id"])
    if rd is None:
        raise _dir_not_found(m["id"])
    fields = ("id", "displayName", "description", "isBuiltIn", "isEnabled", "templateId")
    select = api.select(req, fields, "microsoft.graph.unifiedRoleDefinition")
    return api.entity(req, dict(rd), "roleManagement/directory/roleDefinitions", select)


def _redact(headers: Mapping[str, str]) -> dict[str, str]:
    out = dict(headers)
    if "authorization" in out:
        out["authorization"] = "Bearer <redacted>"
    return out
