"""Backbones by name: a table of families and variants, and weight loading for each."""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import flax
import jax
from flax import nnx

from pipeline import paths
from pipeline.backbones import layers
from pipeline.backbones.base import Backbone
from pipeline.backbones.torch_layout import torch_to_nnx
from pipeline.weights import detect_format, load_params, load_state_dict, params_digest, save_params
from pipeline.weights.formats import read_safetensors
from pipeline.weights.nnx_state import assign_flat, cast_like, flatten_state

PARAMS_FORMAT = "pipeline-params/1"  # metadata tag of checkpoints written by `save`
WEIGHTS_CHOICES = ("pretrained", "random", "PATH")


@dataclass(frozen=True)
class Registered:
    """One backbone variant: a family's module class with one config (variants are data).

    pretrained: returns the default weights file, or raises saying how to get it; without it, the
      weights `pretrain` wrote to `default_weights_dir()/<name>.safetensors` are the default.
    torch_keys: maps PyTorch module paths to this module's, for importing torch/safetensors files.
    convert: for families whose files need more than renaming (ViT layouts, resampled position
      embeddings): (state dict, config) -> this module's flat keys; used instead of `torch_keys`.
    class_names: names of the pre-trained outputs (ImageNet's 1,000 classes, say), if known.
    """

    name: str
    module: type[Backbone]
    config: Any
    description: str
    pretrained: Callable[[], Path] | None = None
    torch_keys: Callable[[str], str] | None = None
    class_names: Callable[[], builtins.list[str]] | None = None
    convert: Callable[[dict, Any], dict] | None = None

    def build(self, rngs: nnx.Rngs, config: dict | None = None, **options: Any) -> Backbone:
        """A randomly initialised module; `config` (from a saved checkpoint) overrides the variant's."""
        cfg = self.config
        if config is not None:
            cfg = type(cfg)(**{k: tuple(v) if isinstance(v, builtins.list) else v for k, v in config.items()})
        return self.module(cfg, name=self.name, rngs=rngs, **options)


_REGISTRY: dict[str, Registered] = {}


