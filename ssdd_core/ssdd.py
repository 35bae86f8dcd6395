"""SSDD module pieces: difference target, difference loss J, bad-sample flags, integration.

Shimoda & Yanai, "Self-Supervised Difference Detection for Weakly-Supervised Semantic
Segmentation", ICCV 2019 (Eq. 1-4, 10, 16-17 and supplement A.1), as DESIGN §3.4 fixes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = 255
NUM_CLASSES = 21


def difference_target(m_k: torch.Tensor, m_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Target M of the DD-Net (Eq. 1, with DESIGN §3.4's orientation).

    Args:
        m_k, m_a: (..., H, W) int64 label maps (0..20, 255 = ignore).
    Returns:
        (M, valid): float32 M = 1 where the masks differ, 0 where they agree; bool ``valid``
        is False where either mask is 255 (those pixels carry no target).
    """
    valid = (m_k != IGNORE) & (m_a != IGNORE)
    return (m_k != m_a).float(), valid


def difference_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                    keep: torch.Tensor | None = None) -> torch.Tensor:
    """Class-balanced difference loss J(d, M), per sample then averaged (Eq. 2, DESIGN §3.4).

    For each sample, binary cross-entropy is averaged separately over the M = 1 and M = 0
    pixels and the two means are averaged; when one half is empty, J is the other half's
    mean; a sample with no valid pixel contributes nothing. Never NaN.

    Args:
        logits: (B, H, W) float DD-Net logits.
        target: (B, H, W) float {0, 1}.
        valid: (B, H, W) bool, pixels that count (default all).
        keep: (B,) bool, samples that count (bad samples are dropped, supplement A.1).
    Returns:
        scalar tensor; 0 (with grad) when no sample is kept.
    """
    if valid is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pos = (target > 0.5) & valid
    neg = (target <= 0.5) & valid
    npos = pos.flatten(1).sum(1)
    nneg = neg.flatten(1).sum(1)
    mpos = (bce * pos).flatten(1).sum(1) / npos.clamp(min=1)
    mneg = (bce * neg).flatten(1).sum(1) / nneg.clamp(min=1)
    hp, hn = npos > 0, nneg > 0
    per = torch.where(hp & hn, (mpos + mneg) / 2, torch.where(hp, mpos, mneg))
    ok = hp | hn
    if keep is not None:
        ok = ok & keep.to(ok.device)
    if not ok.any():
        return logits.sum() * 0.0
    return per[ok].mean()


def bad_class_flags(m_k: np.ndarray | torch.Tensor, m_a: np.ndarray | torch.Tensor,
                    labels, ratio: float = 0.5) -> np.ndarray:
    """Classes whose advice failed (supplement A.1, Eq. 16).

    ``r_c = |{u: m_a = c}| / max(1, |{u: m_k = c}|)``; a foreground image-level class c is
    flagged when ``r_c < ratio`` (so a class missing from both masks is flagged).

    Args:
        m_k, m_a: (H, W) integer label maps.
        labels: iterable of the image's foreground classes (1..20).
        ratio: threshold (0.5).
    Returns:
        (21,) bool flags.
    """
    m_k = torch.as_tensor(np.asarray(m_k)) if not torch.is_tensor(m_k) else m_k
    m_a = torch.as_tensor(np.asarray(m_a)) if not torch.is_tensor(m_a) else m_a
    present = torch.zeros(1, NUM_CLASSES, dtype=torch.bool)
    present[0, [int(c) for c in labels]] = True
    return batch_flags(m_k.long()[None], m_a.long()[None], present, ratio)[0].cpu().numpy()


