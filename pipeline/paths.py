"""Default locations shared by the commands."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PIPELINE_CACHE_DIR"


def cache_dir() -> Path:
    """The feature store: $PIPELINE_CACHE_DIR if set, else ./cache."""
    return Path(os.environ.get(CACHE_ENV) or "cache")
