"""Default locations shared by the commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

CACHE_ENV = "PIPELINE_CACHE_DIR"


def cache_dir() -> Path:
    """The feature store: $PIPELINE_CACHE_DIR if set, else ./cache."""
    return Path(os.environ.get(CACHE_ENV) or "cache")


def run_dir(name: str, root: str | Path = "runs") -> Path:
    """<root>/<UTC timestamp YYYYmmdd-HHMMSS>-<name>, the default output directory of every run (one clock: UTC)."""
    return Path(root) / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{name}"


def claim_settings(path: Path, settings: dict[str, Any], holds: str, resume: str) -> None:
    """Record `settings` as JSON at `path`, or check they equal the ones recorded there: an output
    directory resumes only the work it was started with. ValueError naming the settings that differ."""
    current = json.loads(json.dumps(settings, default=str))
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
        if changed:
            raise ValueError(f"{path.parent} holds {holds} with other settings ({', '.join(changed)} differ); "
                             f"rerun with the same {resume} to resume, or pass another --out")
    else:
        path.write_text(json.dumps(current, indent=2))
