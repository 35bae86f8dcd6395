"""Fully connected CRF (Krähenbühl & Koltun 2011) via ``pydensecrf2`` (DESIGN §3.3)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF settings (PSA / SSDD values by default; config block ``crf``)."""

    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bi_sxy: float = 80.0
    bi_srgb: float = 13.0
    bi_w: float = 10.0
    iters: int = 10

    @classmethod
    def from_config(cls, cfg: dict) -> "CRFParams":
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


def dense_crf(img: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams(), scale: float = 1.0) -> np.ndarray:
    """Refine per-pixel probabilities with a fully connected CRF.

    Unary ``−log p`` (clipped at 1e-5); ``addPairwiseGaussian(sxy, compat)`` +
    ``addPairwiseBilateral(sxy, srgb, compat=bi_w)``; ``iters`` mean-field steps.

    Args:
        img: (H, W, 3) uint8 RGB image (copied when not C-contiguous and writable).
        probs: (L, H, W) float probabilities over the L labels considered (present labels
            only in training stages; all 21 at test time). Need not be normalised.
        params: kernel settings.
        scale: multiply the spatial ``sxy`` of both kernels by this (for maps computed at a
            reduced resolution, e.g. the in-loop CRF at the DD resolution).
    Returns:
        (L, H, W) float32 probabilities (columns sum to 1).
    Raises:
        ValueError: if shapes do not match.
    """
    import pydensecrf.densecrf as dcrf

    img = np.ascontiguousarray(img, dtype=np.uint8)
    if not img.flags.writeable:  # pydensecrf needs a writable buffer (e.g. np.asarray(PIL image))
        img = img.copy()
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"dense_crf: image must be (H, W, 3) uint8, got {img.shape}")
    n, h, w = probs.shape
    if (h, w) != img.shape[:2]:
        raise ValueError(f"dense_crf: probs {probs.shape[1:]} vs image {img.shape[:2]}")
    if n == 1:
        return np.ones((1, h, w), dtype=np.float32)
    d = dcrf.DenseCRF2D(w, h, n)
    u = -np.log(np.clip(probs.astype(np.float32), 1e-5, None)).reshape(n, -1)
    d.setUnaryEnergy(np.ascontiguousarray(u, dtype=np.float32))
    d.addPairwiseGaussian(sxy=params.gauss_sxy * scale, compat=params.gauss_compat)
    d.addPairwiseBilateral(sxy=params.bi_sxy * scale, srgb=params.bi_srgb, rgbim=img, compat=params.bi_w)
    q = np.array(d.inference(int(params.iters)), dtype=np.float32).reshape(n, h, w)
    return q


def dense_crf_resized(img: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams(),
                      scale: float = 1.0) -> np.ndarray:
    """:func:`dense_crf` run on the image and probabilities resized by ``scale`` (kernel widths
    scaled alike), its output resized back bilinearly (PIL, no torch: safe in forked CRF
    workers). Beyond PSA / SSDD, a speed option: the cost is proportional to the pixel count.

    Args:
        img: (H, W, 3) uint8; probs: (L, H, W) float.
        scale: in (0, 1]; 1 = :func:`dense_crf` at full size.
    Returns:
        (L, H, W) float32 probabilities.
    Raises:
        ValueError: if ``scale`` is not in (0, 1] or the shapes do not match.
    """
    from .data import resize_image, resize_maps

    if not 0 < scale <= 1:
        raise ValueError(f"dense_crf_resized: scale must be in (0, 1], got {scale}")
    if scale == 1:
        return dense_crf(img, probs, params)
    h, w = img.shape[:2]
    if probs.shape[1:] != (h, w):
        raise ValueError(f"dense_crf_resized: probs {probs.shape[1:]} vs image {img.shape[:2]}")
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    q = dense_crf(resize_image(img, size), resize_maps(probs, size), params, scale=scale)
    return resize_maps(q, (h, w))
