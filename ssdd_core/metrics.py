"""Confusion-matrix mIoU (DESIGN §3.8), torchmetrics-style ``update`` / ``compute``."""
from __future__ import annotations

import numpy as np

from .data import CLASS_NAMES, IGNORE, NUM_CLASSES


class ConfusionMatrix:
    """Accumulates a (K, K) confusion matrix over a whole split.

    ``mat[t, p]`` counts pixels of GT class ``t`` predicted as ``p``. Pixels whose GT is
    255 are ignored. IoU is computed from the accumulated matrix (never a mean of
    per-image IoUs).

    Args:
        num_classes: K (21 for VOC).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, pred_ignore: bool = False):
        self.k = num_classes
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.n_images = 0
        self.pred_ignore = pred_ignore
        self.n_scored = 0  # GT pixels (not 255) seen
        self.n_unlabelled = 0  # of those, predicted 255 (pred_ignore only)

    def update(self, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Add one image; returns its own (K, K) int64 confusion matrix (for image-level
        statistics, :mod:`ssdd_core.stats`).

        Args:
            pred: (H, W) integer predictions in 0..K-1; with ``pred_ignore`` (seeds, which may
                leave pixels unlabelled: IRN's ``ir_label``) also 255, left out of the matrix
                and counted for ``coverage``.
            target: (H, W) integer GT in 0..K-1 or 255.
        Raises:
            ValueError: shapes differ, or a prediction / GT value out of range.
        """
        pred = np.asarray(pred).astype(np.int64)
        target = np.asarray(target).astype(np.int64)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != GT shape {target.shape}")
        keep = target != IGNORE
        self.n_scored += int(keep.sum())
        if self.pred_ignore:
            unlabelled = keep & (pred == IGNORE)
            self.n_unlabelled += int(unlabelled.sum())
            keep &= ~unlabelled
        t, p = target[keep], pred[keep]
        if t.size and (t.max() >= self.k or t.min() < 0):
            raise ValueError(f"GT label out of range 0..{self.k - 1} (and not {IGNORE})")
        if p.size and (p.max() >= self.k or p.min() < 0):
            raise ValueError(f"prediction out of range 0..{self.k - 1}")
        one = np.bincount(t * self.k + p, minlength=self.k * self.k).reshape(self.k, self.k)
        self.mat += one
        self.n_images += 1
        return one

    def foreground_share(self) -> tuple[float | None, float | None]:
        """(predicted, GT): the share of the scored pixels that the predictions / the GT call
        foreground (any class but background 0); (None, None) before any pixel is scored."""
        total = self.mat.sum()
        if not total:
            return None, None
        return float(1 - self.mat[:, 0].sum() / total), float(1 - self.mat[0].sum() / total)

    def compute(self) -> dict:
        """Scores from the accumulated matrix.

        Returns:
            dict with ``iou`` (list of K floats or None: None for a class absent from both
            GT and prediction), ``miou`` (mean over classes with GT pixels),
            ``miou_all21`` (mean over classes with a defined IoU), ``pixel_accuracy``,
            ``classes_in_gt`` and ``n_images``; with ``pred_ignore`` also ``coverage``, the
            fraction of GT pixels that have a prediction (the scores are over those only).
        """
        tp = np.diag(self.mat).astype(np.float64)
        gt = self.mat.sum(1).astype(np.float64)
        pr = self.mat.sum(0).astype(np.float64)
        union = gt + pr - tp
        iou = [float(tp[c] / union[c]) if union[c] > 0 else None for c in range(self.k)]
        in_gt = [c for c in range(self.k) if gt[c] > 0]
        defined = [c for c in range(self.k) if iou[c] is not None]
        total = self.mat.sum()
        extra = {"coverage": 1.0 - self.n_unlabelled / self.n_scored if self.n_scored else None} \
            if self.pred_ignore else {}
        return {**extra,
            "miou": float(np.mean([iou[c] for c in in_gt])) if in_gt else None,
            "miou_all21": float(np.mean([iou[c] for c in defined])) if defined else None,
            "pixel_accuracy": float(tp.sum() / total) if total else None,
            "iou": iou,
            "iou_by_class": {CLASS_NAMES[c] if self.k == NUM_CLASSES else str(c): iou[c] for c in range(self.k)},
            "classes_in_gt": in_gt,
            "n_images": self.n_images,
        }


def integration_stats(m_k: np.ndarray, m_a: np.ndarray, m_d: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Counts describing how m^D chose between m^K and m^A, checked against GT (DESIGN §3.4).

    Args:
        m_k, m_a, m_d: (H, W) uint8 knowledge, advice and integrated masks; gt: (H, W) uint8
            ground truth (255 = void, left out).
    Returns:
        (7,) int64: pixels scored, pixels where m^K ≠ m^A, of those: where m^D took m^A, where
        m^K is right, where m^A is right, where m^D is right, and where the better one of
        m^K / m^A is right (an oracle choice).
    """
    ok = gt != 255
    diff = ok & (m_k != m_a)
    g = gt[diff]
    k_ok, a_ok, d_ok = m_k[diff] == g, m_a[diff] == g, m_d[diff] == g
    return np.array([ok.sum(), diff.sum(), (m_d[diff] == m_a[diff]).sum(), k_ok.sum(), a_ok.sum(), d_ok.sum(),
                     (k_ok | a_ok).sum()], dtype=np.int64)


def advice_counts(m_k: np.ndarray, m_a: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Is the advice right where it differs from the knowledge? The paper's precondition for SSDD
    (§3.2: |S^{A,T}| > |S^{A,F}|), counted against GT.

    Args:
        m_k, m_a: knowledge and advice masks (..., H, W) of integer class ids (e.g. m^K0 / m^A0,
            or the dynamic stage's m^K1 / m^A1 over a batch); gt: the same shape, 255 = void.
    Returns:
        (3,) int64: pixels with GT where m^K ≠ m^A, of those where m^A is right, where m^K is
        right (the two need not add up: both can be wrong).
    Raises:
        ValueError: shapes differ.
    """
    if not (np.shape(m_k) == np.shape(m_a) == np.shape(gt)):
        raise ValueError(f"advice_counts: shapes {np.shape(m_k)}, {np.shape(m_a)}, {np.shape(gt)} differ")
    v = (gt != 255) & (m_k != m_a)
    return np.array([v.sum(), (v & (m_a == gt)).sum(), (v & (m_k == gt)).sum()], dtype=np.int64)