def register(entry: Registered) -> Registered:
    """Adds a variant; a second registration under the same name is an error."""
    if entry.name in _REGISTRY:
        raise ValueError(f"backbone {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def list() -> builtins.list[str]:  # noqa: A001 - the registry's public verb, as timm's list_models
    """Names of all registered backbones, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Registered:
    """The registered variant `name`; an unknown name lists the registered ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create(name: str, weights: str | Path = "pretrained", *, seed: int = 0, **options: Any) -> Backbone:
    """Builds a backbone and loads its weights.

    Args:
      name: a registered backbone.
      weights: 'pretrained' (the variant's default weights), 'random' (initialised from `seed`), or a
        path to a PyTorch (.pth/.pt, legacy or zip), safetensors, or `save`d checkpoint.
      seed: initialisation seed for weights='random' (a checkpoint sets every weight, so no seed matters).
      **options: passed to the module, e.g. depthwise='native' for EfficientNet-Lite.
    Returns:
      The module in inference mode (BatchNorm uses its running statistics).
    """
    entry = get(name)
    path = _weights_path(entry, weights)
    if path is None:
        return entry.build(nnx.Rngs(seed), **options)
    return load(entry, path, **options)


def abstract(name: str, weights: str | Path = "pretrained", **options: Any) -> Backbone:
    """The backbone `create` would return, with shapes and dtypes but no values (`nnx.eval_shape` of its
    constructor: no initialisation, no weights read): its preprocessing, taps and tap shapes at no compute.

    Args: as `create` (a saved checkpoint's config applies, so its taps are the checkpoint's).
    """
    entry = get(name)
    path = _weights_path(entry, weights)
    return _abstract(entry, (_saved_config(entry, path) or None) if path else None, options)


def weights_digest(name: str, weights: str | Path = "pretrained", *, seed: int = 0, built: Backbone | None = None,
                   **options: Any) -> str | None:
    """`params_digest` of the weights `create(name, weights, seed=seed, **options)` holds, without building it.

    A checkpoint's tensors are read, mapped to the module's keys and cast to its dtypes, as loading does; the
    result is recorded under the file's identity (resolved path, inode, size, mtime in ns) and the code that
    reads it, so the next call only stats the file. Random weights are known only by building them once: pass
    that model as `built` to record its digest (under the variant, seed, options, jax/flax versions, backend
    and code); unrecorded, None. Records live in `default_weights_dir()/digests.json`.
    """
    entry = get(name)
    path = _weights_path(entry, weights)
    parts: dict[str, Any] = {"backbone": entry.name, "options": options, "code": _code_digest(entry)}
    if path is None:
        parts.update(config=dataclasses.asdict(entry.config), seed=seed, jax=jax.__version__, flax=flax.__version__,
                     backend=jax.default_backend())
    else:
        stat = path.stat()
        parts.update(file=str(path.resolve()), inode=stat.st_ino, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    token = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    memo = default_weights_dir() / "digests.json"
    try:
        known = json.loads(memo.read_text()) if memo.is_file() else {}
    except ValueError:  # a damaged record file only costs recomputing (and is rewritten below)
        known = {}
    if token in known:
        return known[token]
    if path is not None:
        model, flat = _read(entry, path, options)
        known[token] = params_digest(cast_like(model, flat, source=str(path)))
    elif built is not None:
        known[token] = params_digest(flatten_state(nnx.state(built)))
    else:
        return None
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    os.replace(tmp, memo)  # readers see the old map or the new one; a record lost to a race is only recomputed
    return known[token]


def _code_digest(entry: Registered) -> str:
    """sha256 of the sources that turn a file or a seed into weights: the family's module, the shared layers,
    this registry, and the weights package (readers, key maps, layouts)."""
    files = [Path(inspect.getfile(entry.module)), Path(inspect.getfile(layers)), Path(__file__),
             Path(inspect.getfile(torch_to_nnx)), *sorted(Path(inspect.getfile(params_digest)).parent.glob("*.py"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def _weights_path(entry: Registered, weights: str | Path) -> Path | None:
    """The checkpoint `weights` names for `entry`; None for 'random'."""
    if weights == "random":
        return None
    path = (entry.pretrained() if entry.pretrained else _trained_here(entry.name)) if weights == "pretrained" \
        else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist (valid: {', '.join(WEIGHTS_CHOICES)})")
    return path


def load(entry: Registered, path: Path, **options: Any) -> Backbone:
    """Builds `entry` and fills it from the checkpoint at `path` (own format, torch or safetensors)."""
    model, flat = _read(entry, path, options)
    assign_flat(model, flat, source=str(path))
    return model


def _read(entry: Registered, path: Path, options: dict[str, Any]) -> tuple[Backbone, dict]:
    """The abstract module a checkpoint fills, and the checkpoint's tensors under the module's keys."""
    config = _saved_config(entry, path)
    if config is not None:
        flat, _ = load_params(path)
    else:
        if entry.torch_keys is None and entry.convert is None:
            raise ValueError(f"{path} is not a checkpoint written by pipeline, and backbone {entry.name!r} "
                             "has no PyTorch key map to import it")
        state = load_state_dict(path)
        flat = entry.convert(state, entry.config) if entry.convert else torch_to_nnx(state, entry.torch_keys)
    return _abstract(entry, config or None, options), flat


def _saved_config(entry: Registered, path: Path) -> dict | None:
    """The config a checkpoint `save` wrote holds ({} if it has none); None for any other file."""
    meta = _own_metadata(path)
    if meta is None:
        return None
    if meta.get("backbone") != entry.name:
        raise ValueError(f"{path} holds a {meta.get('backbone')!r} backbone, not {entry.name!r}")
    return json.loads(meta.get("config", "null")) or {}


def _abstract(entry: Registered, config: dict | None, options: dict[str, Any]) -> Backbone:
    """The module with shapes but no values: a checkpoint sets every weight, so random
    initialisation (seconds of compiling init ops on a CPU) would be wasted."""
    return nnx.eval_shape(lambda: entry.build(nnx.Rngs(0), config, **options))


def _own_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a checkpoint `save` wrote, or None for any other file."""
    if detect_format(path) != "safetensors":
        return None
    meta = read_safetensors(path, lambda f: dict(f.metadata() or {}))
    return meta if meta.get("format") == PARAMS_FORMAT else None


def save(model: Backbone, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes all of a backbone's state (parameters and BatchNorm statistics) as safetensors.

    The file loads back with `create(model.name, weights=path)`, so a fine-tuned network can be
    extracted from like any other backbone.
    """
    meta = {"format": PARAMS_FORMAT, "backbone": model.name, "config": json.dumps(dataclasses.asdict(model.config))}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    path = Path(path)
    save_params(path, flatten_state(nnx.state(model)), meta)
    return path


def _trained_here(name: str) -> Path:
    """Weights that `pretrain` wrote for a backbone that ships none."""
    path = default_weights_dir() / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone {name!r} ships no weights and none were trained here ({path} does not exist): run "
            f"`python -m pipeline pretrain --backbone {name} --dataset fashion-mnist --classes 0-4`, "
            "or pass weights='random' or a checkpoint path")
    return path


def default_weights_dir() -> Path:
    """Where `pretrain` writes and the registry looks for project-trained weights."""
    return paths.cache_dir() / "weights"
