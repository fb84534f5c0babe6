"""What an `extract` cache hit costs, whole process, against the interpreter start + imports it cannot avoid.

    python scripts/bench_hit.py [--repeats 3] [--peer DIR]

For each backbone, one miss fills a fresh cache, then `python -m pipeline extract` (the same command) is timed
`--repeats` times as a hit, next to `python -c "import pipeline.cli, pipeline.extract, pipeline.backbones"`.
`--peer DIR` times the same hits with another checkout of the package on PYTHONPATH (e.g. an older commit
exported with `git archive`), in the same run, for a before/after. Prints a table; writes results/bench_hit.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT, report

CASES = [("efficientnet_lite0", "pretrained"), ("seednet_tiny", "random")]


def _seconds(argv: list[str], path: str, repeats: int, cache: str) -> float:
    """Median wall seconds of `repeats` fresh processes running argv with `path` first on PYTHONPATH and
    `cache` as the store and weights directory (where weights digests are recorded)."""
    env = {**os.environ, "PYTHONPATH": path, "PIPELINE_CACHE_DIR": cache}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=600)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer", help="another checkout's root, timed on the same hits")
    args = parser.parse_args()
    imports = [sys.executable, "-c", "import pipeline.cli, pipeline.extract, pipeline.backbones"]
    with tempfile.TemporaryDirectory() as cache:
        results = {"imports_s": _seconds(imports, str(ROOT), args.repeats, cache), "load_average": os.getloadavg()[0]}
    rows = [("backbone, weights", "hit (whole process)", "imports only", "hit / imports")
            + (("peer hit", "peer / this") if args.peer else ())]
    for backbone, weights in CASES:
        with tempfile.TemporaryDirectory() as cache:
            command = [sys.executable, "-m", "pipeline", "extract", "--backbone", backbone, "--weights", weights,
                       "--dataset", "digits", "--limit", "256"]
            _seconds(command, str(ROOT), 1, cache)  # the miss fills the entry (and records the weights digest)
            hit = _seconds(command, str(ROOT), args.repeats, cache)
            row = {"hit_s": hit, "ratio_to_imports": hit / results["imports_s"]}
            if args.peer:
                row["peer_hit_s"] = _seconds(command, args.peer, args.repeats, cache)
        results[f"{backbone}:{weights}"] = row
        rows.append((f"{backbone}, {weights}", f"{hit:.2f} s", f"{results['imports_s']:.2f} s",
                     f"{row['ratio_to_imports']:.2f}x")
                    + ((f"{row['peer_hit_s']:.2f} s", f"{row['peer_hit_s'] / hit:.2f}x") if args.peer else ()))
    report(rows, results, "bench_hit")


if __name__ == "__main__":
    main()
