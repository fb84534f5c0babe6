"""Default locations shared by the commands."""

from __future__ import annotations

import os
import time
from pathlib import Path

CACHE_ENV = "PIPELINE_CACHE_DIR"


def cache_dir() -> Path:
    """The feature store: $PIPELINE_CACHE_DIR if set, else ./cache."""
    return Path(os.environ.get(CACHE_ENV) or "cache")


def run_dir(name: str, root: str | Path = "runs") -> Path:
    """<root>/<UTC timestamp YYYYmmdd-HHMMSS>-<name>, the default output directory of every run (one clock: UTC)."""
    return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{name}"
