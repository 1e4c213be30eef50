"""Switchable failure modes and the call log (what tests assert on)."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_STATUSES = frozenset({400, 403, 404, 409, 429, 500, 502, 503, 504})

DEFAULTS: dict[str, Any] = {
    "latency": 0.0,
    "ignore_filters": False,
    "write_limit": None,
    "token_ttl": 3599,
    "action_completion_delay": 2.0,
    "intune_error_envelope": True,
}


@dataclass
class Fault:
    """One queued failure. ``path`` is a regex searched in the request path (no query).

    Only ``delay`` (no status, no drop) = a slow but normal answer.
    """

    path: str = ""
    method: str | None = None
    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    after_apply: bool = False
    count: int = 1
    code: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not self.drop and self.status is None and self.delay <= 0:
            raise ValueError("a fault needs status=, drop=True or delay=")
        if self.status is not None and self.status not in FAULT_STATUSES:
            raise ValueError(f"fault status {self.status} not one of {sorted(FAULT_STATUSES)}")
        if self.count < 1:
            raise ValueError("fault count must be >= 1")
        re.compile(self.path)  # fail early on a bad regex

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return re.search(self.path, path) is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Call:
    """One Graph request as the simulator saw it (sub-requests of a $batch carry ``batch_id``)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int
    headers: dict[str, str]
    batch_id: str | None = None
    request_id: str = ""
    time: float = field(default_factory=time.time)
    fault: bool = False
    handled_status: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenRequest:
    client_id: str
    scope: str
    grant_type: str
    tenant: str
    status: int
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Control:
    """Knobs and logs. ``reset()`` restores the knobs and clears logs and faults (not the tenant)."""

    latency: float
    ignore_filters: bool
    write_limit: tuple[int, float] | None
    token_ttl: int
    action_completion_delay: float
    intune_error_envelope: bool

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.token_requests: list[TokenRequest] = []
        self.write_times: deque[float] = deque()
        self._set_defaults()

    def _set_defaults(self) -> None:
        for key, value in DEFAULTS.items():
            setattr(self, key, value)

    def reset(self) -> None:
        self._set_defaults()
        self.faults.clear()
        self.calls.clear()
        self.token_requests.clear()
        self.write_times.clear()

    def add_fault(
        self,
        method: str | None = None,
        path: str = "",
        status: int | None = None,
        *,
        retry_after: float | None = None,
        delay: float = 0.0,
        drop: bool = False,
        after_apply: bool = False,
        count: int = 1,
        code: str | None = None,
        message: str | None = None,
    ) -> Fault:
        fault = Fault(
            path=path,
            method=method,
            status=status,
            retry_after=retry_after,
            delay=delay,
            drop=drop,
            after_apply=after_apply,
            count=count,
            code=code,
            message=message,
        )
        self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first queued fault matching the request, consuming one of its ``count``."""
        for fault in self.faults:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def write_allowed(self, now: float) -> float | None:
        """None if a write may proceed (and count it); else seconds until the window frees up."""
        if self.write_limit is None:
            return None
        limit, window = self.write_limit
        while self.write_times and self.write_times[0] <= now - window:
            self.write_times.popleft()
        if len(self.write_times) >= limit:
            return max(0.001, self.write_times[0] + window - now)
        self.write_times.append(now)
        return None

    def apply_json(self, data: Mapping[str, Any]) -> None:
        """Apply a ``POST /_sim/control`` body (``reset`` first, then the other keys)."""
        if data.get("reset"):
            self.reset()
        for key in ("latency", "action_completion_delay"):
            if key in data:
                setattr(self, key, float(data[key]))
        for key in ("ignore_filters", "intune_error_envelope"):
            if key in data:
                setattr(self, key, bool(data[key]))
        if "token_ttl" in data:
            self.token_ttl = int(data["token_ttl"])
        if "write_limit" in data:
            wl = data["write_limit"]
            self.write_limit = None if wl is None else (int(wl[0]), float(wl[1]))
        for spec in data.get("faults") or []:
            self.add_fault(**spec)

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "ignore_filters": self.ignore_filters,
            "write_limit": list(self.write_limit) if self.write_limit else None,
            "token_ttl": self.token_ttl,
            "action_completion_delay": self.action_completion_delay,
            "intune_error_envelope": self.intune_error_envelope,
            "faults": [f.to_json() for f in self.faults],
        }
