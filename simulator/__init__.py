"""Simulated Microsoft cloud for the ChromeOS deprovision bot: Entra sign-in + Graph/Intune.

See ``simulator/README.md``.
"""

from .control import Call, Control, Fault, TokenRequest
from .seed import DEMO_SEED_PATH, build_state, load_seed
from .server import Simulator
from .state import TenantState

__all__ = [
    "DEMO_SEED_PATH",
    "Call",
    "Control",
    "Fault",
    "Simulator",
    "TenantState",
    "TokenRequest",
    "build_state",
    "load_seed",
]
