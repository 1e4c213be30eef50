"""What Intune itself says about a deprovision: its remote-action audit, the device's action results, and the
ChromeOS status — read, never guessed (graph-intune.md §2).

``remoteActionAudits`` is filtered on the server, but the server may ignore the filter, so every row is checked
again here. Property names inside ``chromeOSDeviceInfo`` are undocumented (UNVERIFIED): the names and the value that
means "deprovisioned" are settings (``INTUNE_CHROME_STATUS_PROPERTIES``, ``INTUNE_DEPROVISIONED_VALUES``); the raw
values are logged at debug level.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bot.devices import DeviceDirectory
from bot.graph import GraphClient, odata_string
from bot.settings import Settings

log = logging.getLogger("bot.intune")

AUDITS = "/beta/deviceManagement/remoteActionAudits"
DONE_STATES = {"done"}
FAILED_STATES = {"failed", "canceled", "cancelled"}

Outcome = Literal["done", "failed", "pending", "absent"]


@dataclass(frozen=True)
class Record:
    """Intune's verdict on the deprovision sent at or after ``since``."""

    outcome: Outcome
    detail: str = ""  # failure text, or what was seen
    at: str = ""  # Intune's time of the newest matching record (ISO 8601)
    initiated_by: str = ""

    @property
    def settled(self) -> bool:
        return self.outcome in ("done", "failed")


def parse_time(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_record(
    audits: list[dict[str, Any]], details: dict[str, Any], device_id: str, since: float, settings: Settings
) -> Record:
    """The pure rule: a record since ``since`` that says done or failed settles it; done wins over failed."""
    rows = [
        r
        for r in audits
        if str(r.get("managedDeviceId", "")).lower() == device_id.lower()
        and str(r.get("action", "")).lower() == "deprovision"
        and (parse_time(r.get("requestDateTime")) or 0.0) >= since
    ]
    rows.sort(key=lambda r: str(r.get("requestDateTime", "")), reverse=True)
    results = [
        r
        for r in details.get("deviceActionResults") or []
        if str(r.get("actionName", "")).lower() == "deprovision"
        and (parse_time(r.get("startDateTime")) or 0.0) >= since
    ]
    states = [str(r.get("actionState", "")).lower() for r in rows] + [
        str(r.get("actionState", "")).lower() for r in results
    ]
    chrome = chrome_status(details, settings)
    newest = rows[0] if rows else {}
    at = str(newest.get("requestDateTime") or (results[0].get("lastUpdatedDateTime") if results else "") or "")
    who = str(newest.get("initiatedByUserPrincipalName") or "")
    if not states:
        return Record("absent", chrome)
    if DONE_STATES & set(states) or chrome.lower() in {v.lower() for v in settings.deprovisioned_values}:
        return Record("done", chrome or "done", at, who)
    if FAILED_STATES & set(states):
        return Record("failed", _failure_text(newest) or "Intune reports the action failed", at, who)
    return Record("pending", chrome or "pending", at, who)


def chrome_status(details: dict[str, Any], settings: Settings) -> str:
    wanted = {p.lower() for p in settings.chrome_status_properties}
    for prop in details.get("chromeOSDeviceInfo") or []:
        if str(prop.get("name", "")).lower() in wanted:
            return str(prop.get("value", ""))
    return ""


def _failure_text(row: dict[str, Any]) -> str:
    for item in row.get("deviceActionDetails") or []:
        if str(item.get("key", "")).lower() in ("errormessage", "error", "message"):
            return str(item.get("value", ""))[:300]
    return ""


async def deprovision_audits(graph: GraphClient, device_id: str) -> list[dict[str, Any]]:
    """Intune's remote-action audit rows for this device's deprovisions (newest first; re-checked by the caller)."""
    audits, _ = await graph.list_all(
        AUDITS,
        {
            "$filter": f"managedDeviceId eq {odata_string(device_id)} and action eq 'deprovision'",
            "$orderby": "requestDateTime desc",
            "$top": "20",
        },
        max_items=200,
    )
    return audits


async def fetch_record(
    graph: GraphClient, devices: DeviceDirectory, device_id: str, since: float, settings: Settings
) -> Record:
    """Read both sources (two GETs, side by side) and apply :func:`read_record`."""
    audits, details = await asyncio.gather(deprovision_audits(graph, device_id), devices.details(device_id))
    log.debug(
        "intune record",
        extra={
            "device": device_id,
            "audits": [(r.get("actionState"), r.get("requestDateTime")) for r in audits[:5]],
            "action_results": details.get("deviceActionResults"),
            "chrome": details.get("chromeOSDeviceInfo"),
        },
    )
    return read_record(audits, details, device_id, since, settings)
