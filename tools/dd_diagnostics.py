"""Does the static DD-Net see the seed errors? (analysis for the SSDD issue; train GT only)

For every training id with GT, reads m^K0 / m^A0 PNGs and the d^K0 / d^A0 logits stored by
``integrate`` and reports, over pixels (void left out):

* AUC of σ(d^K0) for [m^K0 ≠ GT] and of σ(d^A0) for [m^A0 ≠ GT] (0.5 = blind);
* the same restricted to pixels where m^K0 ≠ m^A0 (the only place integration matters);
* AUC of σ(d^K0) − σ(d^A0) for [m^A0 is right] on those pixels (what Eq. 3 relies on);
* mean / std of σ(d) (a DD-Net collapsed to a constant has std ≈ 0).

Usage: python tools/dd_diagnostics.py RESULTS_DIR DATA_ROOT [GT_DIR] [--every N] > dd.json
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def roc_auc(scores, positive) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive``; None when one class is empty."""
    positive = np.asarray(positive, bool)
    return float(roc_auc_score(positive, scores)) if 0 < positive.sum() < positive.size else None

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssdd_core.data import VOCRoot  # noqa: E402
from ssdd_core.infer import upsample_dd  # noqa: E402
from ssdd_core.io import load_mask_png, read_h5, read_h5_ids  # noqa: E402


def dd_auc(results, root, gt_dir="SegmentationClassAug", every=1, pixels=4000) -> dict:
    """The AUCs and σ(d) statistics above for one run's ``results`` folder (dd0/, masks/K0, masks/A0)."""
    res = Path(results)
    voc = VOCRoot(root, gt_dir)
    rng = np.random.default_rng(0)
    cols = {k: [] for k in ("sk", "sa", "k_wrong", "a_wrong", "diff")}
    for h5 in sorted((res / "dd0").glob("*.h5")):
        shard = h5.stem
        for i in read_h5_ids(h5)[::every]:
            if not voc.mask_path(i).exists():
                continue
            d = read_h5(h5, i)
            gt = voc.load_mask(i)
            mk = load_mask_png(res / "masks" / "K0" / shard / f"{i}.png")
            ma = load_mask_png(res / "masks" / "A0" / shard / f"{i}.png")
            ok = np.flatnonzero((gt != 255).ravel())
            pick = rng.choice(ok, min(pixels, ok.size), replace=False)
            def sig(x, pick=pick):
                return 1.0 / (1.0 + np.exp(-x.astype(np.float64).ravel()[pick]))

            g, k, m = gt.ravel()[pick], mk.ravel()[pick], ma.ravel()[pick]
            cols["sk"].append(sig(upsample_dd(d["d_k"], gt.shape)))
            cols["sa"].append(sig(upsample_dd(d["d_a"], gt.shape)))
            cols["k_wrong"].append(k != g)
            cols["a_wrong"].append(m != g)
            cols["diff"].append(k != m)
    if not cols["sk"]:
        raise FileNotFoundError(f"{res}: no dd0/*.h5 with ids that have GT under {root}/{gt_dir}")
    c = {k: np.concatenate(v) for k, v in cols.items()}
    dm = c["diff"]
    return {
        "pixels": int(len(dm)), "frac_K_ne_A": float(dm.mean()),
        "auc_dK_for_K_wrong": roc_auc(c["sk"], c["k_wrong"]),
        "auc_dA_for_A_wrong": roc_auc(c["sa"], c["a_wrong"]),
        "auc_dK_for_K_wrong_where_K_ne_A": roc_auc(c["sk"][dm], c["k_wrong"][dm]),
        "auc_dA_for_A_wrong_where_K_ne_A": roc_auc(c["sa"][dm], c["a_wrong"][dm]),
        "auc_dK_minus_dA_for_A_right_where_K_ne_A": roc_auc(c["sk"][dm] - c["sa"][dm], ~c["a_wrong"][dm]),
        "sigmoid_dK": {"mean": float(c["sk"].mean()), "std": float(c["sk"].std())},
        "sigmoid_dA": {"mean": float(c["sa"].mean()), "std": float(c["sa"].std())},
        "where_K_ne_A": {"K_wrong": float(c["k_wrong"][dm].mean()), "A_wrong": float(c["a_wrong"][dm].mean())},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("root")
    ap.add_argument("gt_dir", nargs="?", default="SegmentationClassAug")
    ap.add_argument("--every", type=int, default=1, help="use every N-th id")
    ap.add_argument("--pixels", type=int, default=4000, help="pixels sampled per image")
    a = ap.parse_args()
    json.dump(dd_auc(a.results, a.root, a.gt_dir, a.every, a.pixels), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
