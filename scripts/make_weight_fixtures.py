"""Writes the tiny torch checkpoints that tests/test_weights.py reads, plus the arrays they must give.

Needs torch, which the project does not depend on; run it from a throwaway venv:
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python scripts/make_weight_fixtures.py
Outputs (tests/fixtures/weights/): tiny_zip.pt, tiny_legacy.pt (the same state dict in both formats),
wrapped_zip.pt (nested training checkpoint), big_endian_zip.pt, expected.npz (keys prefixed
'tiny.', 'wrapped.', 'big.'; bfloat16 stored upcast to float32, which is exact), and two files the
reader must refuse: bad_bare_tensor.pt (no dict) and bad_key_collision.pt ('a.b' twice once flattened).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "weights"


def tiny_state_dict() -> dict[str, torch.Tensor]:
    """Every layout the reader must handle: dtypes, a scalar, non-contiguous and offset views, empty."""
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(12, generator=g)
    grid = torch.randn(3, 5, generator=g)
    return {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "conv.weight_nhwc": torch.randn(2, 3, 2, 2, generator=g).to(memory_format=torch.channels_last),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(7),
        "half": torch.randn(5, generator=g).half(),
        "double": torch.randn(2, generator=g).double(),
        "bf16": torch.tensor([1.5, -2.25, 3.0]).bfloat16(),
        "transposed": grid.t(),
        "column": grid[:, 2],
        "shared.base": shared,
        "shared.view": shared[3:9].view(2, 3),
        "mask": torch.tensor([True, False, True]),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "int32": torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32),
        "empty": torch.zeros(0, 3),
    }


def wrapped_checkpoint() -> dict:
    """A training checkpoint: the weights nested under 'state_dict', plus optimizer state and scalars."""
    g = torch.Generator().manual_seed(1)
    return {
        "epoch": 3,
        "arch": "tiny",
        "state_dict": {"fc.weight": torch.randn(2, 3, generator=g), "fc.bias": torch.zeros(2),
                       "codes": torch.tensor([1, 65535], dtype=torch.uint16)},
        "ema": {"fc.weight": torch.nn.Parameter(torch.randn(2, 3, generator=g))},
        "optimizer": {"state": {0: {"momentum_buffer": torch.randn(2, 3, generator=g)}},
                      "param_groups": [{"lr": 0.1, "params": [0]}]},
    }


def flatten(obj: object, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested tensors -> '.'-joined numpy arrays, the reader's documented key scheme."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return {prefix: (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    out: dict[str, np.ndarray] = {}
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def to_big_endian(src: Path, dst: Path) -> None:
    """Rewrites a float32-only zip checkpoint as a big-endian machine would have written it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            zout.writestr(name, data)


def main() -> None:
    """Writes every fixture and prints the sizes."""
    OUT.mkdir(parents=True, exist_ok=True)
    tiny, wrapped = tiny_state_dict(), wrapped_checkpoint()
    torch.save(tiny, OUT / "tiny_zip.pt")
    torch.save(tiny, OUT / "tiny_legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(wrapped, OUT / "wrapped_zip.pt")
    g = torch.Generator().manual_seed(2)
    big = {"w": torch.randn(2, 3, generator=g), "b": torch.randn(3, generator=g)}
    buf = io.BytesIO()
    torch.save(big, buf)
    little = OUT / "big_endian_src.pt"
    little.write_bytes(buf.getvalue())
    to_big_endian(little, OUT / "big_endian_zip.pt")
    little.unlink()
    torch.save(torch.ones(2), OUT / "bad_bare_tensor.pt")
    torch.save({"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}}, OUT / "bad_key_collision.pt")
    expected = {**{f"tiny.{k}": v for k, v in flatten(tiny).items()},
                **{f"wrapped.{k}": v for k, v in flatten(wrapped).items()},
                **{f"big.{k}": v for k, v in flatten(big).items()}}
    np.savez(OUT / "expected.npz", **expected)
    for f in sorted(OUT.iterdir()):
        print(f"{f.name}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
