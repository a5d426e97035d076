"""Logging for both entry points: ``-v`` for progress, ``-vv`` for debug, or ``POOLNET_LOG``;
and, for the processes that share this computer, a rotating log file in the data folder."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from poolnet_desktop import __version__

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FOLDER = "logs"
LOG_FILE = "poolnet.log"
_FILE_LEVEL = logging.INFO


def configure_logging(verbosity: int) -> None:
    """Warnings on stderr by default; websockets' per-connection chatter only at debug level."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=os.environ.get("POOLNET_LOG", level), format=FORMAT)
    if verbosity < 2:
        logging.getLogger("websockets").setLevel(logging.WARNING)


def log_to_file(data_dir: Path, program: str) -> Path:
    """Keep INFO and above in ``DATA_DIR/logs/poolnet.log`` as well, rotated at 1 MB, four kept.

    A windowed build has no stderr: without a file, every warning of the app is lost. The
    console keeps the level ``configure_logging`` gave it. Returns the log folder.
    """
    folder = data_dir / LOG_FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        folder / LOG_FILE, maxBytes=1_000_000, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(_FILE_LEVEL)
    root = logging.getLogger()
    if root.level > _FILE_LEVEL:
        for console in root.handlers:
            console.setLevel(max(console.level, root.level))
        root.setLevel(_FILE_LEVEL)
    root.addHandler(handler)
    logging.getLogger(__name__).info("%s %s started (process %d)", program, __version__, os.getpid())
    return folder