def batch_flags(m_k: torch.Tensor, m_a: torch.Tensor, labels: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Vectorised :func:`bad_class_flags` over a batch.

    Args:
        m_k, m_a: (B, H, W) int64.
        labels: (B, 21) bool/float multi-hot of present labels (column 0 = background, ignored).
    Returns:
        (B, 21) bool flags.
    """
    b = m_k.shape[0]
    ck = torch.stack([torch.bincount(m_k[i][m_k[i] < NUM_CLASSES], minlength=NUM_CLASSES) for i in range(b)])
    ca = torch.stack([torch.bincount(m_a[i][m_a[i] < NUM_CLASSES], minlength=NUM_CLASSES) for i in range(b)])
    r = ca.float() / ck.clamp(min=1).float()
    fg = labels.bool().clone()
    fg[:, 0] = False
    return (r < ratio) & fg


@dataclass(frozen=True)
class Biases:
    """The integration biases of Eq. 17 (DESIGN §3.4): ``b_dd`` (towards the advice), ``b_class``
    (against a flagged class), ``b_bg`` (against background). Static stage 0.1 / 1.0 / 0.1,
    dynamic 0.4 / 1.0 / 0.0 in the paper; from the ``static`` / ``dynamic`` config blocks."""

    b_dd: float
    b_class: float
    b_bg: float

    @classmethod
    def from_config(cls, block: dict) -> "Biases":
        """From a validated ``static`` or ``dynamic`` config block."""
        return cls(float(block["b_dd"]), float(block["b_class"]), float(block["b_bg"]))


def integrate(d_k, d_a, m_k, m_a, flags, b_dd: float, b_class: float, b_bg: float):
    """Choose, per pixel, the advice or the knowledge label (SSDD Eq. 3, 4, 17; DESIGN §3.4).

    ``w = σ(d_k) − σ(d_a) + b_dd``; ``w −= b_bg`` where m_k = 0, ``w += b_bg`` where m_a = 0;
    for each flagged class c: ``w −= b_class`` where m_k = c, ``w += b_class`` where m_a = c;
    ``m_D = m_a where w ≥ 0 else m_k``.

    Args:
        d_k, d_a: (..., H, W) float difference *logits* for m_k and m_a (torch or numpy).
        m_k, m_a: (..., H, W) int label maps, values 0..20 or 255.
        flags: (21,) bool (or (B, 21) with a leading batch dim matching the maps).
        b_dd, b_class, b_bg: biases (static 0.1, 1.0, 0.1; dynamic 0.4, 1.0, 0.0).
    Returns:
        m_D with the type and shape of m_k.
    Raises:
        ValueError: if the shapes differ.
    """
    is_np = isinstance(m_k, np.ndarray)
    t = (lambda a: torch.as_tensor(np.asarray(a))) if is_np else (lambda a: torch.as_tensor(a))
    dk, da, mk, ma, fl = t(d_k).float(), t(d_a).float(), t(m_k).long(), t(m_a).long(), t(flags).bool()
    if not (dk.shape == da.shape == mk.shape == ma.shape):
        raise ValueError(f"integrate: shapes differ: d_k {tuple(dk.shape)}, d_a {tuple(da.shape)}, "
                         f"m_k {tuple(mk.shape)}, m_a {tuple(ma.shape)}")
    w = torch.sigmoid(dk) - torch.sigmoid(da) + b_dd
    w = w - b_bg * (mk == 0).float() + b_bg * (ma == 0).float()
    if fl.dim() == 1:
        fk = fl[mk.clamp(max=NUM_CLASSES - 1)] & (mk < NUM_CLASSES)
        fa = fl[ma.clamp(max=NUM_CLASSES - 1)] & (ma < NUM_CLASSES)
    else:  # (B, 21) flags, maps (B, H, W)
        idx_k = mk.clamp(max=NUM_CLASSES - 1).flatten(1)
        idx_a = ma.clamp(max=NUM_CLASSES - 1).flatten(1)
        fk = torch.gather(fl, 1, idx_k).view_as(mk) & (mk < NUM_CLASSES)
        fa = torch.gather(fl, 1, idx_a).view_as(ma) & (ma < NUM_CLASSES)
    w = w - b_class * fk.float() + b_class * fa.float()
    md = torch.where(w >= 0, ma, mk)
    if is_np:
        return md.numpy().astype(np.asarray(m_k).dtype)
    return md.to(torch.as_tensor(m_k).dtype)
