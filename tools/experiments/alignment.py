"""Measure backbone alignment (issue 17): the flip shifts of EfficientNet-Lite0's ``out`` with
its ImageNet weights, and how exactly each stride-s backbone is its stride-2s one computed
densely, with the measurements of ``tests/test_models.py`` (README "Deviations" has the table).

    python tools/experiments/alignment.py
    # the same on an older checkout, for a before / after comparison:
    git worktree add /tmp/old f4f1109 && PYTHONPATH=/tmp/old python tools/experiments/alignment.py
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(1, str(REPO / "tests"))
import ssdd_core.models.backbones as B  # noqa: E402  (PYTHONPATH picks the checkout measured)

if not hasattr(B, "resample_grid"):  # older code: the images here are multiples of every stride
    B.resample_grid = lambda t, s, ts, size: F.interpolate(t, size, mode="bilinear", align_corners=False)
from test_models import CONVERSIONS, _real_crops, flip_shift  # noqa: E402

from ssdd_core.data import VOCRoot  # noqa: E402


@torch.no_grad()
def main():
    torch.set_num_threads(2)
    print("code:", B.__file__)
    voc = VOCRoot(REPO / "data" / "voc12_sample", "SegmentationClassAug")
    for os_ in (32, 16, 8):
        bb = B.build_backbone("efficientnet_lite0", os_).eval()
        shifts = [round(flip_shift(lambda t, bb=bb: bb(t)["out"], x, os_), 1) for x in _real_crops(voc, 3, 320)]
        print(f"efficientnet_lite0 output stride {os_}: flip shifts (px, x) {shifts}", flush=True)
    x = _real_crops(voc, 1, 512)[0]
    for name, os_ in CONVERSIONS:
        torch.manual_seed(0)
        fine = B.build_backbone(name, os_, pretrained=name == "efficientnet_lite0").eval()
        coarse = B.build_backbone(name, 2 * os_, pretrained=False).eval()
        coarse.load_state_dict(fine.state_dict())
        a = fine(x)["out"][..., ::2, ::2]
        n = a.shape[-1]
        c = slice(n // 3, n - n // 3)
        rel = {}
        for t in range(0, 2 * os_ + 1, 2):
            b = coarse(F.pad(x, (t, 0, t, 0))[..., :512, :512])["out"]
            rel[t] = float((a[..., c, c] - b[..., c, c]).norm() / b[..., c, c].norm())
        best = min(rel, key=rel.get)
        print(f"{name} stride {os_} vs {2 * os_}: relative difference {rel[os_ // 2]:.3f} at a shift of "
              f"{os_ // 2} px; smallest {rel[best]:.3f} at {best} px", flush=True)


if __name__ == "__main__":
    main()
