"""The mutable in-memory tenant: Entra directory objects and Intune data.

Records are stored as the JSON-like dicts Graph returns (so tests can edit them
directly); the few simulator-private keys are documented on each field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
BOTFRAMEWORK_RESOURCE = "https://api.botframework.com"

ALL_APP_PERMISSIONS: tuple[str, ...] = (
    "DeviceManagementManagedDevices.Read.All",
    "DeviceManagementManagedDevices.PrivilegedOperations.All",
    "DeviceManagementManagedDevices.ReadWrite.All",
    "DeviceManagementConfiguration.Read.All",
    "DeviceManagementRBAC.Read.All",
    "GroupMember.Read.All",
    "User.Read.All",
    "Device.Read.All",
    "RoleManagement.Read.Directory",
    "Directory.Read.All",
)

DEFAULT_DEPROVISION_REASONS: tuple[str, ...] = (
    "same_model_replacement",
    "different_model_replacement",
    "retiring_device",
    "upgrade_transfer",
)


@dataclass
class TenantState:
    """Everything a Graph request can read or change.

    - ``devices``: Intune managedDevice objects by id (full beta shape).
    - ``entra_devices``: Entra device objects by object id (``id``, ``deviceId``, ...).
    - ``groups``: Entra groups by id; ``members`` is a list of object ids (users,
      Entra device object ids or groups).
    - ``role_assignments``: Intune role assignments by id; the private key
      ``roleDefinitionId`` links the definition and is never serialised.
    - ``directory_role_assignments``: Entra unifiedRoleAssignment rows by id.
    - ``remote_action_audits``: Intune ``remoteActionAudit`` rows by id, oldest first (insertion order).
    """

    tenant_id: str
    tenant_name: str
    domain: str
    client_id: str
    client_secret: str
    app_display_name: str = "ChromeOS Deprovision Bot"
    certificate_thumbprint: str | None = None
    app_permissions: set[str] = field(default_factory=lambda: set(ALL_APP_PERMISSIONS))
    accepted_deprovision_reasons: list[str] = field(default_factory=lambda: list(DEFAULT_DEPROVISION_REASONS))
    users: dict[str, JsonDict] = field(default_factory=dict)
    groups: dict[str, JsonDict] = field(default_factory=dict)
    entra_devices: dict[str, JsonDict] = field(default_factory=dict)
    devices: dict[str, JsonDict] = field(default_factory=dict)
    role_scope_tags: dict[str, JsonDict] = field(default_factory=dict)
    role_definitions: dict[str, JsonDict] = field(default_factory=dict)
    role_assignments: dict[str, JsonDict] = field(default_factory=dict)
    directory_role_definitions: dict[str, JsonDict] = field(default_factory=dict)
    directory_role_assignments: dict[str, JsonDict] = field(default_factory=dict)
    remote_action_audits: dict[str, JsonDict] = field(default_factory=dict)

    # -- lookups -----------------------------------------------------------------

    def find_user(self, key: str) -> JsonDict | None:
        """A user by object id or userPrincipalName (case-insensitive), as Graph allows."""
        if key in self.users:
            return self.users[key]
        folded = key.casefold()
        for user in self.users.values():
            if user["id"].casefold() == folded or user["userPrincipalName"].casefold() == folded:
                return user
        return None

    def direct_groups(self, object_id: str) -> set[str]:
        return {gid for gid, g in self.groups.items() if object_id in g.get("members", ())}

    def transitive_groups(self, object_id: str) -> set[str]:
        """Ids of every group that contains ``object_id`` directly or through nested groups."""
        seen: set[str] = set()
        frontier = self.direct_groups(object_id)
        while frontier:
            gid = frontier.pop()
            if gid in seen:
                continue
            seen.add(gid)
            frontier |= self.direct_groups(gid) - seen
        return seen

    def object_exists(self, object_id: str) -> bool:
        return object_id in self.users or object_id in self.groups or object_id in self.entra_devices

    def grant(self, permissions: Iterable[str]) -> None:
        self.app_permissions |= set(permissions)

    def revoke(self, permissions: Iterable[str]) -> None:
        self.app_permissions -= set(permissions)

    def copy(self) -> TenantState:
        return copy.deepcopy(self)
