"""Grids of cells on an image and resampling between them (DESIGN §4; issue 28).

A feature map, a score map or a label map covers its image with a grid of cells: cell ``j`` is
centred on pixel ``offset + stride·j`` (pixel ``i``'s centre is at ``i``). Backbone taps report
theirs (:attr:`~ssdd_core.models.backbones.Backbone.grids`); the pipeline's own grids (pixels,
the DD grid, the affinity grid) are blocks of pixels (:func:`block_grid`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class Grid(NamedTuple):
    """A grid of cells on an image: cell ``j`` is centred on pixel ``offset + stride·j``."""

    stride: int
    offset: float


def block_grid(stride: int) -> Grid:
    """The pipeline's own grids (pixels, the DD grid, the affinity grid): cell ``j`` is the block
    of pixels ``stride·j … stride·j + stride − 1`` (average pooling, nearest downsampling of
    labels), centred on ``stride·j + (stride − 1)/2``."""
    return Grid(stride, (stride - 1) / 2)


def _axis(t: torch.Tensor, dim: int, n: int, src: Grid, dst: Grid) -> torch.Tensor:
    pos = (torch.arange(n, dtype=torch.float64) * dst.stride + dst.offset - src.offset) / src.stride
    pos = pos.clamp(0, t.shape[dim] - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=t.shape[dim] - 1)
    shape = [1] * t.dim()
    shape[dim] = n
    w = (pos - i0).to(t.dtype).view(shape).to(t.device)
    a, b = t.index_select(dim, i0.to(t.device)), t.index_select(dim, i1.to(t.device))
    return a + (b - a) * w


def resample_grid(t: torch.Tensor, src: Grid, dst: Grid, size: tuple[int, int]) -> torch.Tensor:
    """Resample a map from one grid of an image onto another grid of the same image.

    Target cell ``k`` (centred on pixel ``dst.offset + dst.stride·k``) takes the bilinear
    interpolation of the source cells around that pixel; positions beyond the first / last
    source cell take that cell's value (as ``F.interpolate``'s ``align_corners=False`` does).
    With ``src = block_grid(s)`` and ``dst = block_grid(1)`` this is ``F.interpolate`` by the
    factor ``s`` (``align_corners=False``), cropped to ``size``.

    Args:
        t: (B, C, h, w) float map on ``src``.
        src, dst: :class:`Grid` of the map and of the result (strides and offsets in pixels).
        size: (h', w') cells of the result.
    Returns:
        (B, C, h', w') tensor of ``t``'s dtype and device, differentiable in ``t``.
    """
    if tuple(src) == tuple(dst) and tuple(t.shape[-2:]) == tuple(size):
        return t
    return _axis(_axis(t, t.dim() - 2, size[0], src, dst), t.dim() - 1, size[1], src, dst)
