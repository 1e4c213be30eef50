"""Pure functions that build Adaptive Cards (plain dicts, version ≤ 1.5). No I/O, no clock, no globals."""
