"""Seed files (YAML) → :class:`TenantState`.

See ``simulator/README.md`` for the format. Seeds may also be given as plain dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .state import ALL_APP_PERMISSIONS, DEFAULT_DEPROVISION_REASONS, JsonDict, TenantState

DEMO_SEED_PATH = Path(__file__).parent / "seeds" / "demo.yaml"

ZERO_GUID = "00000000-0000-0000-0000-000000000000"


def load_seed(path: str | Path | None = None) -> dict[str, Any]:
    """Read a seed YAML file; ``None`` loads the demo school district."""
    with open(path or DEMO_SEED_PATH, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"seed {path!s} must be a mapping")
    return data


def is_chromeos(device: Mapping[str, Any]) -> bool:
    os_name = str(device.get("operatingSystem") or "").replace(" ", "").casefold()
    return os_name == "chromeos" or str(device.get("deviceType") or "") == "chromeOS"


def _managed_device(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> JsonDict:
    """A full beta managedDevice object; seed values override the defaults."""
    merged: dict[str, Any] = {**defaults, **raw}
    serial = str(merged.get("serialNumber", ""))
    device: JsonDict = {
        "@odata.type": "#microsoft.graph.managedDevice",
        "id": merged["id"],
        "userId": merged.get("userId") or "",
        "deviceName": merged["deviceName"],
        "ownerType": merged.get("ownerType", "company"),
        "managedDeviceOwnerType": merged.get("ownerType", "company"),
        "managementState": merged.get("managementState", "managed"),
        "enrolledDateTime": merged.get("enrolledDateTime", "2024-08-15T14:02:11Z"),
        "lastSyncDateTime": merged.get("lastSyncDateTime", "2025-10-01T08:00:00Z"),
        "chassisType": merged.get("chassisType", "unknown"),
        "operatingSystem": merged.get("operatingSystem", "ChromeOS"),
        "deviceType": merged.get("deviceType", "chromeOS"),
        "complianceState": merged.get("complianceState", "unknown"),
        "jailBroken": "Unknown",
        "managementAgent": merged.get("managementAgent", "googleCloudDevicePolicyController"),
        "osVersion": merged.get("osVersion", ""),
        "easActivated": False,
        "easDeviceId": "",
        "easActivationDateTime": "0001-01-01T00:00:00Z",
        "aadRegistered": None,
        "azureADRegistered": None,
        "deviceEnrollmentType": merged.get("deviceEnrollmentType", "unknown"),
        "lostModeState": "disabled",
        "activationLockBypassCode": None,
        "emailAddress": merged.get("emailAddress") or "",
        "azureActiveDirectoryDeviceId": merged.get("azureADDeviceId", ZERO_GUID),
        "azureADDeviceId": merged.get("azureADDeviceId", ZERO_GUID),
        "deviceRegistrationState": merged.get("deviceRegistrationState", "registered"),
        "deviceCategoryDisplayName": merged.get("deviceCategoryDisplayName", ""),
        "isSupervised": False,
        "exchangeLastSuccessfulSyncDateTime": "0001-01-01T00:00:00Z",
        "exchangeAccessState": "none",
        "exchangeAccessStateReason": "none",
        "remoteAssistanceSessionUrl": None,
        "remoteAssistanceSessionErrorDetails": None,
        "isEncrypted": bool(merged.get("isEncrypted", True)),
        "userPrincipalName": merged.get("userPrincipalName") or "",
        "model": merged.get("model", ""),
        "manufacturer": merged.get("manufacturer", ""),
        "imei": "",
        "complianceGracePeriodExpirationDateTime": "9999-12-31T23:59:59Z",
        "serialNumber": serial,
        "phoneNumber": "",
        "androidSecurityPatchLevel": "",
        "userDisplayName": merged.get("userDisplayName") or "",
        "wiFiMacAddress": merged.get("wiFiMacAddress", ""),
        "subscriberCarrier": "",
        "meid": "",
        "totalStorageSpaceInBytes": int(merged.get("totalStorageSpaceInBytes", 0)),
        "freeStorageSpaceInBytes": int(merged.get("freeStorageSpaceInBytes", 0)),
        "managedDeviceName": merged.get("managedDeviceName", f"{merged['deviceName']}_ChromeOS_{serial}"),
        "partnerReportedThreatState": "unknown",
        "retireAfterDateTime": "0001-01-01T00:00:00Z",
        "autopilotEnrolled": False,
        "requireUserEnrollmentApproval": None,
        "managementCertificateExpirationDate": "0001-01-01T00:00:00Z",
        "iccid": None,
        "udid": None,
        "roleScopeTagIds": list(merged.get("roleScopeTagIds") or []),
        "notes": merged.get("notes"),
        "ethernetMacAddress": None,
        "physicalMemoryInBytes": int(merged.get("physicalMemoryInBytes", 0)),
        "processorArchitecture": merged.get("processorArchitecture", "unknown"),
        "joinType": merged.get("joinType", "unknown"),
        "skuFamily": "",
        "skuNumber": 0,
        "managementFeatures": "none",
        "enrollmentProfileName": merged.get("enrollmentProfileName"),
        "chromeOSDeviceInfo": [],
        "deviceActionResults": copy.deepcopy(list(merged.get("deviceActionResults") or [])),
    }
    info = merged.get("chromeOSDeviceInfo")
    if info is not None:
        device["chromeOSDeviceInfo"] = copy.deepcopy(list(info))
    elif is_chromeos(device):
        device["chromeOSDeviceInfo"] = _chromeos_info(merged)
    return device


def _prop(name: str, value: Any, value_type: str = "string", updatable: bool = False) -> JsonDict:
    return {"name": name, "value": value, "valueType": value_type, "updatable": updatable}


def _chromeos_info(d: Mapping[str, Any]) -> list[JsonDict]:
    """chromeOSDeviceInfo properties. Names are UNVERIFIED (modelled on Google's device fields)."""
    return [
        _prop("deviceStatus", str(d.get("deviceStatus", "Active"))),
        _prop("orgUnitPath", str(d.get("enrollmentProfileName") or "/")),
        _prop("annotatedAssetId", str(d.get("annotatedAssetId", "")), updatable=True),
        _prop("annotatedLocation", str(d.get("annotatedLocation", "")), updatable=True),
        _prop("model", str(d.get("model", ""))),
        _prop("osVersion", str(d.get("osVersion", ""))),
        _prop("platformVersion", str(d.get("platformVersion", ""))),
        _prop("firmwareVersion", str(d.get("firmwareVersion", ""))),
        _prop("bootMode", str(d.get("bootMode", "Verified"))),
        _prop("autoUpdateExpiration", str(d.get("autoUpdateExpiration", "")), "dateTime"),
        _prop("lastEnrollmentTime", str(d.get("enrolledDateTime", "")), "dateTime"),
    ]


def _role_permissions(raw: Mapping[str, Any]) -> list[JsonDict]:
    if "rolePermissions" in raw:
        return copy.deepcopy(list(raw["rolePermissions"]))
    return [
        {
            "actions": list(raw.get("actions") or []),
            "resourceActions": [
                {
                    "allowedResourceActions": list(raw.get("allowed") or []),
                    "notAllowedResourceActions": list(raw.get("not_allowed") or []),
                }
            ],
        }
    ]


def build_state(seed: Mapping[str, Any]) -> TenantState:
    """Turn a seed mapping into a fresh :class:`TenantState` (the seed is not modified)."""
    seed = copy.deepcopy(dict(seed))
    tenant = seed.get("tenant") or {}
    app = seed.get("app") or {}
    state = TenantState(
        tenant_id=str(tenant["id"]),
        tenant_name=str(tenant.get("display_name", "Contoso")),
        domain=str(tenant.get("domain", "contoso.edu")),
        client_id=str(app["client_id"]),
        client_secret=str(app["client_secret"]),
        app_display_name=str(app.get("display_name", "ChromeOS Deprovision Bot")),
        certificate_thumbprint=app.get("certificate_thumbprint"),
        app_permissions=set(app.get("app_permissions") or ALL_APP_PERMISSIONS),
        accepted_deprovision_reasons=list(seed.get("accepted_deprovision_reasons") or DEFAULT_DEPROVISION_REASONS),
    )
    for u in seed.get("users") or []:
        upn = u.get("userPrincipalName") or f"user{len(state.users)}@{state.domain}"
        state.users[u["id"]] = {
            "id": u["id"],
            "displayName": u.get("displayName", upn),
            "userPrincipalName": upn,
            "mail": u.get("mail", upn),
            "givenName": u.get("givenName"),
            "surname": u.get("surname"),
            "jobTitle": u.get("jobTitle"),
            "officeLocation": u.get("officeLocation"),
            "businessPhones": [],
            "mobilePhone": None,
            "preferredLanguage": "en-US",
        }
    for g in seed.get("groups") or []:
        state.groups[g["id"]] = {
            "id": g["id"],
            "displayName": g["displayName"],
            "description": g.get("description"),
            "groupTypes": list(g.get("groupTypes") or []),
            "mailEnabled": bool(g.get("mailEnabled", False)),
            "mailNickname": g.get("mailNickname", g["displayName"].replace(" ", "")[:60]),
            "securityEnabled": bool(g.get("securityEnabled", True)),
            "isAssignableToRole": g.get("isAssignableToRole"),
            "members": list(g.get("members") or []),
        }
    for ed in seed.get("entra_devices") or []:
        state.entra_devices[ed["id"]] = _entra_device(ed)
    defaults = seed.get("managed_device_defaults") or {}
    for raw in seed.get("managed_devices") or []:
        device = _managed_device(raw, defaults)
        user = state.users.get(device["userId"]) if device["userId"] else None
        if user is not None:
            device["userPrincipalName"] = device["userPrincipalName"] or user["userPrincipalName"]
            device["userDisplayName"] = device["userDisplayName"] or user["displayName"]
            device["emailAddress"] = device["emailAddress"] or user["mail"]
        state.devices[device["id"]] = device
        entra_id = raw.get("entraObjectId")
        if entra_id and entra_id not in state.entra_devices:
            state.entra_devices[entra_id] = _entra_device(
                {
                    "id": entra_id,
                    "deviceId": device["azureADDeviceId"],
                    "displayName": device["deviceName"],
                    "operatingSystem": device["operatingSystem"],
                    "operatingSystemVersion": device["osVersion"],
                }
            )
    for t in seed.get("role_scope_tags") or [{"id": "0", "displayName": "Default", "isBuiltIn": True}]:
        tid = str(t["id"])
        state.role_scope_tags[tid] = {
            "@odata.type": "#microsoft.graph.roleScopeTag",
            "id": tid,
            "displayName": t["displayName"],
            "description": t.get("description", ""),
            "isBuiltIn": bool(t.get("isBuiltIn", False)),
        }
    for rd in seed.get("role_definitions") or []:
        perms = _role_permissions(rd)
        built_in = bool(rd.get("isBuiltIn", False))
        state.role_definitions[rd["id"]] = {
            "@odata.type": "#microsoft.graph.deviceAndAppManagementRoleDefinition",
            "id": rd["id"],
            "displayName": rd["displayName"],
            "description": rd.get("description", ""),
            "permissions": perms,
            "rolePermissions": copy.deepcopy(perms),
            "isBuiltInRoleDefinition": built_in,
            "isBuiltIn": built_in,
            "roleScopeTagIds": [str(x) for x in rd.get("roleScopeTagIds") or ["0"]],
        }
    for ra in seed.get("role_assignments") or []:
        resource_scopes = list(ra.get("resourceScopes") or [])
        state.role_assignments[ra["id"]] = {
            "@odata.type": "#microsoft.graph.deviceAndAppManagementRoleAssignment",
            "id": ra["id"],
            "displayName": ra["displayName"],
            "description": ra.get("description", ""),
            "scopeMembers": list(ra.get("scopeMembers", resource_scopes)),
            "scopeType": ra.get("scopeType", "resourceScope"),
            "resourceScopes": resource_scopes,
            "members": list(ra.get("members") or []),
            "roleScopeTagIds": [str(x) for x in ra.get("roleScopeTagIds") or []],
            "roleDefinitionId": ra["roleDefinitionId"],
        }
    for raw_audit in seed.get("remote_action_audits") or []:
        audit = remote_action_audit(raw_audit, state.devices.get(str(raw_audit.get("managedDeviceId", ""))))
        state.remote_action_audits[audit["id"]] = audit
    for dr in seed.get("directory_role_definitions") or []:
        state.directory_role_definitions[dr["id"]] = {
            "id": dr["id"],
            "displayName": dr["displayName"],
            "description": dr.get("description", ""),
            "isBuiltIn": True,
            "isEnabled": True,
            "templateId": dr["id"],
        }
    for da in seed.get("directory_role_assignments") or []:
        state.directory_role_assignments[da["id"]] = {
            "id": da["id"],
            "principalId": da["principalId"],
            "roleDefinitionId": da["roleDefinitionId"],
            "directoryScopeId": da.get("directoryScopeId", "/"),
        }
    return state


def remote_action_audit(raw: Mapping[str, Any], device: Mapping[str, Any] | None) -> JsonDict:
    """A full ``remoteActionAudit`` row; device fields are filled from ``device`` when not given."""
    dev = device or {}
    initiated_by = raw.get("initiatedByUserPrincipalName", raw.get("userName", ""))
    return {
        "@odata.type": "#microsoft.graph.remoteActionAudit",
        "id": str(raw["id"]),
        "deviceDisplayName": raw.get("deviceDisplayName", dev.get("deviceName", "")),
        "userName": raw.get("userName", initiated_by),
        "initiatedByUserPrincipalName": initiated_by,
        "action": str(raw.get("action", "deprovision")),
        "requestDateTime": str(raw["requestDateTime"]),
        "deviceOwnerUserPrincipalName": raw.get("deviceOwnerUserPrincipalName", dev.get("userPrincipalName") or ""),
        "deviceIMEI": raw.get("deviceIMEI", dev.get("imei") or ""),
        "actionState": str(raw.get("actionState", "done")),
        "managedDeviceId": str(raw.get("managedDeviceId", dev.get("id", ""))),
        "deviceActionDetails": copy.deepcopy(list(raw.get("deviceActionDetails") or [])),
        "deviceActionCategory": raw.get("deviceActionCategory", "single"),
        "bulkDeviceActionId": raw.get("bulkDeviceActionId"),
    }


def _entra_device(raw: Mapping[str, Any]) -> JsonDict:
    return {
        "id": raw["id"],
        "deviceId": raw["deviceId"],
        "displayName": raw.get("displayName", ""),
        "operatingSystem": raw.get("operatingSystem", ""),
        "operatingSystemVersion": raw.get("operatingSystemVersion", ""),
        "accountEnabled": bool(raw.get("accountEnabled", True)),
        "trustType": raw.get("trustType", "Workplace"),
        "isManaged": True,
    }
