"""The role check's ``$batch`` sub-requests, planned and read as plain functions (no state, no sending).

A check asks Graph for the requester's memberships of the assignments' member groups and their Entra roles
(:func:`requester_requests`), and per device its scope-group memberships (:func:`scope_requests`) and, at
confirmation, a fresh copy (:func:`fresh_request`). Sub-request ids are typed (:class:`Sub`). Reading an answer that
failed raises :class:`~bot.errors.RbacUnavailable` (fail closed).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

from bot.devices import SELECT as DEVICE_SELECT
from bot.devices import Device
from bot.errors import GraphError, RbacUnavailable
from bot.graph import GraphClient, odata_string
from bot.rbac_rules import READ, RETIRE, Catalog, RequesterFacts, RoleAssignment

CHUNK = 20
ENTRA_ROLES_HEADERS = {"ConsistencyLevel": "eventual"}


class Sub(enum.Enum):
    """The kinds of sub-request in a role-check ``$batch``; ids read ``kind.device.chunk``."""

    ME = "me"  # the requester's group memberships
    ENTRA = "entra"  # the requester's Entra admin roles
    USER = "pu"  # device k's primary user's memberships of scope groups
    DEVICE = "dv"  # device k's Entra object's memberships of scope groups
    DEVOBJ = "devobj"  # device k's Entra object id
    FRESH = "fresh"  # device k re-read from Intune

    def id(self, device: int = 0, chunk: int = 0) -> str:
        return f"{self.value}.{device}.{chunk}"

    @staticmethod
    def parse(rid: str) -> tuple[Sub, int]:
        kind, device, _ = rid.split(".")
        return Sub(kind), int(device)


def chunks(items: Iterable[str], size: int = CHUNK) -> list[list[str]]:
    """Distinct items in slices of ``size`` (``checkMemberGroups`` takes at most 20 group ids)."""
    values = list(dict.fromkeys(items))
    return [values[i : i + size] for i in range(0, len(values), size)]


# -- planning ---------------------------------------------------------------------------------------------


def check_groups(rid: str, base: str, group_ids: list[str]) -> dict[str, Any]:
    return {
        "id": rid,
        "method": "POST",
        "url": f"{base}/checkMemberGroups",
        "headers": {"Content-Type": "application/json"},
        "body": {"groupIds": group_ids},
    }


def member_checks(requester_id: str, groups: Iterable[str]) -> list[dict[str, Any]]:
    """The requester's memberships of ``groups``, 20 to a sub-request."""
    return [check_groups(Sub.ME.id(0, i), f"/users/{requester_id}", chunk) for i, chunk in enumerate(chunks(groups))]


def entra_roles_request(requester_id: str) -> dict[str, Any]:
    return {
        "id": Sub.ENTRA.id(),
        "method": "GET",
        "url": "/roleManagement/directory/transitiveRoleAssignments?$count=true&$filter="
        + f"principalId eq {odata_string(requester_id)}&$select=roleDefinitionId",
        "headers": dict(ENTRA_ROLES_HEADERS),
    }


def requester_requests(catalog: Catalog, requester_id: str, *, entra_roles: bool) -> list[dict[str, Any]]:
    """The device-independent sub-requests of a check: the requester's admin-group memberships, Entra roles."""
    requests = member_checks(requester_id, (g for a in catalog.assignments for g in a.members))
    if entra_roles:
        requests.append(entra_roles_request(requester_id))
    return requests


def _reads(catalog: Catalog, a: RoleAssignment) -> bool:
    """The assignment's role could grant deprovision or read (the only assignments whose scope matters)."""
    role = catalog.roles.get(a.role_id)
    return role is not None and (role.mentions(RETIRE) or role.permits(READ))


def reader_scope_groups(catalog: Catalog) -> list[str]:
    """Every reader assignment's scope groups (asked for when the requester's groups are not known yet)."""
    return [
        g
        for a in catalog.assignments
        if _reads(catalog, a) and a.scope_type.lower() == "resourcescope"
        for g in a.scope_groups
    ]


def held_scope_groups(catalog: Catalog, requester: RequesterFacts) -> list[str]:
    """The scope groups of the requester's own ``resourceScope`` assignments (the only ones decide reads)."""
    return [
        g
        for a in catalog.assignments
        if a.scope_type.lower() == "resourcescope" and set(a.members) & requester.groups and _reads(catalog, a)
        for g in a.scope_groups
    ]


