"""Backbone introspection: which parameters each stage reads, found from its traced program.

Fine-tuning (freezing, per-stage rates, transfer cuts) and the similarity measures (BatchNorm layers
per tap) both ask it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from pipeline.backbones.base import Backbone


def path_name(path: tuple) -> str:
    """A jax key path of an nnx state leaf -> the '.'-joined name `flatten_state` uses ('blocks.0.bn1.scale')."""
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
    return ".".join(parts)


def stage_params(model: Backbone, resolution: int | None = None) -> dict[str, list[str]]:
    """The parameters each stage reads, found from the stage's traced program (no compute).

    Args:
      model: a backbone; resolution: the input side used for shape inference (default its own).
    Returns:
      {stage name: ['.'-joined parameter names]} in stage order; a parameter shared by two stages
      is listed under both.
    """
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [path_name(p) for p, _ in with_paths]
    leaves = [leaf for _, leaf in with_paths]
    side = resolution or model.preprocessing.resolution
    shape = (1, side, side, model.preprocessing.channels)
    out: dict[str, list[str]] = {}
    for i, (stage, info) in enumerate(zip(model.tap_names(), model.tap_infos(side))):
        def run(leaves, x, i=i):
            return nnx.merge(graph, jax.tree.unflatten(treedef, leaves), rest).stages()[i][1](x)

        jaxpr = jax.make_jaxpr(run)(leaves, jax.ShapeDtypeStruct(shape, jnp.float32)).jaxpr
        used = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
        out[stage] = [n for n, v in zip(names, jaxpr.invars[:len(leaves)]) if id(v) in used]
        shape = (1, *info.shape)
    return out
