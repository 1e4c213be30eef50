"""Value types that several layers need (RBAC decides, messages word it, cards show it). No imports from ``bot/``.

Importing this module — and so :mod:`bot.messages` and ``cards/`` — never imports the Graph client or httpx.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class DenyReason(enum.StrEnum):
    NO_ROLE = "no_role_with_retire"
    NOT_ALLOWED = "action_not_allowed"
    MISSING_READ = "role_lacks_managed_devices_read"
    OUT_OF_SCOPE_GROUPS = "device_not_in_scope_groups"
    OUT_OF_SCOPE_TAGS = "device_outside_scope_tags"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: DenyReason | None = None
    basis: str = ""  # "entra_role" | "intune_role"
    assignment_id: str = ""
    assignment_name: str = ""
    role_id: str = ""
    role_name: str = ""
    entra_role_id: str = ""
    roles_held: tuple[str, ...] = ()
    device_tags: tuple[str, ...] = ()
    assignment_tags: tuple[str, ...] = ()

    def audit(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v}
