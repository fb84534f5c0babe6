"""One extraction through the local engine and through Ray (1 and 2 workers), side by side in one run.

    python scripts/bench_scale.py [--quick] [--n N]

EfficientNet-Lite0 (ImageNet weights), 224 px, avg-pooled `pool` features of N Fashion-MNIST train
images, batch 32, each engine in a fresh interpreter with an empty cache. Per engine:
  - start-up: from the call to the first stored batch (loading, fingerprinting, compiling; for Ray also
    starting the instance and its actors); Ray's fixed cost is its start-up minus the local one;
  - img/s after start-up: rows stored after the first batch / time from the first to the last stored
    batch (a watcher thread polls the entry's shard files every 50 ms);
  - peak memory: the largest sum of RSS over the driver and every process under it (Ray's GCS, raylet,
    actors and task workers; pages of Ray's shared object store count once per process that maps them);
  - whether the entry is bit-identical to the local engine's.
The last run joins a Ray instance started beforehand (`ray start --head`, as on a cluster), so its
start-up has no instance start in it. Each engine keeps JAX's compiled programs in its own directory (the compile cache the commands use; Ray
workers get it too). The runs marked "compiled on disk" repeat an engine with its directory already
filled by the run before: a second extraction with the same backbone, resolution and batch, as users make.
Prints a table with ratios against the local engine and the CPU model, writes results/bench_scale.json.
The machine may be shared: the 1-minute load average before and after each run is recorded too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from benchlib import parse_args, report, run_worker, spawn

from pipeline.cluster.engine import LOCAL_OBJECT_STORE_MB, local_system_config

BATCH = 32


class _Watch(threading.Thread):
    """Samples the stored shard files of `cache` and the summed RSS of this process tree."""

    def __init__(self, cache: str) -> None:
        super().__init__(daemon=True)
        import psutil

        self.cache, self.me, self.stop = cache, psutil.Process(), threading.Event()
        self.first = self.last = None  # (time, shards) of the first and the latest change
        self.peak_rss = 0

    def run(self) -> None:
        from pathlib import Path

        import psutil

        seen = 0
        while not self.stop.is_set():
            shards = len(list(Path(self.cache).glob("*.partial/*.npz"))) + \
                len(list(Path(self.cache).glob("*.partial/blocks/*.npz")))
            if shards > seen:
                seen = shards
                self.last = (time.perf_counter(), shards)
                self.first = self.first or self.last
            rss = 0
            for proc in [self.me, *self.me.children(recursive=True)]:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            time.sleep(0.05)


def _extract(n: int, cache: str, compiled: str, engine: dict | None) -> dict:
    """One extraction into `cache` with the compile cache in `compiled`; engine None: local, else
    RayEngine(**engine) on a local instance."""
    from pipeline.compile_cache import enable_compile_cache

    enable_compile_cache(compiled)  # before JAX is imported: its environment reaches the Ray workers too
    from pipeline.cluster import RayEngine
    from pipeline.extract import extract

    watch = _Watch(cache)
    watch.start()
    start = time.perf_counter()
    result = extract("efficientnet_lite0", "fashion-mnist", ["pool"], limit=n, batch_size=BATCH, cache_dir=cache,
                     engine="local" if engine is None else RayEngine(**engine))
    end = time.perf_counter()
    watch.stop.set()
    watch.join()
    (t0, first), (t1, last) = watch.first, watch.last
    return {"n": result.entry.n, "path": str(result.entry.path), "call_s": end - start, "startup_s": t0 - start,
            "images_per_s": (last - first) * BATCH / (t1 - t0) if t1 > t0 else None,
            "peak_rss_mb": watch.peak_rss / 2**20}


WORKERS = {"extract": _extract}


def _identical(a: str, b: str) -> bool:
    """Every dataset and attribute but the creation time equal, bit for bit."""
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = ["labels", "ids", *(f"features/{t}" for t in fa["features"])]
        same = all(np.array_equal(fa[x][()], fb[x][()]) for x in names)
        attrs = {k: str(v) for k, v in fa.attrs.items() if k != "created"}
        return same and attrs == {k: str(v) for k, v in fb.attrs.items() if k != "created"}


def _ray(*args: str) -> None:
    """The `ray` command of this environment (start/stop a local cluster)."""
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), *args], check=True, capture_output=True)


def _cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def main() -> None:
    args, is_worker = parse_args(__doc__, "256 images (a smoke run)")
    if is_worker:
        run_worker(args, WORKERS)
        return
    import tempfile

    n = 256 if args.quick else 2000
    warm, joined = ", compiled on disk", "ray 2 workers, joining a running instance"
    runs = {"local": None, f"local{warm}": None, "ray 1 worker": {"workers": 1}, "ray 2 workers": {"workers": 2},
            f"ray 2 workers{warm}": {"workers": 2}, joined + warm: {"workers": 2, "address": "auto"}}
    results: dict = {"n": n, "batch": BATCH, "cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0)), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, engine in runs.items():
            if name.startswith(joined):  # a cluster started beforehand, as `ray start --head` on a real one
                _ray("start", "--head", f"--num-cpus={results['cores']}", "--include-dashboard=false",
                     f"--object-store-memory={LOCAL_OBJECT_STORE_MB << 20}",
                     f"--system-config={json.dumps(local_system_config(results['cores']))}")
            load = os.getloadavg()[0]
            key = "ray 2 workers" if name.startswith(joined) else name.removesuffix(warm)
            compiled = os.path.join(tmp, "jit-" + key.replace(" ", "_"))
            try:
                run = spawn(__file__, "extract", n, os.path.join(tmp, name.replace(" ", "_")), compiled, engine)
            finally:
                if name.startswith(joined):
                    _ray("stop")
            results["runs"][name] = {**run, "load_before": load, "load_after": os.getloadavg()[0]}
            print(f"{name}: {json.dumps(results['runs'][name])}", flush=True)
        local = results["runs"]["local"]
        for name, run in results["runs"].items():
            run["identical_to_local"] = _identical(run["path"], local["path"])
    print(f"\n{n} Fashion-MNIST images, EfficientNet-Lite0 224 px, batch {BATCH}; CPU: {results['cpu']} "
          f"({results['cores']} cores)")
    header = ("engine", "img/s after start-up", "vs local", "start-up s", "extra start-up s", "whole call s",
              "peak RSS MB", "load avg", "bit-identical")
    rows = [header]
    for name, run in results["runs"].items():
        rate, base = run["images_per_s"], results["runs"]["local" + (warm if name.endswith(warm) else "")]
        run["extra_startup_s"] = run["startup_s"] - base["startup_s"]  # against the local run of the same cache state
        rows.append((name, f"{rate:.1f}", f"{rate / local['images_per_s']:.2f}x", f"{run['startup_s']:.1f}",
                     f"{run['extra_startup_s']:+.1f}", f"{run['call_s']:.1f}",
                     f"{run['peak_rss_mb']:.0f}", f"{run['load_before']:.1f}-{run['load_after']:.1f}",
                     str(run["identical_to_local"])))
    report(rows, results, "bench_scale")


if __name__ == "__main__":
    main()