def fresh_request(k: int, device: Device) -> dict[str, Any]:
    return {
        "id": Sub.FRESH.id(k),
        "method": "GET",
        "url": f"/deviceManagement/managedDevices/{device.id}?$select={DEVICE_SELECT}",
    }


def scope_requests(k: int, device: Device, scope_groups: list[str], device_object: str | None) -> list[dict[str, Any]]:
    """Scope-group facts of device ``k``: its primary user's and its Entra object's memberships.

    ``device_object`` is the device's Entra object id: ``""`` while unknown (then it is looked up), ``None`` when
    there is none.
    """
    if not scope_groups:
        return []
    requests = []
    if device.user_id:
        for i, chunk in enumerate(chunks(scope_groups)):
            requests.append(check_groups(Sub.USER.id(k, i), f"/users/{device.user_id}", chunk))
    if device.azure_ad_device_id and device_object == "":
        requests.append(
            {
                "id": Sub.DEVOBJ.id(k),
                "method": "GET",
                "url": "/devices?$filter=deviceId eq "
                + odata_string(device.azure_ad_device_id)
                + "&$select=id,deviceId",
            }
        )
    elif device_object:
        requests.extend(object_checks(k, device_object, scope_groups))
    return requests


def object_checks(k: int, device_object: str | None, scope_groups: list[str]) -> list[dict[str, Any]]:
    """Device ``k``'s Entra object's memberships of the scope groups."""
    return [
        check_groups(Sub.DEVICE.id(k, i), f"/devices/{device_object}", chunk)
        for i, chunk in enumerate(chunks(scope_groups))
    ]


# -- reading ----------------------------------------------------------------------------------------------


def ok(answer: dict[str, Any] | None, what: str, *, allow_404: bool = False) -> dict[str, Any]:
    """The body of a successful sub-request; a missing or failed one is :class:`RbacUnavailable`."""
    if answer is None:
        raise RbacUnavailable(GraphError(0, "MissingResponse", what))
    status = int(answer.get("status", 0))
    body = answer.get("body") or {}
    if allow_404 and status == 404:
        return {}
    if not 200 <= status < 300:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        raise RbacUnavailable(GraphError(status, str(err.get("code", "")), str(err.get("message", what))))
    return body if isinstance(body, dict) else {}


def groups_in(answer: dict[str, Any] | None, what: str = "checkMemberGroups") -> list[str]:
    """The groups a ``checkMemberGroups`` answer names (none when its subject is gone)."""
    return list(ok(answer, what, allow_404=True).get("value", []))


async def collect(
    graph: GraphClient, answer: dict[str, Any] | None, what: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every row of a list answer, following its next pages."""
    body = ok(answer, what)
    items = list(body.get("value", []))
    next_link = body.get("@odata.nextLink")
    while next_link:
        page = await graph.get(next_link, headers=headers)
        items.extend(page.get("value", []))
        next_link = page.get("@odata.nextLink")
    return items


async def entra_roles_in(graph: GraphClient, answer: dict[str, Any] | None) -> set[str]:
    rows = await collect(graph, answer, "transitiveRoleAssignments", ENTRA_ROLES_HEADERS)
    return {str(r.get("roleDefinitionId")) for r in rows}


async def read_requester(
    graph: GraphClient, requests: Sequence[dict[str, Any]], answers: dict[str, Any]
) -> RequesterFacts:
    """The answers to :func:`requester_requests`."""
    groups: set[str] = set()
    entra_roles: set[str] = set()
    for request in requests:
        rid = str(request["id"])
        if Sub.parse(rid)[0] is Sub.ENTRA:
            entra_roles |= await entra_roles_in(graph, answers.get(rid))
        else:
            groups.update(groups_in(answers.get(rid)))
    return RequesterFacts(frozenset(groups), frozenset(entra_roles))


def matched_object(device: Device, answer: dict[str, Any] | None) -> str | None:
    """The one Entra device object whose ``deviceId`` is the device's ``azureADDeviceId``, if exactly one."""
    rows = ok(answer, "devices").get("value", [])
    match = [r for r in rows if str(r.get("deviceId", "")).lower() == device.azure_ad_device_id.lower()]
    return str(match[0]["id"]) if len(match) == 1 else None


def fresh_row(device: Device, answer: dict[str, Any] | None) -> dict[str, Any] | None:
    """The re-read device, or ``None`` when it is gone (or Intune answered with another device)."""
    if answer is not None and int(answer.get("status", 0)) in (400, 404):
        return None
    row = ok(answer, "managedDevice")
    return row if str(row.get("id", "")).lower() == device.id.lower() else None
