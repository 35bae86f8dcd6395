"""How well can a seg head at output stride s reproduce its labels? (issue 30, item 4)

The dynamic stage's refined labels m^D2 can only beat m^D0 where the model's own masks (m^K1, and
m^D1 made from them) are right, yet on the training crops m^K1 stays 4-6 mIoU below m^D0. One
suspect is resolution: at output stride 16 a 192-px training crop gives 12×12 logits, upsampled
bilinearly 4× to the 48×48 DD resolution where m^D0, m^K1 and the GT are compared.

This measures the ceiling that resolution alone puts there, with no network: each label mask
(m^D0, or the GT itself) on the geometry of a dynamic-stage training image (square-resized to
``--size`` px, the mean of ``dynamic.resize_range`` × crop), turned into one-hot, area-pooled to
``s``-px cells (what a perfect stride-s head could at best put in a cell), upsampled bilinearly to
the DD resolution (``seg.dd_stride`` px cells) and arg-maxed, scored against the GT at the DD
resolution. Stride ``dd_stride`` is the mask itself at the DD resolution.

    python tools/experiments/resolution_ceiling.py results --configfile config/voc2012_balanced.yaml

Training ids with GT only (every ``--every``-th, default 4: the dynamic diagnostics' slice);
never the eval split. Single-threaded NumPy / torch on masks: a few seconds per 100 ids.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/
from config_files import merged_config, run_masks  # noqa: E402

from ssdd_core.data import VOCRoot, resize_mask  # noqa: E402
from ssdd_core.io import load_mask_png  # noqa: E402
from ssdd_core.metrics import ConfusionMatrix  # noqa: E402

IGNORE = 255


def stride_ceiling(mask: np.ndarray, stride: int, dd: int) -> np.ndarray:
    """``mask`` (S, S) uint8 labels 0..20 / 255 → the best a stride-``stride`` head can say at the
    DD resolution: one-hot (ignore pixels count for no class), area-pooled to ``stride``-px cells,
    bilinear (align_corners False: cell centres) to ``dd``-px cells, argmax; cells without any
    labelled pixel → 255. Returns (S // dd, S // dd) uint8."""
    s = mask.shape[0]
    m = torch.from_numpy(mask.astype(np.int64))
    valid = m != IGNORE
    onehot = F.one_hot(torch.where(valid, m, 0), 21).permute(2, 0, 1).float() * valid.float()
    cells = F.avg_pool2d(onehot[None], stride, ceil_mode=True)
    up = F.interpolate(cells, (s // dd, s // dd), mode="bilinear", align_corners=False)[0]
    out = up.argmax(0).to(torch.uint8)
    out[up.sum(0) <= 1e-6] = IGNORE
    return out.numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished run's results/ (splits, masks/D0)")
    ap.add_argument("--configfile", nargs="*", default=[])
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--size", type=int, default=None, help="square training size (default: crop × mean resize)")
    ap.add_argument("--strides", type=int, nargs="*", default=[4, 8, 16, 32])
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = merged_config(a.configfile)
    d, dd = cfg["dynamic"], int(cfg["seg"]["dd_stride"])
    size = a.size or int(round(d["crop"] * sum(d["resize_range"]) / 2 / dd) * dd)
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    d0 = run_masks(a.results, "D0")
    ids = sorted(i for i in d0 if voc.mask_path(i).exists())[::a.every]
    cms = {(src, s): ConfusionMatrix() for src in ("D0", "GT") for s in a.strides}
    for iid in ids:
        gt = resize_mask(voc.load_mask(iid), (size, size))
        gt_dd = resize_mask(gt, (size // dd, size // dd))
        md0 = resize_mask(load_mask_png(d0[iid]), (size, size))
        for src, m in (("D0", md0), ("GT", gt)):
            for s in a.strides:
                pred = stride_ceiling(m, s, dd)
                tgt = gt_dd.copy()
                tgt[pred == IGNORE] = IGNORE
                cms[src, s].update(np.where(pred == IGNORE, 0, pred), tgt)
    print(f"{len(ids)} training ids with GT (every {a.every}th), square size {size} px, DD cells {dd} px; "
          f"mIoU against the GT at the DD resolution:\n")
    heads = [f"stride {s}" + (" (the mask itself)" if s == dd else "") for s in a.strides]
    print("| labels | " + " | ".join(heads) + " |")
    print("| --- |" + " ---: |" * len(a.strides))
    for src in ("D0", "GT"):
        print(f"| {'m^D0' if src == 'D0' else 'GT'} | "
              + " | ".join(f"{100 * cms[src, s].compute()['miou']:.1f}" for s in a.strides) + " |")


if __name__ == "__main__":
    main()
