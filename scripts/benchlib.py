"""What the benchmark scripts share: each measurement runs in a fresh interpreter (fair memory and
threads), as `SCRIPT --worker NAME JSON_ARGS`, and reports one line of JSON."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def parse_args(doc: str, quick_help: str, flags: dict[str, str] | None = None,
               sections: tuple[str, ...] = ()) -> tuple[argparse.Namespace, bool]:
    """The script's arguments (--quick, the on/off `flags` {name: help}, `--only SECTION` where the script has
    sections); whether this process is a worker."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    for flag, text in (flags or {}).items():
        parser.add_argument(flag, action="store_true", help=text)
    if sections:
        parser.add_argument("--only", choices=sections, default=None, help="run only this section")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return args, args.worker is not None


def run_worker(args: argparse.Namespace, workers: dict[str, Callable[..., dict]]) -> None:
    """Runs the named measurement in this process and prints its JSON result."""
    sys.path.insert(0, str(ROOT))
    print(json.dumps(workers[args.worker](*json.loads(args.args))))


def import_timm() -> Any:
    """timm, importable next to PyPI's CPU torch: PyPI's torchvision wheels are CUDA builds whose C extension
    cannot load there, and importing it then fails registering fake kernels for the missing ops; timm
    only needs torchvision's Python parts, so those registrations are skipped while it imports."""
    import torch
    import torch.library

    register_fake = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: (lambda f: f)
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = register_fake
    import timm

    return timm


def spawn(script: str, worker: str, *args: Any) -> dict:
    """One measurement in a fresh interpreter: its JSON result plus 'process_s', the whole process's time.

    Raises:
      RuntimeError: the worker failed; the message ends with its stderr.
    """
    start = time.perf_counter()
    out = subprocess.run([sys.executable, script, "--worker", worker, json.dumps(args)], cwd=ROOT,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"worker {worker} failed:\n{out.stderr.strip()[-2000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": seconds}


def report(rows: list[tuple[str, ...]], results: dict, name: str) -> Path:
    """Prints `rows` (the first is the header) as aligned columns and writes `results` to results/NAME.json."""
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width)))
    out = ROOT / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return out
