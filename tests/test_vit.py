"""ViT family: parity with timm on every layout users download (timm, DINOv2's release, OpenAI/open_clip),
position-embedding resampling, token pooling, key checks, early stopping at the deepest tap.

The fixtures come from scripts/make_vit_fixtures.py (timm 1.0.31, open_clip 3.3.0, torch 2.13 CPU):
random bfloat16-exact weights, width 16, 2 blocks, 2 heads, 8 px patches.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import assert_allclose

from pipeline import backbones
from pipeline.backbones import vit
from pipeline.backbones.frozen import frozen_apply, pool_features
from pipeline.backbones.stages import path_name
from pipeline.cli import main
from pipeline.data import open_source
from pipeline.finetune import build_target
from pipeline.finetune.groups import build_tx, layer_decay_scales, param_labels
from pipeline.compile_cache import enable_compile_cache
from pipeline.store import load as load_features
from pipeline.store import open_entry
from pipeline.weights import KeyMismatchError, load_state_dict, to_timm, vit_layout
from pipeline.weights.nnx_state import assign_flat, flatten_state

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
    if case == "clip":  # and open_clip's own image embedding
        assert_allclose(out["embed"], EXPECTED["clip/open_clip_embed"], **TOL)


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


def test_last_k_freezes_by_block_and_layer_decay_scales_by_depth():
    model = backbones.create("vit_tiny", FIXTURES / "vit.timm.safetensors")
    labels = param_labels(model, "last-k", 3)  # pre_logits (no weights), norm, block1
    assert {n for n, g in labels.items() if g == "backbone"} == {
        n for n in labels if n.startswith(("blocks.1.", "norm."))}
    assert {n for n, g in labels.items() if g == "frozen"} == {
        n for n in labels if n.startswith(("blocks.0.", "patch_embed.", "cls_token", "pos_embed"))}
    scales = layer_decay_scales(model, 0.5)
    expected = {"norm.": 1.0, "blocks.1.": 0.5, "blocks.0.": 0.25, "cls_token": 0.25, "pos_embed": 0.25,
                "patch_embed.": 0.125}  # the class token and position embeddings join block0's stage
    assert {n: scales[n] for n in scales} == {n: v for n in scales for p, v in expected.items() if n.startswith(p)}
    assert "head.kernel" not in scales
    with pytest.raises(ValueError, match=r"layer decay must be a number in \(0, 1\], got 1.5"):
        layer_decay_scales(model, 1.5)
    # One SGD step: every backbone parameter moves by lr * mult * its scale times its gradient.
    params = nnx.state(model, nnx.Param)
    grads = jax.tree.map(jnp.ones_like, params)
    tx = build_tx(labels | {n: "backbone" for n in labels if labels[n] == "frozen"}, 1.0, backbone_lr_mult=0.1,
                  optimizer="sgd", layer_scales=scales)
    updates, _ = tx.update(grads, tx.init(params), params)
    flat = {path_name(p): float(np.asarray(v).flat[0]) for p, v in jax.tree_util.tree_flatten_with_path(updates)[0]}
    assert_allclose([flat[n] for n in scales], [-0.1 * scales[n] for n in scales], rtol=1e-6, atol=0)
    assert flat["head.kernel"] == -1.0


def test_end_to_end_through_the_cli(tmp_path, capsys):
    """Extract two taps with cls+mean, train a head on both, fine-tune one step, export, extract from the export."""
    weights = FIXTURES / "vit.timm.safetensors"
    cache = str(tmp_path / "cache")
    common = ["--backbone", "vit_tiny", "--dataset", "digits", "--limit", "60", "--cache-dir", cache, "--json"]
    try:
        assert main(["extract", *common, "--weights", str(weights), "--layer", "block0", "--layer", "-2",
                     "--pool", "cls+mean"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert first["shapes"] == {"block0": [32], "pre_logits": [16]} and first["n"] == 60
        entry = open_entry(first["path"])
        assert entry.key["pool"] == "cls+mean"
        source = open_source("digits", "train", limit=60)
        images = jnp.asarray(np.concatenate([b.images for b in source.iter_batches(100)]))
        model = backbones.create("vit_tiny", weights)
        tokens = model.features(model.preprocessing(images), ["block0"])["block0"]
        want = np.concatenate([tokens[:, 0], np.mean(tokens[:, 1:], axis=1)], axis=1)
        assert_allclose(load_features(entry, "block0")[0], want, rtol=1e-5, atol=1e-5)

        assert main(["train", "--features", first["key"][:10], "--layer", "block0", "--layer", "pre_logits",
                     "--out", str(tmp_path / "head"), "--cache-dir", cache, "--json"]) == 0
        head = json.loads(capsys.readouterr().out)
        assert head["n_features"] == 48 and head["layer"] == ["block0", "pre_logits"]

        # Two steps: the first is the warm-up's, at learning rate 0.
        assert main(["finetune", "--backbone", "vit_tiny", "--weights", str(weights), "--dataset", "digits",
                     "--classes", "0,1", "--mode", "last-k", "--k", "3", "--layer-decay", "0.7", "--limit", "32",
                     "--batch-size", "16", "--epochs", "1", "--out", str(tmp_path / "ft"), "--json"]) == 0
        tuned = json.loads(capsys.readouterr().out)
        assert tuned["epochs_run"] == 1
        exported = backbones.create("vit_tiny", tuned["backbone_path"])
        before, after = (flatten_state(nnx.state(m)) for m in (model, exported))
        assert all(np.array_equal(before[n], after[n]) for n in before if n.startswith(("blocks.0.", "patch_embed")))
        assert not np.array_equal(before["blocks.1.mlp.fc2.kernel"], after["blocks.1.mlp.fc2.kernel"])

        assert main(["extract", *common, "--weights", tuned["backbone_path"], "--layer", "block1",
                     "--pool", "cls+mean"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["hit"] is False and again["shapes"] == {"block1": [32]}
        tokens = exported.features(exported.preprocessing(images), ["block1"])["block1"]
        want = np.concatenate([tokens[:, 0], np.mean(tokens[:, 1:], axis=1)], axis=1)
        assert_allclose(load_features(open_entry(again["path"]), "block1")[0], want, rtol=1e-5, atol=1e-5)
    finally:
        enable_compile_cache(None)  # the commands turned JAX's persistent cache on for this process


def test_finetune_target_at_another_resolution_resamples_position_embeddings():
    source = backbones.create("vit_tiny", FIXTURES / "vit.timm.safetensors")
    target = build_target("vit_tiny", 3, weights=FIXTURES / "vit.timm.safetensors", resolution=48)
    assert target.pos_embed.shape == (1, 1 + 6 * 6, 16) and target.preprocessing.resolution == 48
    assert_allclose(target.pos_embed[...], vit.resample_pos_embed(source.pos_embed[...], 6, 1), rtol=0, atol=0)
    assert_allclose(target.blocks[1].mlp.fc2.kernel[...], source.blocks[1].mlp.fc2.kernel[...], rtol=0, atol=0)


def test_cpu_attention_is_dot_product_attention():
    q, k, v = np.random.default_rng(0).normal(size=(3, 2, 17, 3, 8)).astype(np.float32)
    ours, reference = jax.jit(vit.attention)(q, k, v), jax.jit(jax.nn.dot_product_attention)(q, k, v)
    assert_allclose(ours, reference, rtol=0, atol=1e-6)


def test_advise_run_case_and_bench_heads_take_a_vit(tmp_path, capsys):
    """The strategy and benchmark commands on the tiny ViT: its block taps are the candidates, and the
    advisor says it cannot make the BatchNorm check rather than inventing a shift."""
    weights = str(FIXTURES / "vit.timm.safetensors")
    common = ["--backbone", "vit_tiny", "--weights", weights, "--dataset", "digits", "--per-class", "10"]
    try:
        assert main(["advise", *common, "--sample", "100", "--out", str(tmp_path / "advice.json")]) == 0
        assert "has no BatchNorm layers" in capsys.readouterr().out
        advice = json.loads((tmp_path / "advice.json").read_text())
        assert [t["tap"] for t in advice["taps"]] == ["patch_embed", "block0", "block1", "norm", "pre_logits"]
        assert all(t["bn_shift"] is None and 0.0 <= t["probe_val_accuracy"] <= 1.0 for t in advice["taps"])

        assert main(["run-case", "2", *common, "--out", str(tmp_path / "case2"), "--json"]) == 0
        case = json.loads(capsys.readouterr().out)
        assert case["choice"] in ("patch_embed", "block0") and 0.0 <= case["test_accuracy"] <= 1.0

        assert main(["extract", "--backbone", "vit_tiny", "--weights", weights, "--dataset", "digits", "--limit", "80",
                     "--layer", "block1", "--pool", "cls+mean", "--json"]) == 0
        key = json.loads(capsys.readouterr().out)["key"]
        assert main(["bench-heads", "--features", key[:12], "--layer", "block1", "--heads", "linear", "--lr", "1e-2",
                     "--weight-decay", "0", "--epochs", "2", "--l2", "1", "--knn", "3",
                     "--out", str(tmp_path / "bench")]) == 0
        table = capsys.readouterr().out
        assert all(f" {method} " in table for method in ("linear", "ridge", "knn", "logme"))
    finally:
        enable_compile_cache(None)  # the commands turned JAX's persistent cache on for this process
