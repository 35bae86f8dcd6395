"""Networks on top of a backbone: PSA classifier, AffinityNet, seg head, DD-Net, SSDD models."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone, block_grid, resample_grid

NUM_FG = 20
NUM_CLASSES = 21


def freeze_bn(module: nn.Module) -> None:
    """Put every BatchNorm in eval mode and stop training its affine parameters (DESIGN §3.7).

    BatchNorms marked ``batch_stats = True`` (the DD-Net's, see :class:`DDNet`) keep the
    module's train / eval mode: their affine parameters are fixed but they normalise with
    batch statistics in training and running statistics at inference."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)
            if not getattr(m, "batch_stats", False):
                m.eval()


class FrozenBNMixin:
    """``train()`` keeps batch norm frozen (eval mode) whatever the mode of the rest."""

    def train(self, mode: bool = True):
        super().train(mode)
        freeze_bn(self)
        return self


class Classifier(FrozenBNMixin, nn.Module):
    """PSA classifier: backbone → dropout 0.5 → GAP → 1×1 conv to 20 logits, no bias.

    Args:
        backbone: a :class:`Backbone`.
    """

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout2d(0.5)
        self.fc = nn.Conv2d(backbone.channels["out"], NUM_FG, 1, bias=False)
        nn.init.xavier_uniform_(self.fc.weight)

    def new_parameters(self):
        return list(self.fc.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) → (B, 20) image-level logits."""
        f = self.backbone(x)["out"]
        f = self.dropout(f)
        f = F.adaptive_avg_pool2d(f, 1)
        return self.fc(f).flatten(1)

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) → (B, 20, H/s, W/s) class activation maps, ReLU'd (PSA)."""
        f = self.backbone(x)["out"]
        return F.relu(F.conv2d(f, self.fc.weight))


class AffinityNet(FrozenBNMixin, nn.Module):
    """AffinityNet (Ahn & Kwak 2018): three backbone stages → 1×1 convs (64, 128, 256), ELU,
    concat → 1×1 conv (448), ELU. Features are taken on a grid of stride ``grid_stride``.

    Args:
        backbone: a :class:`Backbone`.
        grid_stride: stride of the affinity grid (8 in PSA).
    """

    def __init__(self, backbone: Backbone, grid_stride: int = 8):
        super().__init__()
        self.backbone = backbone
        self.grid_stride = grid_stride
        c = backbone.channels
        self.f8 = nn.Conv2d(c["mid"], 64, 1, bias=False)
        self.f16 = nn.Conv2d(c["high"], 128, 1, bias=False)
        self.fout = nn.Conv2d(c["out"], 256, 1, bias=False)
        self.f = nn.Conv2d(448, 448, 1, bias=False)
        for m in (self.f8, self.f16, self.fout):
            nn.init.kaiming_normal_(m.weight)
        nn.init.xavier_uniform_(self.f.weight, gain=4)

    def new_parameters(self):
        return [p for m in (self.f8, self.f16, self.fout, self.f) for p in m.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W), H and W multiples of ``grid_stride`` → (B, 448, H/g, W/g) features."""
        feats = self.backbone(x)
        size = (x.shape[2] // self.grid_stride, x.shape[3] // self.grid_stride)
        grids, dst = self.backbone.grids, block_grid(self.grid_stride)

        def at(t, key):  # each tap from its own grid onto the affinity grid (blocks of grid_stride px)
            return resample_grid(t, grids[key], dst, size)

        f = torch.cat([at(F.elu(self.f8(feats["mid"])), "mid"), at(F.elu(self.f16(feats["high"])), "high"),
                       at(F.elu(self.fout(feats["out"])), "out")], 1)
        return F.elu(self.f(f))


class SegHead(FrozenBNMixin, nn.Module):
    """Seg head (DESIGN §3.4): 3×3 dilated conv → hidden (BN, ReLU) = e^h, 3×3 dilated conv → 21.

    Args:
        in_ch: backbone output channels.
        hidden: hidden channels (512 in the paper).
        dilation: dilation of both 3×3 convs (12 at stride 8 in the paper).
    """

    def __init__(self, in_ch: int, hidden: int = 512, dilation: int = 12):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, hidden, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, NUM_CLASSES, 3, padding=dilation, dilation=dilation)
        nn.init.kaiming_normal_(self.conv1.weight)
        nn.init.normal_(self.conv2.weight, std=0.01)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f: (B, C, h, w) → (logits (B, 21, h, w), hidden e^h (B, hidden, h, w))."""
        h = F.relu(self.bn1(self.conv1(f)))
        return self.conv2(h), h


class DDNet(FrozenBNMixin, nn.Module):
    """Difference-detection network d(e(x), m) (SSDD §3.1, DESIGN §3.4).

    Image branch: [e^h, e^l] → 3×3 conv → BN → ReLU. Mask branch: one-hot(m) → 1×1 conv → BN →
    ReLU. Concatenated (2·width) → residual bottleneck (1×1 → 3×3 → 1×1, with a 1×1 projection
    shortcut, BN after each conv, as the authors' ``PredictDiff``) → 1×1 conv → 1 logit.

    ``bn_mode``: ``batch`` (default) = its BatchNorms normalise with batch statistics in
    training (running statistics in eval); ``frozen`` = eval mode throughout, as in the
    authors' code (their base model's ``train()`` puts every BN in eval mode, so the DD-Net's
    BNs are fixed affine maps: identities from initialisation). Affine parameters never train
    (the rest of the model keeps frozen BN, DESIGN §3.7). Frozen, the one-hot branch entered the
    bottleneck ~6× weaker than the image branch (std 0.17 vs 0.99 on voc2012_mini, before
    issue 17); docs/deviations.md has the measured choice.

    Args:
        high_ch: channels of e^h (the seg head's hidden layer).
        low_ch: channels of e^l (the backbone's stride-4 features).
        width: channels of each branch (256 in the authors' code).
        bn_mode: ``batch`` or ``frozen`` (above).
    Raises:
        ValueError: another ``bn_mode``.
    """

    def __init__(self, high_ch: int, low_ch: int, width: int = 256, bn_mode: str = "batch"):
        super().__init__()
        if bn_mode not in ("batch", "frozen"):
            raise ValueError(f"DDNet bn_mode must be 'batch' or 'frozen', got {bn_mode!r}")
        bn = nn.BatchNorm2d
        self.feat = nn.Sequential(nn.Conv2d(high_ch + low_ch, width, 3, padding=1, bias=False), bn(width),
                                  nn.ReLU(inplace=True))
        self.mask = nn.Sequential(nn.Conv2d(NUM_CLASSES, width, 1, bias=False), bn(width), nn.ReLU(inplace=True))
        self.bottleneck = nn.Sequential(
            nn.Conv2d(2 * width, width, 1, bias=False), bn(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), bn(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1, bias=False), bn(width))
        self.shortcut = nn.Sequential(nn.Conv2d(2 * width, width, 1, bias=False), bn(width))
        self.out = nn.Conv2d(width, 1, 1)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.batch_stats = bn_mode == "batch"

    def features(self, e_high: torch.Tensor, e_low: torch.Tensor, size) -> torch.Tensor:
        """Image branch: e^h and e^l (both detached) at ``size`` → (B, width, H, W).

        :meth:`SegModel.dd` passes both already resampled onto the DD grid (their grids differ:
        :func:`~ssdd_core.models.backbones.resample_grid`); maps of another size are resized
        bilinearly. It does not depend on the mask, so it is computed once for m^K and m^A."""
        eh = F.interpolate(e_high.detach(), size, mode="bilinear", align_corners=False)
        el = F.interpolate(e_low.detach(), size, mode="bilinear", align_corners=False)
        return self.feat(torch.cat([eh, el], 1))

    def encode_mask(self, mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Mask branch: mask (B, H, W) int64, 0..20 or 255 (all-zero one-hot) → (B, width, H, W)."""
        m = mask.clone()
        valid = m != 255
        m[~valid] = 0
        onehot = F.one_hot(m, NUM_CLASSES).permute(0, 3, 1, 2).to(dtype) * valid.unsqueeze(1).to(dtype)
        return self.mask(onehot)

    def head(self, f: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mask branch + bottleneck: f from :meth:`features`, mask (B, H, W) → (B, H, W) logits."""
        x = torch.cat([f, self.encode_mask(mask, f.dtype)], 1)
        return self.out(F.relu(self.bottleneck(x) + self.shortcut(x))).squeeze(1)

    def forward(self, e_high: torch.Tensor, e_low: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Difference logits.

        Args:
            e_high: (B, Ch, h', w') seg-head hidden features (detached here).
            e_low: (B, Cl, h'', w'') backbone stride-4 features (detached here).
            mask: (B, H, W) int64 labels 0..20 or 255 at the DD resolution.
        Returns:
            (B, H, W) float logits; sigmoid = probability that ``mask`` is wrong there.
        """
        return self.head(self.features(e_high, e_low, mask.shape[-2:]), mask)


class SegModel(FrozenBNMixin, nn.Module):
    """Encoder + named seg heads + named DD-Nets (static: base/d0; dynamic: main, sub/d1, d2;
    baseline: base only).

    Args:
        backbone: encoder.
        heads: names of seg heads.
        ddnets: names of DD-Nets.
        hidden, dilation: seg-head settings; dd_width: DD-Net width.
        dd_stride: the DD resolution is input/``dd_stride`` (4 in the paper: 112 for 448).
        dd_bn: the DD-Nets' batch-norm mode (:class:`DDNet`).
    """

    def __init__(self, backbone: Backbone, heads=("base",), ddnets=(), hidden=512, dilation=12,
                 dd_width=256, dd_stride=4, dd_bn="batch"):
        super().__init__()
        self.backbone = backbone
        self.dd_stride = dd_stride
        self.heads = nn.ModuleDict({h: SegHead(backbone.channels["out"], hidden, dilation) for h in heads})
        self.ddnets = nn.ModuleDict({d: DDNet(hidden, backbone.channels["low"], dd_width, dd_bn) for d in ddnets})

    def new_parameters(self):
        return list(self.heads.parameters()) + list(self.ddnets.parameters())

    def forward(self, x: torch.Tensor, heads: tuple[str, ...] | None = None) -> dict:
        """x: (B, 3, H, W) → dict: ``low`` (e^l), and per head ``logits/<h>``
        (B, 21, ⌈H/dd⌉, ⌈W/dd⌉) at the DD resolution (cell-aligned,
        :func:`~ssdd_core.models.backbones.resample_grid`) and ``hidden/<h>`` (e^h, at the
        output stride).

        ``heads`` limits the seg heads that run (inference needs only one; None = all).

        Raises:
            KeyError: a name in ``heads`` that the model does not have."""
        feats = self.backbone(x)
        size = (-(-x.shape[2] // self.dd_stride), -(-x.shape[3] // self.dd_stride))  # ceil: covers x
        out = {"low": feats["low"]}
        src = self.backbone.grids["out"]  # the heads' stride-1, symmetric convs keep the out grid
        for name in (self.heads.keys() if heads is None else heads):
            head = self.heads[name]
            logits, hidden = head(feats["out"])
            out[f"logits/{name}"] = resample_grid(logits, src, block_grid(self.dd_stride), size)
            out[f"hidden/{name}"] = hidden
        return out

    def dd(self, name: str, out: dict, head: str, mask: torch.Tensor) -> torch.Tensor:
        """Apply DD-Net ``name`` to ``mask`` with head ``head``'s features → (B, H, W) logits.

        e^h (on the ``out`` grid) and e^l (on the ``low`` grid) are resampled onto the DD grid
        (blocks of ``dd_stride`` px) of the mask's size. The mask-independent image branch is
        cached in ``out`` and shared by every mask."""
        size = tuple(mask.shape[-2:])
        key = f"ddfeat/{name}/{head}/{size}"
        if key not in out:
            grids, dst = self.backbone.grids, block_grid(self.dd_stride)
            eh = resample_grid(out[f"hidden/{head}"].detach(), grids["out"], dst, size)
            el = resample_grid(out["low"].detach(), grids["low"], dst, size)
            out[key] = self.ddnets[name].features(eh, el, size)
        return self.ddnets[name].head(out[key], mask)
