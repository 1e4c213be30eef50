"""Finding exactly one device — never a guess.

A GUID is tried as an Intune managed-device id, then as an Entra device id (``azureADDeviceId``); other text
as a serial number, then as a device name. Every row Graph returns is re-verified here (exact, case-insensitive
equality on the queried property) because Graph sometimes ignores a ``$filter`` and returns the whole tenant.
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from bot.errors import GraphError, InvalidInput
from bot.graph import BATCH_LIMIT, GraphClient, odata_string

MAX_QUERY_LENGTH = 128
MAX_CANDIDATES = 10
#: "Did you mean": rows read per prefix query (one page, never more), and how different a near miss may be.
NEAR_ROWS = 25
#: Rows read before an eq-filter answer is considered "filter ignored and too big to scan".
MAX_SCAN_ROWS = 5000

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: C0/C1 controls, zero-width and bidirectional formatting characters (incl. the isolates U+2066-2069, ALM U+061C).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")

DEVICE_FIELDS = (
    "id",
    "deviceName",
    "serialNumber",
    "operatingSystem",
    "osVersion",
    "deviceType",
    "azureADDeviceId",
    "userId",
    "userPrincipalName",
    "userDisplayName",
    "enrollmentProfileName",
    "lastSyncDateTime",
    "managementState",
    "roleScopeTagIds",
    "model",
    "manufacturer",
)
SELECT = ",".join(DEVICE_FIELDS)


@dataclass(frozen=True)
class Device:
    """The facts about one managed device the bot shows and decides on."""

    id: str
    name: str
    serial: str
    operating_system: str
    device_type: str
    azure_ad_device_id: str
    user_id: str
    user_principal_name: str
    user_display_name: str
    enrollment_profile: str
    last_sync: str
    management_state: str
    scope_tag_ids: tuple[str, ...]
    os_version: str = ""
    model: str = ""

    @classmethod
    def from_graph(cls, row: dict[str, Any]) -> Device:
        def text(key: str) -> str:
            value = row.get(key)
            return "" if value is None else str(value)

        return cls(
            id=text("id"),
            name=text("deviceName"),
            serial=text("serialNumber"),
            operating_system=text("operatingSystem"),
            device_type=text("deviceType"),
            azure_ad_device_id=text("azureADDeviceId") or text("azureActiveDirectoryDeviceId"),
            user_id=text("userId"),
            user_principal_name=text("userPrincipalName"),
            user_display_name=text("userDisplayName"),
            enrollment_profile=text("enrollmentProfileName"),
            last_sync=text("lastSyncDateTime"),
            management_state=text("managementState"),
            scope_tag_ids=tuple(str(t) for t in (row.get("roleScopeTagIds") or [])),
            os_version=text("osVersion"),
            model=text("model"),
        )

    @property
    def is_chromeos(self) -> bool:
        return is_chromeos(self.operating_system, self.device_type)

    @property
    def effective_scope_tags(self) -> tuple[str, ...]:
        """An untagged device counts as the Default tag ``"0"``."""
        return self.scope_tag_ids or ("0",)

    @property
    def primary_user(self) -> str:
        return self.user_display_name or self.user_principal_name

    def snapshot(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Device:
        values = dict(data)
        values["scope_tag_ids"] = tuple(values.get("scope_tag_ids") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


def _squash(text: str) -> str:
    return re.sub(r"[\s_-]+", "", text).lower()


def is_chromeos(operating_system: str, device_type: str) -> bool:
    """ChromeOS from ``operatingSystem`` or ``deviceType``, case- and space-insensitively."""
    return _squash(operating_system) in {"chromeos", "chromeosflex"} or _squash(device_type) == "chromeos"


@dataclass
class LookupResult:
    """Exactly one of: ``device`` set, ``candidates`` (ambiguous), or neither (not found)."""

    query: str
    matched_by: str = ""
    device: Device | None = None
    candidates: list[Device] = field(default_factory=list)
    total_matches: int = 0
    incomplete: bool = False

    @property
    def found(self) -> bool:
        return self.device is not None

    @property
    def ambiguous(self) -> bool:
        return self.device is None and len(self.candidates) > 1


def clean_query(text: str) -> str:
    """Validate user text used as a device identifier; raise :class:`InvalidInput`."""
    value = unicodedata.normalize("NFKC", text).strip().strip('`"“”').strip()
    if not value:
        raise InvalidInput("empty")
    if len(value) > MAX_QUERY_LENGTH:
        raise InvalidInput("too_long")
    if _CONTROL_RE.search(value):
        raise InvalidInput("control")
    return value


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute — each costs 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def near_miss_limit(query: str) -> int:
    """How many edits still count as a typo of ``query``: 1 for short text, about one in five characters beyond."""
    return max(1, min(3, len(query) // 5))


#: How a row is re-checked against the property it was filtered on (the Device view also reads legacy names).
_VERIFY: dict[str, Callable[[Device], str]] = {
    "serialNumber": lambda d: d.serial,
    "deviceName": lambda d: d.name,
    "azureADDeviceId": lambda d: d.azure_ad_device_id,
}


class DeviceDirectory:
    """Device lookup and reads over the Graph client."""

    def __init__(self, graph: GraphClient) -> None:
        self._graph = graph

    async def get(self, device_id: str) -> Device | None:
        """A managed device by Intune id, or ``None`` when Graph says 404."""
        if not GUID_RE.match(device_id):
            return None
        try:
            row = await self._graph.get(f"/beta/deviceManagement/managedDevices/{device_id}", {"$select": SELECT})
        except GraphError as exc:
            if exc.status in (400, 404):
                return None
            raise
        if not isinstance(row, dict) or str(row.get("id", "")).lower() != device_id.lower():
            return None
        return Device.from_graph(row)

    async def details(self, device_id: str) -> dict[str, Any]:
        """The heavy properties a list never returns (``chromeOSDeviceInfo``, ``deviceActionResults``)."""
        row = await self._graph.get(
            f"/beta/deviceManagement/managedDevices/{device_id}",
            {"$select": "id,chromeOSDeviceInfo,deviceActionResults,managementState"},
        )
        return row if isinstance(row, dict) else {}

    async def _filter(self, prop: str, value: str) -> tuple[list[Device], bool]:
        rows, truncated = await self._graph.list_all(
            "/beta/deviceManagement/managedDevices",
            {"$filter": f"{prop} eq {odata_string(value)}", "$select": SELECT, "$top": "100"},
            max_items=MAX_SCAN_ROWS,
        )
        wanted = value.casefold()
        devices = [Device.from_graph(r) for r in rows if isinstance(r, dict)]
        return [d for d in devices if _VERIFY[prop](d).casefold() == wanted], truncated

    async def near(self, text: str) -> list[Device]:
        """Devices whose name or serial is a near miss of ``text`` (typos), closest first — for "did you mean".

        Bounded: at most three one-page prefix queries of :data:`NEAR_ROWS` rows each; every row is re-ranked here
        by edit distance (Graph's ``startswith`` has behaved like ``contains``, and a filter may be ignored), and
        only rows within :func:`near_miss_limit` edits are kept. Exact matches are not near misses. The caller
        keeps only devices the requester may read. Best effort: a Graph error means no suggestions.
        """
        query = clean_query(text)
        if GUID_RE.match(query) or len(query) < 4:
            return []
        folded = query.casefold()
        half = query[: max(3, len(query) // 2)]
        queries = [("deviceName", query[: max(3, len(query) - 2)]), ("deviceName", half), ("serialNumber", half)]
        rows: dict[str, Device] = {}
        for prop, prefix in dict.fromkeys(queries):
            try:
                page = await self._graph.get(
                    "/beta/deviceManagement/managedDevices",
                    {
                        "$filter": f"startswith({prop}, {odata_string(prefix)})",
                        "$select": SELECT,
                        "$top": str(NEAR_ROWS),
                    },
                )
            except GraphError:
                return []
            values = page.get("value") if isinstance(page, dict) else None
            for row in (values if isinstance(values, list) else [])[:NEAR_ROWS]:
                if isinstance(row, dict) and row.get("id"):
                    device = Device.from_graph(row)
                    rows.setdefault(device.id, device)
        limit = near_miss_limit(query)
        scored = []
        for device in rows.values():
            distance = min(
                edit_distance(folded, device.name.casefold()), edit_distance(folded, device.serial.casefold())
            )
            if 0 < distance <= limit:
                scored.append((distance, device.name.casefold(), device.serial, device))
        return [d for *_, d in sorted(scored, key=lambda s: s[:3])]

    async def find(self, text: str) -> LookupResult:
        """One device, by sequential GETs. The chat flows use :class:`BatchLookup` (``follow_pages`` for one device),
        which gives the same answers and lets the role check's requester facts share its first ``$batch``."""
        query = clean_query(text)
        result = LookupResult(query=query)
        if GUID_RE.match(query):
            device = await self.get(query.lower())
            if device is not None:
                result.device, result.matched_by, result.total_matches = device, "intune_id", 1
                return result
            steps = [("azureADDeviceId", "entra_device_id")]
        else:
            steps = [("serialNumber", "serial"), ("deviceName", "name")]
        for prop, label in steps:
            matches, truncated = await self._filter(prop, query)
            result.incomplete = result.incomplete or truncated
            if not matches:
                continue
            result.matched_by, result.total_matches = label, len(matches)
            if len(matches) == 1 and not truncated:
                result.device = matches[0]
            else:
                result.candidates = sorted(matches, key=lambda d: (d.name.lower(), d.serial))[:MAX_CANDIDATES]
            return result
        return result


# -- many devices at once (bulk deprovision) -------------------------------------------------------------------

#: The two lookup rounds of :meth:`BatchLookup.find_many`: what each kind of entry is tried as, in order.
_ROUNDS = {"guid": ("intune_id", "azureADDeviceId"), "text": ("serialNumber", "deviceName")}
_LABELS = {
    "intune_id": "intune_id",
    "azureADDeviceId": "entra_device_id",
    "serialNumber": "serial",
    "deviceName": "name",
}


def _lookup_request(rid: str, prop: str, query: str) -> dict[str, str]:
    """One ``$batch`` sub-request: a GET by Intune id, or an exact ``eq`` filter (value quoted, then URL-encoded)."""
    if prop == "intune_id":
        return {"id": rid, "method": "GET", "url": f"/deviceManagement/managedDevices/{query}?$select={SELECT}"}
    params = {"$filter": f"{prop} eq {odata_string(query)}", "$select": SELECT, "$top": "100"}
    return {
        "id": rid,
        "method": "GET",
        "url": "/deviceManagement/managedDevices?" + urlencode(params, quote_via=quote, safe="$,"),
    }


class BatchLookup:
    """:meth:`DeviceDirectory.find` for many entries, one ``$batch`` sub-request per entry and round.

    Round 1 asks every entry once — a GUID as an Intune id, anything else as a serial number — in batches of 20
    sent side by side; round 2 asks only the entries round 1 did not find (a GUID as an Entra device id, text as a
    device name). So a pasted column of serials or Intune ids costs ⌈N/20⌉ round trips (+⌈misses/20⌉), names
    about twice that. Rows are re-verified exactly as :meth:`DeviceDirectory.find` does. An answer with a next page
    (a filter Graph ignored, or a name shared by over 100 devices) is not followed for a list: the entry is
    ``incomplete`` (a list of 100 would mean 100 tenant scans); with ``follow_pages`` (one device) it is, as
    :meth:`DeviceDirectory.find` does, up to :data:`MAX_SCAN_ROWS` rows.

    :meth:`find_with` carries other sub-requests in round 1 (the requester's facts for the role check), so a
    message turn looks up its device and learns who is asking in one round trip.
    """

    def __init__(self, graph: GraphClient) -> None:
        self._graph = graph

    async def find_many(self, queries: Sequence[str], *, follow_pages: bool = False) -> list[LookupResult]:
        """``queries`` are already :func:`clean_query`-ed; one result per query, in order."""
        return (await self.find_with(queries, [], follow_pages=follow_pages))[0]

    async def find_with(
        self, queries: Sequence[str], extra: Sequence[dict[str, Any]], *, follow_pages: bool = False
    ) -> tuple[list[LookupResult], dict[str, Any]]:
        """:meth:`find_many`, with ``extra`` sub-requests (ids other than digits) in round 1; also their answers."""
        if any(str(r["id"]).isdigit() for r in extra):
            raise ValueError("extra sub-request ids must not be digits (those are the lookups')")
        results = [LookupResult(query=q) for q in queries]
        carried: dict[str, Any] = {}
        for round_ in (0, 1):
            asks = []
            for k, result in enumerate(results):
                if (
                    result.device is not None
                    or result.candidates
                    or (round_ and result.incomplete and not follow_pages)
                ):
                    continue
                kind = "guid" if GUID_RE.match(result.query) else "text"
                asks.append((k, _ROUNDS[kind][round_]))
            requests = [_lookup_request(f"{k}", prop, results[k].query) for k, prop in asks]
            if not round_:
                requests = [*extra, *requests]
            if not requests:
                break
            answers = await self._send(requests)
            if not round_:
                carried = {str(r["id"]): answers.get(str(r["id"])) for r in extra}
            for k, prop in asks:
                rows, truncated = await self._rows(prop, results[k].query, answers.get(str(k)), follow_pages)
                self._settle(results[k], prop, rows, truncated)
        return results, carried

    async def _send(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        pages = await asyncio.gather(
            *(
                self._graph.batch(requests[i : i + BATCH_LIMIT], version="beta")
                for i in range(0, len(requests), BATCH_LIMIT)
            )
        )
        return {rid: answer for page in pages for rid, answer in page.items()}

    async def _rows(self, prop: str, query: str, answer: object, follow_pages: bool) -> tuple[list[Any], bool]:
        """The rows of one sub-answer and whether there were more than were read; a failure raises."""
        status = int(answer.get("status", 0)) if isinstance(answer, dict) else 0
        body = answer.get("body") if isinstance(answer, dict) else None
        if prop == "intune_id" and status in (400, 404):
            return [], False
        if not 200 <= status < 300 or not isinstance(body, dict):
            error = body.get("error", {}) if isinstance(body, dict) else {}
            code = str(error.get("code", "")) if isinstance(error, dict) else ""
            raise GraphError(status, code or "BatchItemFailed", f"device lookup ({prop})")
        if prop == "intune_id":
            return ([body] if str(body.get("id", "")).lower() == query.lower() else []), False
        if body.get("@odata.nextLink") and follow_pages:
            return await self._graph.rest_of(body, max_items=MAX_SCAN_ROWS)
        return list(body.get("value") or []), bool(body.get("@odata.nextLink"))

    @staticmethod
    def _settle(result: LookupResult, prop: str, rows: list[Any], truncated: bool) -> None:
        result.incomplete = result.incomplete or truncated
        devices = [Device.from_graph(r) for r in rows if isinstance(r, dict)]
        if prop != "intune_id":
            wanted = result.query.casefold()
            devices = [d for d in devices if _VERIFY[prop](d).casefold() == wanted]
        if not devices:
            return
        result.matched_by, result.total_matches = _LABELS[prop], len(devices)
        if len(devices) == 1 and not truncated:
            result.device = devices[0]
        else:
            result.candidates = sorted(devices, key=lambda d: (d.name.lower(), d.serial))[:MAX_CANDIDATES]
