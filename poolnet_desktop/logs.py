"""Logging for both entry points: ``-v`` for progress, ``-vv`` for debug, or ``POOLNET_LOG``."""

from __future__ import annotations

import logging
import os


def configure_logging(verbosity: int) -> None:
    """Warnings by default; websockets' per-connection chatter only at debug level."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(
        level=os.environ.get("POOLNET_LOG", level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if verbosity < 2:
        logging.getLogger("websockets").setLevel(logging.WARNING)
