"""Writes the tiny ViT reference fixtures that tests/test_vit.py reads: random weights in every layout
users download (timm, DINOv2's release, OpenAI/open_clip) and timm's outputs at every tap.

Needs torch, timm and open_clip (the `fixtures` extra: pip install -e '.[fixtures]'); the tests do not.
    python scripts/make_vit_fixtures.py
Outputs (tests/fixtures/vit/):
  <case>.timm.safetensors   timm's state dict                 (every case)
  dinov2*.orig.pth          DINOv2's release layout            (mask_token, register_tokens, pos incl. cls)
  clip.open_clip.bin        an open_clip CLIP model's state dict (visual.* and a token text tower)
  expected.npz              '<case>/image' uint8 (B, R, R, 3) inputs, '<case>/<tap>' timm's outputs,
                            'clip/open_clip_embed' open_clip's own image embedding, 'pos/...' resampling
Cases (the configs are repeated in tests/test_vit.py):
  vit        ImageNet-style classifier, 32 px, patch 8 (registered as vit_tiny)
  dinov2     LayerScale, no classifier; stored for 32 px, run at 40 px (position embeddings upsampled at run time)
  dinov2reg  4 registers (timm's no_embed_class layout); stored for 32 px, loaded into a 24 px model
  clip       open_clip's tower: pre-norm, no patch bias, QuickGELU, LayerNorm eps 1e-5, 12-d projection
All weights are bfloat16 values (stored as bfloat16 to keep the files small; every model computes in float32).
Width 16, 2 blocks, 2 heads, 8 px patches throughout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from benchlib import import_timm

timm = import_timm()
import open_clip  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vit"
TINY = dict(embed_dim=16, depth=2, num_heads=2, patch_size=8)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def images(side: int) -> np.ndarray:
    """Two photographs (scikit-image's astronaut and coffee) centre-cropped and resized to side x side, uint8."""
    from PIL import Image
    from skimage import data

    out = []
    for img in (data.astronaut(), data.coffee()):
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(np.asarray(Image.fromarray(crop).resize((side, side), Image.BICUBIC)))
    return np.stack(out)


def normalise(x: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W), (x / 255 - mean) / std."""
    t = torch.from_numpy(x).float().permute(0, 3, 1, 2) / 255.0
    return (t - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random bfloat16-exact weights with non-trivial norms, biases and LayerScale, so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.9 + 0.1)
            elif p.ndim == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim <= 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / max(fan_in, 1) ** 0.5)
            p.copy_(p.bfloat16().float())


def small(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict in bfloat16 (exact: `randomise` made every weight a bfloat16 value)."""
    return {k: v.bfloat16() if v.is_floating_point() else v for k, v in state.items()}


def taps(model: VisionTransformer, x: torch.Tensor) -> dict[str, np.ndarray]:
    """timm's outputs at every tap pipeline exposes, from timm's own modules in forward order."""
    out = {}
    with torch.no_grad():
        h = model.patch_embed(x)
        out["patch_embed"] = h.reshape(h.shape[0], -1, h.shape[-1])
        h = model.norm_pre(model._pos_embed(h))
        for i, block in enumerate(model.blocks):
            h = block(h)
            out[f"block{i}"] = h
        h = model.norm(h)
        out["norm"] = h
        out["pre_logits"] = model.forward_head(h, pre_logits=True)
        out["head"] = model.head(out["pre_logits"])
        assert torch.allclose(out["head"], model(x), atol=1e-6)  # the walk above is timm's forward
    return {k: v.numpy() for k, v in out.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    expected: dict[str, np.ndarray] = {}

    def record(case: str, model: VisionTransformer, image: np.ndarray, mean, std, head_name: str | None) -> None:
        expected[f"{case}/image"] = image
        for tap, value in taps(model.eval(), normalise(image, mean, std)).items():
            if tap == "head":
                if head_name is None:
                    continue
                tap = head_name
            expected[f"{case}/{tap}"] = value

    # ImageNet-style classifier.
    vit = VisionTransformer(img_size=32, num_classes=10, **TINY)
    randomise(vit, 0)
    save_file(small(vit.state_dict()), OUT / "vit.timm.safetensors")
    record("vit", vit, images(32), (0.5,) * 3, (0.5,) * 3, "logits")

    # DINOv2 without registers: stored at 32 px, run at 40 px (timm resamples per call with dynamic_img_size).
    dino = VisionTransformer(img_size=32, num_classes=0, init_values=1e-5, dynamic_img_size=True,
                             **TINY)
    randomise(dino, 1)
    sd = small(dino.state_dict())
    save_file(sd, OUT / "dinov2.timm.safetensors")
    torch.save({**sd, "mask_token": torch.zeros(1, 16)}, OUT / "dinov2.orig.pth")
    record("dinov2", dino, images(40), IMAGENET_MEAN, IMAGENET_STD, None)

    # DINOv2 with registers: timm's layout folds the class token's position embedding into the token.
    big = VisionTransformer(img_size=32, num_classes=0, init_values=1e-5, reg_tokens=4,
                            no_embed_class=True, **TINY)
    randomise(big, 2)
    sd = small(big.state_dict())
    save_file(sd, OUT / "dinov2reg.timm.safetensors")
    # The original class token is cls - pos_cls, kept in float32 where that difference is exact.
    pos_cls = (torch.randint(-64, 64, (1, 1, 16), generator=torch.Generator().manual_seed(3)) / 4096).bfloat16()
    orig = {k: v for k, v in sd.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    orig.update(register_tokens=sd["reg_token"], cls_token=sd["cls_token"].float() - pos_cls.float(),
                mask_token=torch.zeros(1, 16, dtype=torch.bfloat16),
                pos_embed=torch.cat([pos_cls, sd["pos_embed"]], dim=1))
    torch.save(orig, OUT / "dinov2reg.orig.pth")
    loaded = VisionTransformer(img_size=24, num_classes=0, init_values=1e-5, reg_tokens=4, no_embed_class=True,
                               **TINY)
    loaded.load_state_dict(checkpoint_filter_fn({k: v.float() for k, v in sd.items()}, loaded))  # 4x4 -> 3x3
    record("dinov2reg", loaded, images(24), IMAGENET_MEAN, IMAGENET_STD, None)

    # CLIP: open_clip builds the model (its file layout is the reference), timm loads it through its filter.
    clip = open_clip.CLIP(embed_dim=12, vision_cfg=dict(image_size=32, patch_size=8, width=16, layers=2, head_width=8),
                          text_cfg=dict(context_length=4, vocab_size=10, width=8, heads=1, layers=1), quick_gelu=True)
    randomise(clip, 4)
    torch.save(small(clip.state_dict()), OUT / "clip.open_clip.bin")
    tower = VisionTransformer(img_size=32, num_classes=12, pre_norm=True, class_token=True,
                              norm_layer=lambda d, **kw: torch.nn.LayerNorm(d, eps=1e-5, **kw),
                              act_layer=timm.layers.QuickGELU, **TINY)
    tower.load_state_dict(checkpoint_filter_fn(clip.state_dict(), tower))
    save_file(small(tower.state_dict()), OUT / "clip.timm.safetensors")
    record("clip", tower, images(32), CLIP_MEAN, CLIP_STD, "embed")
    with torch.no_grad():
        expected["clip/open_clip_embed"] = clip.eval().encode_image(normalise(images(32), CLIP_MEAN, CLIP_STD)).numpy()

    # Position-embedding resampling on its own: down (37 -> 16, DINOv2's 518 px -> 224 px) and up.
    g = torch.Generator().manual_seed(5)
    pos = torch.randn(1, 1 + 37 * 37, 4, generator=g)
    expected["pos/518"] = pos.numpy()
    expected["pos/224"] = resample_abs_pos_embed(pos, (16, 16), num_prefix_tokens=1).numpy()
    expected["pos/up"] = resample_abs_pos_embed(pos[:, 1:][:, :25], (7, 7), num_prefix_tokens=0).numpy()

    np.savez_compressed(OUT / "expected.npz", **expected)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(expected)} arrays and {len(list(OUT.iterdir()))} files, {total / 1024:.0f} KiB, to {OUT}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
