"""Switchable failure modes and the call log (what tests assert on)."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_STATUSES = frozenset({400, 403, 404, 409, 429, 500, 502, 503, 504})

#: Intune device service, per app per tenant: 200 POST/PUT/PATCH/DELETE per 20 s (graph-intune.md §10).
INTUNE_WRITE_LIMIT: tuple[int, float] = (200, 20.0)

#: How a remote action (deprovision, disable, reenable) ends: ``never`` = stays ``pending`` for ever.
ACTION_OUTCOMES = ("done", "failed", "never")

DEFAULT_ACTION_ERROR = (
    "The Chrome Enterprise connector reported a failure: Google Admin console rejected the request "
    "(device not found in the connected Google domain)."
)

DEFAULTS: dict[str, Any] = {
    "latency": 0.0,
    "ignore_filters": False,
    "ignore_audit_filters": False,
    "write_limit": None,
    "token_ttl": 3599,
    "action_completion_delay": 2.0,
    "action_outcome": "done",
    "action_error": DEFAULT_ACTION_ERROR,
    "audit_initiated_by": None,
    "chrome_status_property": "deviceStatus",
    "deprovisioned_status": "Deprovisioned",
    "intune_error_envelope": True,
}


@dataclass
class ActionOutcome:
    """How remote actions on one device end (``None`` fields fall back to the global knobs)."""

    outcome: str | None = None
    delay: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in ACTION_OUTCOMES:
            raise ValueError(f"action outcome {self.outcome!r} not one of {list(ACTION_OUTCOMES)}")
        if self.delay is not None and self.delay < 0:
            raise ValueError("action delay must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
    ignore_audit_filters: bool
    write_limit: tuple[int, float] | None
    token_ttl: int
    action_completion_delay: float
    action_outcome: str
    action_error: str
    audit_initiated_by: str | None
    chrome_status_property: str
    deprovisioned_status: str
    intune_error_envelope: bool

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self.token_requests: list[TokenRequest] = []
        self.write_times: deque[float] = deque()
        self.device_outcomes: dict[str, ActionOutcome] = {}
        #: Added to :attr:`time_source` by :meth:`now`; only ever grows (see ``Simulator.advance_clock``).
        self.clock_offset = 0.0
        #: Injectable wall clock (epoch seconds); e.g. ``lambda: t0`` freezes time for a test. Not reset.
        self.time_source: Callable[[], float] = time.time
        self._set_defaults()

    def now(self) -> float:
        """The simulator's clock (epoch seconds): action completion, audit timestamps, the write window."""
        return self.time_source() + self.clock_offset

    def _set_defaults(self) -> None:
        for key, value in DEFAULTS.items():
            setattr(self, key, value)

    def reset(self) -> None:
        """Knobs back to :data:`DEFAULTS`; faults, logs, per-device outcomes cleared (not the clock offset)."""
        self._set_defaults()
        self.faults.clear()
        self.calls.clear()
        self.token_requests.clear()
        self.write_times.clear()
        self.device_outcomes.clear()

    def set_device_outcome(
        self,
        device_id: str,
        outcome: str | None = None,
        *,
        delay: float | None = None,
        error: str | None = None,
    ) -> ActionOutcome:
        """Remote actions started on ``device_id`` from now on end with ``outcome`` after ``delay`` seconds."""
        self.device_outcomes[device_id.casefold()] = spec = ActionOutcome(outcome, delay, error)
        return spec

    def clear_device_outcome(self, device_id: str) -> None:
        self.device_outcomes.pop(device_id.casefold(), None)

    def outcome_for(self, device_id: str) -> tuple[str, float, str]:
        """``(outcome, delay, error)`` for an action started now on ``device_id``."""
        spec = self.device_outcomes.get(device_id.casefold(), ActionOutcome())
        outcome = spec.outcome or self.action_outcome
        if outcome not in ACTION_OUTCOMES:
            raise ValueError(f"action outcome {outcome!r} not one of {list(ACTION_OUTCOMES)}")
        delay = self.action_completion_delay if spec.delay is None else spec.delay
        return outcome, float(delay), spec.error or self.action_error

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

    def write_allowed(self, now: float | None = None) -> float | None:
        """None if a write may proceed (and count it); else seconds until the window frees up.

        A refused write is not counted (Graph keeps counting them; the simulator stays simple).
        """
        if self.write_limit is None:
            return None
        now = self.now() if now is None else now
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
        for key in ("ignore_filters", "ignore_audit_filters", "intune_error_envelope"):
            if key in data:
                setattr(self, key, bool(data[key]))
        if "token_ttl" in data:
            self.token_ttl = int(data["token_ttl"])
        if "write_limit" in data:
            wl = data["write_limit"]
            if wl is True:
                self.write_limit = INTUNE_WRITE_LIMIT
            elif wl is None or wl is False:
                self.write_limit = None
            else:
                self.write_limit = (int(wl[0]), float(wl[1]))
        if "action_outcome" in data:
            outcome = str(data["action_outcome"])
            if outcome not in ACTION_OUTCOMES:
                raise ValueError(f"action_outcome {outcome!r} not one of {list(ACTION_OUTCOMES)}")
            self.action_outcome = outcome
        for key in ("action_error", "chrome_status_property", "deprovisioned_status"):
            if key in data:
                setattr(self, key, str(data[key]))
        if "audit_initiated_by" in data:
            value = data["audit_initiated_by"]
            self.audit_initiated_by = None if value is None else str(value)
        for device_id, spec in (data.get("device_outcomes") or {}).items():
            if spec is None:
                self.clear_device_outcome(str(device_id))
            else:
                self.set_device_outcome(
                    str(device_id),
                    spec.get("outcome"),
                    delay=None if spec.get("delay") is None else float(spec["delay"]),
                    error=spec.get("error"),
                )
        for spec in data.get("faults") or []:
            self.add_fault(**spec)

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "ignore_filters": self.ignore_filters,
            "ignore_audit_filters": self.ignore_audit_filters,
            "write_limit": list(self.write_limit) if self.write_limit else None,
            "token_ttl": self.token_ttl,
            "action_completion_delay": self.action_completion_delay,
            "action_outcome": self.action_outcome,
            "action_error": self.action_error,
            "device_outcomes": {k: v.to_json() for k, v in self.device_outcomes.items()},
            "audit_initiated_by": self.audit_initiated_by,
            "chrome_status_property": self.chrome_status_property,
            "deprovisioned_status": self.deprovisioned_status,
            "clock_offset": self.clock_offset,
            "intune_error_envelope": self.intune_error_envelope,
            "faults": [f.to_json() for f in self.faults],
        }
