"""A deterministic producer for store tests; run as a script it is the process the kill -9 test kills.

Usage: python store_writer_script.py ROOT BATCH_SIZE SLEEP_S
Every 7th source item (position % 7 == 3) is skipped, so resuming must also restore the skipped list.
"""

import sys
import time
import types
from pathlib import Path

import numpy as np

if __name__ == "__main__" and "pipeline" not in sys.modules:
    # Load the store without running pipeline/__init__ (which starts JAX): the store needs none of it,
    # and the killed process should spend its time writing, not importing.
    package = types.ModuleType("pipeline")
    package.__path__ = [str(Path(__file__).resolve().parents[1] / "pipeline")]
    sys.modules["pipeline"] = package

from pipeline.store import Entry, FeatureStore, TapSpec  # noqa: E402

KEY = {"backbone": "seednet", "weights": "abc123", "taps": ["stem", "head"], "pool": "avg",
       "preprocessing": {"size": 8, "mean": [0.5, 0.5, 0.5]}, "dtype": "float32", "dataset": "digits",
       "fingerprint": "f00d", "split": "train", "subset": None}
TAPS = {"stem": TapSpec((2, 2, 3), "float32", 2, {"channels": 3}), "head": TapSpec((5,), "float32", None)}
CLASS_NAMES = ["zero", "one", "two"]
N_SOURCE = 40


def source_items(start: int, stop: int) -> tuple[dict[str, np.ndarray], np.ndarray, list[str], list[tuple[str, str]]]:
    """Source positions [start, stop) as (features, labels, ids, skipped), a pure function of position."""
    keep = [p for p in range(start, stop) if p % 7 != 3]
    skipped = [(f"img{p:03d}", "undecodable") for p in range(start, stop) if p % 7 == 3]
    pos = np.array(keep, dtype=np.float32)
    stem = np.sin(pos[:, None] * np.arange(1, 13, dtype=np.float32)).reshape(-1, 2, 2, 3)
    head = np.cos(pos[:, None] * 0.37 + np.arange(5, dtype=np.float32)).astype(np.float32)
    return {"stem": stem, "head": head}, np.array([p % 3 for p in keep]), [f"img{p:03d}" for p in keep], skipped


def produce(store: FeatureStore, batch_size: int, sleep_s: float = 0.0, stop_after: int | None = None,
            compression: str | None = None) -> Entry | None:
    """Append the source from where the store left off; return the committed Entry (None if stopped early)."""
    with store.writer(KEY, TAPS, class_names=CLASS_NAMES, compression=compression, timeout=30) as w:
        if w.complete:
            return w.entry
        pos, appended = w.n_consumed, 0
        while pos < N_SOURCE:
            stop = min(pos + batch_size, N_SOURCE)
            features, labels, ids, skipped = source_items(pos, stop)
            w.append(features, labels, ids, skipped=skipped)
            pos, appended = stop, appended + 1
            print(f"appended {w.n_done}", flush=True)
            if stop_after is not None and appended >= stop_after:
                return None
            time.sleep(sleep_s)
        return w.commit()


if __name__ == "__main__":
    produce(FeatureStore(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
