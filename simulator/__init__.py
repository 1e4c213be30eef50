"""Simulated Microsoft cloud for the ChromeOS deprovision bot: Entra sign-in + Graph/Intune.

See ``simulator/README.md``.
"""

from .control import ACTION_OUTCOMES, INTUNE_WRITE_LIMIT, ActionOutcome, Call, Control, Fault, TokenRequest
from .seed import DEMO_SEED_PATH, build_state, load_seed
from .server import Simulator
from .state import TenantState

__all__ = [
    "ACTION_OUTCOMES",
    "DEMO_SEED_PATH",
    "INTUNE_WRITE_LIMIT",
    "ActionOutcome",
    "Call",
    "Control",
    "Fault",
    "Simulator",
    "TenantState",
    "TokenRequest",
    "build_state",
    "load_seed",
]
