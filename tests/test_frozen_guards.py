"""frozen_apply's guards: models whose graph jit cannot hash still compile, and input sides a backbone cannot
take are refused with the minimum, before anything is compiled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_allclose

from pipeline import backbones
from pipeline.backbones.base import Backbone, Preprocessing
from pipeline.backbones.frozen import check_resolution, frozen_apply

TINY = [name for name in backbones.list() if name.endswith("_tiny")]


class _ListAttribute(Backbone):
    """A module holding a list as static data (as nnx.Conv held its padding): its graph is not hashable."""

    def __init__(self) -> None:
        self.name = "list_attribute"
        self.preprocessing = Preprocessing(resolution=4, mean=(0.0,), std=(1.0,), channels=1)
        self.padding = nnx.static([(1, 1), (1, 1)])
        self.scale = nnx.Param(jnp.full((1,), 2.0))

    def stages(self):
        return [("out", lambda x: x.mean(axis=(1, 2)) * self.scale[...])]


def _zeros_model(name: str) -> Backbone:
    """A registered variant with all-zero weights: shapes are all these tests need, without a slow random init."""
    graph, shapes = nnx.split(nnx.eval_shape(lambda: backbones.get(name).build(nnx.Rngs(0))))
    return nnx.merge(graph, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes))


def test_a_model_with_an_unhashable_graph_still_compiles():
    model = _ListAttribute()
    with pytest.raises(TypeError, match="unhashable"):
        hash(nnx.graphdef(model))
    out = frozen_apply(model, ["out"])(np.full((2, 4, 4, 1), 3, np.uint8))
    assert_allclose(out["out"], np.full((2, 1), 6.0), rtol=0, atol=0)


@pytest.mark.parametrize("name", TINY)
def test_resolution_below_the_deepest_stride_is_refused(name):
    model = _zeros_model(name)
    minimum = max(t.stride for t in model.tap_infos() if t.stride)
    native = model.preprocessing.resolution
    assert check_resolution(model, None) == native and check_resolution(model, native) == native
    for bad in (0, -3, minimum - 1, 2.5, True):
        with pytest.raises(ValueError, match=rf"resolution {bad!r} is not usable by '{name}': need an int >= "
                                             rf"{minimum}"):
            frozen_apply(model, [-1], resolution=bad)


def test_a_side_the_network_cannot_take_names_its_own():
    model = _zeros_model("seednet_tiny")
    with pytest.raises(ValueError, match=r"resolution 20 is not usable by 'seednet_tiny' \(.*\); its own is 28"):
        check_resolution(model, 20)  # its dense layers take exactly the 28 px flattening

