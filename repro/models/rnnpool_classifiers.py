"""EfficientNet-B0, ResNet18, DenseNet121 and GoogLeNet with an early RNNPool block (RNNPool Table 1, Table 9, Fig. 2).

The base networks are torchvision's definitions (never pretrained). The RNNPool variants are built by surgery on them:
the downsampling block takes the slot of the first module it replaces, the other replaced modules become
``nn.Identity`` (so torchvision's ``forward`` and key layout are kept), and the first kept module is rebuilt for the
new input width where that changes. Table 9 settings are the defaults:

=================  =========================================  =============================  =======  =====
model              replaced (torchvision names)               map after the block            h1=h2    patch
=================  =========================================  =============================  =======  =====
EfficientNet-B0    ``features.1-3`` (stages 16, 24, 40)       28^2 x 64 -> ``features.4``    16       6
ResNet18           ``maxpool``, ``layer1``, ``layer2``        28^2 x 128 -> ``layer3``       32       8
DenseNet121        ``pool0``, ``denseblock1``, ``transition1``,  28^2 x 192 -> ``transition2``  48       8
                   ``denseblock2``                            (192 -> 256, Fig. 2)
GoogLeNet          ``maxpool1``, ``conv2``, ``conv3``,        28^2 x 128 -> ``inception3a``  32       8
                   ``maxpool2``
=================  =========================================  =============================  =======  =====

All variants take ``replace`` (Table 2 block-2 alternatives), ``patch_size``, ``hidden``, ``rnn_cell`` and
``last_layer_rnnpool`` (App. F.1.2). GoogLeNet keeps torchvision's auxiliary classifiers (``aux_logits=True``),
because the paper's 9.96M parameters include them; in training mode it then returns torchvision's
``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.densenet import DenseNet, _Transition
from torchvision.models.efficientnet import MBConv, MBConvConfig
from torchvision.models.googlenet import Inception

from repro.layers.rnnpool import GlobalRNNPool2d
from repro.models.registry import register_model
from repro.models.rnnpool_common import init_new_modules, make_downsampler


def _replace(parent: nn.Module, names: Sequence[str], block: nn.Module, init_mode: str = "fan_out") -> None:
    """Put ``block`` in the slot of ``names[0]`` and ``nn.Identity`` in the slots of the other names."""
    init_new_modules(block, init_mode)
    setattr(parent, names[0], block)
    for name in names[1:]:
        setattr(parent, name, nn.Identity())


def _block(replace: str, in_channels: int, patch_size: int, hidden, rnn_cell: str, act, stride: int = 4) -> nn.Module:
    return make_downsampler(replace, in_channels, patch_size, stride, hidden, rnn_cell=rnn_cell, activation_layer=act)


# ----------------------------------------------------------------------------------------------- EfficientNet-B0


def _efficientnet_b0(num_classes: int, last_layer_rnnpool: bool) -> nn.Module:
    model = tvm.efficientnet_b0(weights=None, num_classes=num_classes)
    if last_layer_rnnpool:
        model.avgpool = GlobalRNNPool2d(model.classifier[1].in_features)
    return model


@register_model("efficientnet_b0", family="rnnpool")
def efficientnet_b0(num_classes: int = 1000, last_layer_rnnpool: bool = False) -> nn.Module:
    """torchvision EfficientNet-B0 (Table 1 base)."""
    return _efficientnet_b0(num_classes, last_layer_rnnpool)


@register_model("efficientnet_b0_rnnpool", family="rnnpool")
def efficientnet_b0_rnnpool(
    num_classes: int = 1000,
    replace: str = "rnnpool",
    patch_size: int = 6,
    hidden: int = 16,
    rnn_cell: str = "fastgrnn",
    last_layer_rnnpool: bool = False,
) -> nn.Module:
    """EfficientNet-B0-RNNPool: stem (112^2 x 32) -> RNNPool -> 28^2 x 64 -> stage 4 (80 channels, stride 2)."""
    model = _efficientnet_b0(num_classes, last_layer_rnnpool)
    block = _block(replace, 32, patch_size, hidden, rnn_cell, nn.SiLU)
    _replace(model.features, ["1", "2", "3"], block)
    first = model.features[4][0]
    cnf = MBConvConfig(6, 3, 2, block.out_channels, first.out_channels, 1)
    new_first = MBConv(cnf, first.stochastic_depth.p, nn.BatchNorm2d)
    init_new_modules(new_first)
    model.features[4][0] = new_first
    return model


# ------------------------------------------------------------------------------------------------------ ResNet18


def _resnet18(num_classes: int, last_layer_rnnpool: bool) -> nn.Module:
    model = tvm.resnet18(weights=None, num_classes=num_classes)
    if last_layer_rnnpool:
        model.avgpool = GlobalRNNPool2d(model.fc.in_features)
    return model


@register_model("resnet18", family="rnnpool")
def resnet18(num_classes: int = 1000, last_layer_rnnpool: bool = False) -> nn.Module:
    """torchvision ResNet18 (Table 1 base)."""
    return _resnet18(num_classes, last_layer_rnnpool)


@register_model("resnet18_rnnpool", family="rnnpool")
def resnet18_rnnpool(
    num_classes: int = 1000,
    replace: str = "rnnpool",
    patch_size: int = 8,
    hidden: int = 32,
    rnn_cell: str = "fastgrnn",
    last_layer_rnnpool: bool = False,
) -> nn.Module:
    """ResNet18-RNNPool: conv1 (112^2 x 64) -> RNNPool -> 28^2 x 128 -> layer3 (conv4_x, App. E.2.2)."""
    model = _resnet18(num_classes, last_layer_rnnpool)
    block = _block(replace, 64, patch_size, hidden, rnn_cell, nn.ReLU)
    if block.out_channels != 128:
        raise ValueError(f"resnet18_rnnpool feeds layer3, which takes 128 channels: use hidden=32, not {hidden}")
    _replace(model, ["maxpool", "layer1", "layer2"], block)
    return model


# --------------------------------------------------------------------------------------------------- DenseNet121


class DenseNetGlobalPool(DenseNet):
    """torchvision DenseNet whose final global pool is a module (``global_pool``), so RNNPool can replace it."""

    def __init__(self, *args, last_layer_rnnpool: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        channels = self.classifier.in_features
        self.global_pool = GlobalRNNPool2d(channels) if last_layer_rnnpool else nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x))
        return self.classifier(torch.flatten(self.global_pool(out), 1))


def _densenet121(num_classes: int, last_layer_rnnpool: bool) -> DenseNetGlobalPool:
    return DenseNetGlobalPool(32, (6, 12, 24, 16), 64, num_classes=num_classes, last_layer_rnnpool=last_layer_rnnpool)


@register_model("densenet121", family="rnnpool")
def densenet121(num_classes: int = 1000, last_layer_rnnpool: bool = False) -> nn.Module:
    """torchvision DenseNet121 (Table 1 base)."""
    return _densenet121(num_classes, last_layer_rnnpool)


@register_model("densenet121_rnnpool", family="rnnpool")
def densenet121_rnnpool(
    num_classes: int = 1000,
    replace: str = "rnnpool",
    patch_size: int = 8,
    hidden: int = 48,
    rnn_cell: str = "fastgrnn",
    last_layer_rnnpool: bool = False,
) -> nn.Module:
    """DenseNet121-RNNPool (Fig. 2): conv0 (112^2 x 64) -> RNNPool(8, 8, 64 -> 48, 48) -> 28^2 x 192 -> T2 (-> 256)."""
    model = _densenet121(num_classes, last_layer_rnnpool)
    block = _block(replace, 64, patch_size, hidden, rnn_cell, nn.ReLU)
    _replace(model.features, ["pool0", "denseblock1", "transition1", "denseblock2"], block, init_mode="fan_in")
    transition = _Transition(block.out_channels, 256)
    init_new_modules(transition, "fan_in")
    model.features.transition2 = transition
    return model


# ------------------------------------------------------------------------------------------------------ GoogLeNet


def _googlenet(num_classes: int, aux_logits: bool, last_layer_rnnpool: bool) -> nn.Module:
    with warnings.catch_warnings():  # torchvision warns that aux_logits/init_weights defaults changed
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model = tvm.googlenet(weights=None, num_classes=num_classes, aux_logits=aux_logits, init_weights=True)
    if last_layer_rnnpool:
        model.avgpool = GlobalRNNPool2d(model.fc.in_features)
    return model


def _init_googlenet_like(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model("googlenet", family="rnnpool")
def googlenet(num_classes: int = 1000, aux_logits: bool = True, last_layer_rnnpool: bool = False) -> nn.Module:
    """torchvision GoogLeNet with its two auxiliary classifiers (Table 1 base: 9.96M parameters incl. aux heads)."""
    return _googlenet(num_classes, aux_logits, last_layer_rnnpool)


@register_model("googlenet_rnnpool", family="rnnpool")
def googlenet_rnnpool(
    num_classes: int = 1000,
    replace: str = "rnnpool",
    patch_size: int = 8,
    hidden: int = 32,
    rnn_cell: str = "fastgrnn",
    aux_logits: bool = True,
    last_layer_rnnpool: bool = False,
) -> nn.Module:
    """GoogLeNet-RNNPool: conv1 (112^2 x 64) -> RNNPool -> 28^2 x 128 -> inception3a (rebuilt for 128 inputs)."""
    model = _googlenet(num_classes, aux_logits, last_layer_rnnpool)
    block = _block(replace, 64, patch_size, hidden, rnn_cell, nn.ReLU)
    _replace(model, ["maxpool1", "conv2", "conv3", "maxpool2"], block)
    inception = Inception(block.out_channels, 64, 96, 128, 16, 32, 32)
    _init_googlenet_like(inception)
    model.inception3a = inception
    return model
