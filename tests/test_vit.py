"""ViT family: parity with timm on every layout users download (timm, DINOv2's release, OpenAI/open_clip),
position-embedding resampling, token pooling, key checks, early stopping at the deepest tap.

The fixtures come from scripts/make_vit_fixtures.py (timm 1.0.31, open_clip 3.3.0, torch 2.13 CPU):
random bfloat16-exact weights, width 16, 2 blocks, 2 heads, 8 px patches.
"""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_allclose

from pipeline import backbones
from pipeline.backbones import vit
from pipeline.backbones.frozen import frozen_apply, pool_features
from pipeline.weights import KeyMismatchError, load_state_dict
from pipeline.weights.layouts import to_timm, vit_layout
from pipeline.weights.nnx_state import assign_flat

FIXTURES = Path(__file__).parent / "fixtures" / "vit"
EXPECTED = np.load(FIXTURES / "expected.npz")
TOL = dict(rtol=0.0, atol=1e-4)  # the bound for every tap; measured errors are ~3e-6 at most
TINY = dict(patch=8, dim=16, depth=2, heads=2)
DINO = dict(num_classes=0, layer_scale=True, mean=vit.IMAGENET_MEAN, std=vit.IMAGENET_STD, **TINY)
# case -> (config, the input side its reference ran at)
CASES = {
    "vit": (vit.Config(num_classes=10, resolution=32, **TINY), 32),
    "dinov2": (vit.Config(resolution=32, **DINO), 40),  # run above its native size: resampled at run time
    "dinov2reg": (vit.Config(resolution=24, reg_tokens=4, no_embed_class=True, **DINO), 24),  # 32 px file
    "clip": (vit.Config(num_classes=0, proj_dim=12, norm_pre=True, patch_bias=False, eps=1e-5, act="quick_gelu",
                        resolution=32, mean=vit.CLIP_MEAN, std=vit.CLIP_STD, **TINY), 32),
}
FILES = [("vit", "vit.timm.safetensors", "timm"), ("dinov2", "dinov2.timm.safetensors", "timm"),
         ("dinov2", "dinov2.orig.pth", "dinov2"), ("dinov2reg", "dinov2reg.timm.safetensors", "timm"),
         ("dinov2reg", "dinov2reg.orig.pth", "dinov2"), ("clip", "clip.timm.safetensors", "timm"),
         ("clip", "clip.open_clip.bin", "open_clip")]


def load(case: str, file: str) -> vit.VisionTransformer:
    config = CASES[case][0]
    model = nnx.eval_shape(lambda: vit.VisionTransformer(config, name=case, rngs=nnx.Rngs(0)))
    assign_flat(model, vit.convert_state(load_state_dict(FIXTURES / file), config), source=file)
    return model


@pytest.mark.parametrize("case, file, layout", FILES)
def test_every_layout_matches_timm_at_every_tap(case, file, layout):
    assert vit_layout(load_state_dict(FIXTURES / file)) == layout
    model = load(case, file)
    x = model.preprocessing(jnp.asarray(EXPECTED[f"{case}/image"]), CASES[case][1])
    out = nnx.jit(lambda m, x: m.features(x, m.tap_names()))(model, x)  # compiled: eager dispatch is slower
    assert set(out) == set(model.tap_names())
    for tap, value in out.items():
        assert_allclose(value, EXPECTED[f"{case}/{tap}"], **TOL, err_msg=f"{case} {file} {tap}")


def test_clip_tower_matches_open_clip_itself():
    model = load("clip", "clip.open_clip.bin")
    x = model.preprocessing(jnp.asarray(EXPECTED["clip/image"]))
    assert_allclose(model.features(x, ["embed"])["embed"], EXPECTED["clip/open_clip_embed"], **TOL)


def test_vit_tiny_loads_timm_file_through_the_registry_and_predicts_its_logits(tmp_path):
    model = backbones.create("vit_tiny", FIXTURES / "vit.timm.safetensors")
    (logits,) = frozen_apply(model, [-1])(jnp.asarray(EXPECTED["vit/image"])).values()
    assert_allclose(logits, EXPECTED["vit/logits"], **TOL)
    saved = backbones.save(model, tmp_path / "own.safetensors")  # the project's own format round-trips
    again = backbones.create("vit_tiny", saved)
    assert_allclose(frozen_apply(again, [-1])(jnp.asarray(EXPECTED["vit/image"]))["logits"], logits, rtol=0, atol=0)


def test_position_embeddings_resample_like_timm():
    pos = jnp.asarray(EXPECTED["pos/518"])  # DINOv2's 37 x 37 grid and a class token
    assert_allclose(vit.resample_pos_embed(pos, 16, 1), EXPECTED["pos/224"], rtol=0, atol=1e-5)
    assert_allclose(vit.resample_pos_embed(pos[:, 1:26], 7, 0), EXPECTED["pos/up"], rtol=0, atol=1e-5)
    assert vit.resample_pos_embed(pos, 37, 1) is pos


