"""Runs one extraction (used by the kill -9 test): python extract_script.py CACHE_DIR SLEEP_PER_BATCH."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.extract import extract  # noqa: E402

ARGS = dict(backbone="efficientnet_lite_tiny", dataset="digits", taps=["block3", "pool"], weights="random",
            split="trainval", limit=256, pool="none", batch_size=16)

if __name__ == "__main__":
    cache_dir, pause = sys.argv[1], float(sys.argv[2])
    result = extract(**ARGS, cache_dir=cache_dir, progress=lambda done, total: time.sleep(pause))
    print("hit" if result.hit else f"computed {result.computed}")
