"""The feature-geometry table of issue 28: every backbone × output stride × tap, with the checks of
``tests/test_models.py`` (DESIGN §4), printed as markdown:

    python tools/geometry_table.py            # ~3 min on 2 CPU threads

Columns: the tap's grid (stride, offset) from the padding arithmetic; the centroid error of
|∂f/∂x| of one resampled pixel (x / y, px; random weights, EfficientNet with geometric centres,
mean over weight seeds and 3 pixels; bound s/4); for EfficientNet's ImageNet weights the flip
shifts on the sample's last 3 val images (px, 2 × the centre error; bound s/4).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from test_models import CASES, TAPS, _to_pixels, _val_crops, centroid_errors, flip_shift  # noqa: E402

from ssdd_core.data import VOCRoot  # noqa: E402
from ssdd_core.models.backbones import build_backbone  # noqa: E402


def main():
    torch.set_num_threads(2)
    sample = VOCRoot(REPO / "data" / "voc12_sample", "SegmentationClassAug")
    crops = _val_crops(sample)
    print("| backbone | stride | tap | grid (s, offset) | centroid error x / y (bound) | flip shifts, ImageNet |")
    print("| --- | ---: | --- | --- | --- | --- |")
    for name, os_ in CASES:
        errs, bb = centroid_errors(name, os_)
        real = build_backbone(name, os_).eval() if name == "efficientnet_lite0" else None
        for k in TAPS:
            g = bb.grids[k]
            grid = f"({g.stride}, {g.offset:g})"
            flips = "–"
            if real is not None:
                grid += f"; ImageNet ({g.stride}, {real.grids[k].offset:g})"
                with torch.no_grad():
                    v = [flip_shift(lambda t, k=k, m=real: m(t)[k], c, lambda f, s, k=k, m=real: _to_pixels(m, k, f, s))
                         for c in crops]
                flips = " / ".join(f"{s:+.1f}" for s in v)
            e = errs[k]
            print(f"| {name} | {os_} | {k} | {grid} | {e[0]:+.1f} / {e[1]:+.1f} "
                  f"({g.stride / 4:g}) | {flips} |", flush=True)


if __name__ == "__main__":
    main()