def test_token_pools_shapes_and_values():
    model = load("dinov2reg", "dinov2reg.timm.safetensors")  # 1 class + 4 register + 9 patch tokens
    images = jnp.asarray(EXPECTED["dinov2reg/image"])
    tokens = EXPECTED["dinov2reg/block1"]
    patches = tokens[:, 5:]
    expected = {"cls": tokens[:, 0], "mean": patches.mean(1),
                "cls+mean": np.concatenate([tokens[:, 0], patches.mean(1)], -1),
                "none": patches.reshape(2, 3, 3, 16), "grid": None}
    for pool, want in expected.items():
        out = frozen_apply(model, ["block1", "pre_logits"], pool=pool)(images)
        assert_allclose(out["pre_logits"], EXPECTED["dinov2reg/pre_logits"], **TOL)  # vectors pass unchanged
        if want is not None:
            assert out["block1"].shape == want.shape
            assert_allclose(out["block1"], want, **TOL, err_msg=pool)
    grid = frozen_apply(model, ["block1"], pool="grid")(images)["block1"]
    assert grid.shape == (2, 4, 4, 16)  # 3 x 3 patches -> adaptive 4 x 4 bins, as for CNN maps
    assert_allclose(grid, pool_features(jnp.asarray(patches.reshape(2, 3, 3, 16)), "grid"), **TOL)
    mean = frozen_apply(model, ["patch_embed"], pool="mean")(images)["patch_embed"]
    assert_allclose(mean, EXPECTED["dinov2reg/patch_embed"].mean(1), **TOL)


def test_token_pools_refuse_what_does_not_apply():
    model = backbones.create("vit_tiny", FIXTURES / "vit.timm.safetensors")  # no random init: faster
    with pytest.raises(ValueError, match=r"pool 'avg' does not apply to tap 'block1' \(ViT tokens\); "
                                         r"valid: cls, mean, cls\+mean, none, grid$"):
        frozen_apply(model, ["block1"], pool="avg")
    with pytest.raises(ValueError, match=r"pool 'cls\+mean' does not apply to tap 'patch_embed' \(ViT patch tokens "
                                         r"without a class token\); valid: mean, none, grid$"):
        frozen_apply(model, ["patch_embed"], pool="cls+mean")
    infos = {t.name: t for t in model.tap_infos()}
    assert infos["block0"].shape == (17, 16) and infos["block0"].prefix == 1 and infos["block0"].stride == 8
    assert infos["patch_embed"].prefix == 0 and infos["pre_logits"].stride is None


def test_features_stop_at_the_deepest_tap():
    model = backbones.create("vit_tiny", FIXTURES / "vit.timm.safetensors")  # no random init: faster

    class Boom(nnx.Module):
        def __call__(self, x):
            raise AssertionError("ran past the deepest tap")

    model.norm = Boom()
    x = model.preprocessing(jnp.zeros((1, 32, 32, 3), jnp.uint8))
    assert set(model.features(x, ["block1", "patch_embed"])) == {"block1", "patch_embed"}
    with pytest.raises(AssertionError, match="ran past"):
        model.features(x, ["pre_logits"])


def test_key_mismatches_name_the_missing_and_unexpected_keys():
    state = load_state_dict(FIXTURES / "vit.timm.safetensors")
    with pytest.raises(KeyMismatchError, match=r"not a ViT checkpoint in a known layout: expected timm's .*"
                                               r"top-level names found: 'conv1', 'fc'"):
        to_timm({"conv1.weight": np.zeros(1), "fc.bias": np.zeros(1)})
    config = CASES["vit"][0]
    dropped = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.bias"}
    model = nnx.eval_shape(lambda: vit.VisionTransformer(config, name="t", rngs=nnx.Rngs(0)))
    with pytest.raises(KeyMismatchError, match=r"1 missing: 'blocks.1.mlp.fc2.bias'$"):
        assign_flat(model, vit.convert_state(dropped, config), source="dropped")
    # A DINOv2 file for the ImageNet classifier: LayerScale weights unexpected, the classifier missing.
    with pytest.raises(KeyMismatchError, match=r"2 missing: 'head.bias', 'head.kernel'; 4 unexpected: "
                                               r"'blocks.0.ls1.gamma', 'blocks.0.ls2.gamma'"):
        backbones.create("vit_tiny", FIXTURES / "dinov2.timm.safetensors")


@pytest.mark.parametrize("name", [n for n in backbones.list() if n.startswith("vit_") and n != "vit_tiny"])
def test_registered_vits_say_which_file_to_download(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"download \S+ of the Hugging Face repository timm/vit_\S+"
                                                r".*--weights PATH"):
        backbones.create(name)
