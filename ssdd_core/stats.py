"""Is a difference between two ablation rows real? (issue 30; DESIGN §3.8)

Two tests, both paired: the runs of two rows share their seeds, and both rows are scored on the
same eval images.

* :func:`paired_t` over the per-run mIoU differences (a two-sided paired t-test; with few runs
  it has few degrees of freedom, so it is reported, not relied on).
* :func:`paired_bootstrap` over the eval images: resample the image ids with replacement
  (the same resample for both rows and every run), recompute each row's mIoU from the summed
  per-image confusion matrices, and take the percentile interval of the mean (over runs)
  difference. A difference is called significant at 5% only when its 95% interval excludes 0.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided paired t-test of ``b − a``.

    Args:
        a, b: per-run scores of two rows, run r of each trained with the same seed.
    Returns:
        dict ``n``, ``mean_diff``, ``t``, ``p`` (``t`` / ``p`` None with fewer than 2 runs; ``p``
        0 or 1 when the differences have no spread).
    Raises:
        ValueError: different numbers of runs.
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired_t: {len(a)} vs {len(b)} runs")
    n = len(d)
    out = {"n": n, "mean_diff": float(d.mean()) if n else None, "t": None, "p": None}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd == 0:
        out.update(t=math.copysign(math.inf, d.mean()) if d.mean() else 0.0, p=0.0 if d.mean() else 1.0)
        return out
    from scipy import stats

    t = float(d.mean() / (sd / math.sqrt(n)))
    out.update(t=t, p=float(2 * stats.t.sf(abs(t), n - 1)))
    return out


def miou_from_confusion(mat: np.ndarray) -> np.ndarray:
    """mIoU over the classes present in GT, from confusion matrices ``mat[..., t, p]``.

    Args:
        mat: (..., K, K) counts (GT class t predicted as p).
    Returns:
        (...) float64 mIoU (NaN where no class has GT pixels).
    """
    mat = np.asarray(mat, dtype=np.float64)
    tp = np.diagonal(mat, axis1=-2, axis2=-1)
    gt, pr = mat.sum(-1), mat.sum(-2)
    union = gt + pr - tp
    present = gt > 0
    iou = np.where(present, tp / np.where(union > 0, union, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return iou.sum(-1) / present.sum(-1)


def paired_bootstrap(conf_a: np.ndarray, conf_b: np.ndarray, n_boot: int = 10000, seed: int = 0,
                     chunk: int = 1000) -> dict:
    """Image-level paired bootstrap of the mIoU difference ``b − a``.

    Args:
        conf_a, conf_b: (R, N, K, K) per-image confusion matrices of R runs on the same N eval
            images in the same order (run r of ``a`` paired with run r of ``b``).
        n_boot: resamples; seed: of the resampling (fixed: the same table gives the same CI).
    Returns:
        dict ``diff`` (the observed mean-over-runs difference), ``ci95`` [low, high] (2.5 and
        97.5 percentiles of the resampled differences), ``significant`` (the interval excludes
        0), ``n_boot``, ``n_images``.
    Raises:
        ValueError: shapes that differ or are not (R, N, K, K).
    """
    a, b = np.asarray(conf_a), np.asarray(conf_b)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"paired_bootstrap: confusion shapes {a.shape} and {b.shape}; want equal (R, N, K, K)")
    r, n, k, _ = a.shape
    fa, fb = a.reshape(r, n, k * k).astype(np.float64), b.reshape(r, n, k * k).astype(np.float64)
    obs = float((miou_from_confusion(b.sum(1)) - miou_from_confusion(a.sum(1))).mean())
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=m).astype(np.float64)  # (m, N) resample counts
        da = np.stack([miou_from_confusion((w @ fa[i]).reshape(m, k, k)) for i in range(r)])
        db = np.stack([miou_from_confusion((w @ fb[i]).reshape(m, k, k)) for i in range(r)])
        diffs.append((db - da).mean(0))
    d = np.concatenate(diffs)
    lo, hi = (float(v) for v in np.nanpercentile(d, [2.5, 97.5]))
    return {"diff": obs, "ci95": [lo, hi], "significant": bool(lo > 0 or hi < 0), "n_boot": int(n_boot),
            "n_images": int(n)}
