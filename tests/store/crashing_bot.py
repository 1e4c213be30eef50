"""Test launcher: the real bot (``app.py serve``) killed with SIGKILL-like ``os._exit(137)`` at a named point.

``BOT_TEST_CRASH_POINT`` names the point (``before_graph``, ``after_graph``); the production code only calls a
checkpoint there, which does nothing unless a launcher such as this one injects it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import app
from bot.logs import configure_logging


def main() -> None:
    point = os.environ["BOT_TEST_CRASH_POINT"]

    def checkpoint(name: str) -> None:
        if name == point:
            logging.getLogger("bot").error("test crash point reached", extra={"point": point})
            os._exit(137)

    settings = app.settings_or_exit()
    configure_logging(settings.log_format, settings.log_level, settings.secrets())
    app.serve(settings, checkpoint=checkpoint)


if __name__ == "__main__":
    main()
