"""Wide ResNet-38 (Wu et al., Pattern Recognition 2019) as PSA and SSDD use it (``resnet38d``)."""
from __future__ import annotations

import torch
from torch import nn

from ..data import DataError
from .backbones import Backbone, Layer, _check_weights, register


class _ResBlock(nn.Module):
    """Wide-ResNet-38 pre-activation block (Wu et al. 2019; PSA's ``resnet38d``)."""

    def __init__(self, in_ch, mid_ch, out_ch, stride=1):
        super().__init__()
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=1, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x):
        a = torch.relu(self.bn_branch2a(x))
        b1 = self.conv_branch1(a) if not self.same_shape else x
        b2 = self.conv_branch2a(a)
        b2 = self.conv_branch2b1(torch.relu(self.bn_branch2b1(b2)))
        return b1 + b2

    def layers(self, stride: int) -> list[Layer]:
        """The block's spatial layers on the main path (the 1×1 shortcut moves with the first)."""
        first = (self.conv_branch2a,) + (() if self.same_shape else (self.conv_branch1,))
        return [Layer(first, stride, 1), Layer((self.conv_branch2b1,), 1, 1)]


class _ResBlockBottle(nn.Module):
    def __init__(self, in_ch, out_ch, dropout=0.0):
        super().__init__()
        self.same_shape = in_ch == out_ch
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=1, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)

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

    Its native network here is stride 16 (b2-b5 strided, b6-b7 at dilation 2); PSA's stride-8
    network is its atrous conversion (b5's first conv at stride 1, the rest of b5 dilated 2,
    b6-b7 4). Symmetric padding throughout: every tap at offset 0.
    """

    output_strides = (8, 16)

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
        self.b5 = _ResBlock(512, 512, 1024, stride=2)
        self.b5_1 = _ResBlock(1024, 512, 1024)
        self.b5_2 = _ResBlock(1024, 512, 1024)
        self.b6 = _ResBlockBottle(1024, 2048, dropout=0.3)
        self.b7 = _ResBlockBottle(2048, 4096, dropout=0.5)
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
        self.set_output_stride(8)

    def _path(self) -> list:
        path = [Layer((self.conv1a,), 1, 1)]
        for stage, n, tap in (("b2", 3, None), ("b3", 3, "low"), ("b4", 6, "mid"), ("b5", 3, "high")):
            for k in range(n):
                path += getattr(self, stage if k == 0 else f"{stage}_{k}").layers(2 if k == 0 else 1)
            path += [tap] if tap else []
        path += [Layer((b.conv_branch2b1,), 1, 1, 2) for b in (self.b6, self.b7)]
        return path + ["out"]

    def stem_modules(self) -> list[nn.Module]:
        """conv1a and the b2 stage (stride 2): the layers PSA's classifier does not train."""
        return [self.conv1a, self.b2, self.b2_1, self.b2_2]

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
