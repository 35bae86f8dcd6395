"""Inference: static integration → m^D0 (DESIGN §3.5) and multi-scale test-time
segmentation (DESIGN §3.7)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import ssdd
from .crf import CRFParams, dense_crf_resized
from .data import normalize, resize_image, resize_mask
from .models.backbones import block_grid, resample_grid


def upsample_dd(d: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A DD-Net logit map on its grid, (h', w') (DESIGN §3.4), resized bilinearly
    (``align_corners=False``) to an image's ``size`` = (H, W): how :func:`static_integrate`
    brings d^K0 / d^A0 to the image, and how readers of ``results/dd0/*.h5`` (which keeps the
    grid) get the map it integrated with. A map already of ``size`` is returned as it is.

    Returns:
        (H, W) float32.
    """
    t = torch.as_tensor(np.asarray(d, dtype=np.float32) if not torch.is_tensor(d) else d).float()
    if tuple(t.shape[-2:]) == tuple(size):
        return t.reshape(size).cpu().numpy()
    return F.interpolate(t.reshape(1, 1, *t.shape[-2:]), size, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()


@torch.no_grad()
def static_integrate(model, img: np.ndarray, m_k: np.ndarray, m_a: np.ndarray, labels: Sequence[int],
                     size: int, biases: ssdd.Biases, flag_ratio: float = 0.5, device="cpu") -> dict:
    """m^D0 for one training image (DESIGN §3.5).

    The image is resized to ``size``×``size`` (the training crop size), the masks to the DD
    resolution (nearest) for the DD-Net; d^K and d^A are resized bilinearly to the image size
    and integrated there with the full-resolution m^K0 / m^A0 (Eq. 3, 4, 17).

    Args:
        model: :class:`~ssdd_core.models.nets.SegModel` with head ``base`` and DD-Net ``d0``.
        img: (H, W, 3) uint8; m_k, m_a: (H, W) uint8 m^K0, m^A0.
        labels: foreground image labels.
    Returns:
        dict: ``mask`` (H, W) uint8 m^D0, ``d_k`` / ``d_a`` (h', w') float32 logits on the DD
        grid (:func:`upsample_dd` gives the (H, W) maps integrated), ``flags`` (21,) bool.
    """
    h, w = img.shape[:2]
    x = torch.from_numpy(normalize(resize_image(img, (size, size))))[None].to(device)
    out = model(x)
    dd = out["logits/base"].shape[-2:]
    mk = torch.from_numpy(resize_mask(m_k, tuple(dd)).astype(np.int64))[None].to(device)
    ma = torch.from_numpy(resize_mask(m_a, tuple(dd)).astype(np.int64))[None].to(device)
    d_k = model.dd("d0", out, "base", mk)
    d_a = model.dd("d0", out, "base", ma)
    grid_k, grid_a = d_k[0].cpu().numpy(), d_a[0].cpu().numpy()
    flags = ssdd.bad_class_flags(m_k, m_a, labels, flag_ratio)
    md = ssdd.integrate(upsample_dd(d_k[0], (h, w)), upsample_dd(d_a[0], (h, w)), m_k.astype(np.int64),
                        m_a.astype(np.int64), flags, biases.b_dd, biases.b_class, biases.b_bg).astype(np.uint8)
    return {"mask": md, "d_k": grid_k.astype(np.float32), "d_a": grid_a.astype(np.float32), "flags": flags}


@torch.no_grad()
def multiscale_probs(model, img: np.ndarray, head: str = "base", base_size: int | None = 448,
                     scales=(0.5, 0.75, 1.0, 1.25, 1.5), flip: bool = True, device="cpu") -> np.ndarray:
    """Softmax averaged over scales × flip, at image size (DESIGN §3.7).

    Args:
        model: :class:`~ssdd_core.models.nets.SegModel`.
        img: (H, W, 3) uint8.
        head: which seg head predicts (``main`` for SSDD dynamic, ``base`` for the baseline).
        base_size: the image is first resized to ``base_size``×``base_size`` (authors: 448);
            None keeps its size.
    Returns:
        (21, H, W) float32 probabilities.
    """
    h, w = img.shape[:2]
    x = torch.from_numpy(normalize(img))[None].to(device)
    bh, bw = (base_size, base_size) if base_size else (h, w)
    acc = torch.zeros(1, 21, h, w, device=device)
    n = 0
    for s in scales:
        sh, sw = max(8, round(bh * s)), max(8, round(bw * s))
        xs = F.interpolate(x, (sh, sw), mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        logits = resample_grid(model(batch, heads=(head,))[f"logits/{head}"], block_grid(model.dd_stride),
                               block_grid(1), (sh, sw))
        if (sh, sw) != (h, w):
            logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
        p = F.softmax(logits, 1)
        acc += p[:1]
        n += 1
        if flip:
            acc += p[1:].flip(-1)
            n += 1
    return (acc[0] / n).cpu().numpy()


def crf_labels(p: np.ndarray, min_prob: float = 0.0) -> np.ndarray:
    """Labels the test-time CRF runs over: those whose probability reaches ``min_prob``
    somewhere in the image (a CPU speed-up: the CRF cost grows with the label count; no
    image-level labels are used). ``min_prob`` = 0, or no label reaching it, keeps all.

    Args:
        p: (21, H, W) float probabilities.
    Returns:
        (L,) int64 label ids, ascending.
    """
    keep = np.arange(p.shape[0])
    if min_prob > 0:
        hit = np.flatnonzero(p.reshape(p.shape[0], -1).max(1) >= min_prob)
        if hit.size:
            keep = hit
    return keep


def crf_argmax(img: np.ndarray, p: np.ndarray, crf: CRFParams, min_prob: float = 0.0,
               scale: float = 1.0) -> np.ndarray:
    """Dense CRF over :func:`crf_labels` (``min_prob``) of ``p`` (21, H, W), then argmax →
    (H, W) uint8 ids. ``scale`` < 1 runs the CRF at that fraction of the image size
    (:func:`~ssdd_core.crf.dense_crf_resized`). A top-level function so a worker process can
    run it while the network sees the next image."""
    keep = crf_labels(p, min_prob)
    q = dense_crf_resized(img, p[keep], crf, scale)
    return keep[q.argmax(0)].astype(np.uint8)


def inference_crf_params(cfg: dict) -> CRFParams | None:
    """The test-time CRF's kernel settings (DESIGN §3.7: the CRF of §3.3): the ``crf`` block with
    ``infer.crf_params`` merged over it (null or absent = the ``crf`` block unchanged, as the
    paper); None when ``infer.crf`` is false.

    Args:
        cfg: a validated config (blocks ``crf`` and ``infer``).
    Raises:
        KeyError: a key in ``infer.crf_params`` that the ``crf`` block does not have.
    """
    if not cfg["infer"]["crf"]:
        return None
    over = cfg["infer"].get("crf_params") or {}
    unknown = set(over) - set(cfg["crf"])
    if unknown:
        raise KeyError(f"infer.crf_params: unknown CRF keys {sorted(unknown)} (the crf block has {sorted(cfg['crf'])})")
    return CRFParams.from_config({**cfg["crf"], **over})


@dataclass(frozen=True)
class InferSettings:
    """Test-time settings (config block ``infer``, DESIGN §3.7): long side ``base_size`` (px;
    None = the image's size) times each of ``scales``, ``flip``, the CRF (``crf``) over the labels
    reaching ``crf_min_prob`` at ``crf_scale`` of the image size, the network at ``output_stride``."""

    base_size: int | None
    scales: tuple[float, ...]
    flip: bool
    crf: bool
    crf_min_prob: float
    crf_scale: float
    output_stride: int

    @classmethod
    def from_config(cls, block: dict) -> "InferSettings":
        """From a validated ``infer`` block (the schema supplies every default)."""
        return cls(block["base_size"], tuple(float(v) for v in block["scales"]), bool(block["flip"]),
                   bool(block["crf"]), float(block["crf_min_prob"]), float(block["crf_scale"]),
                   int(block["output_stride"]))


def predict_probs(model, img: np.ndarray, head: str, settings: InferSettings, device="cpu") -> np.ndarray:
    """:func:`multiscale_probs` with the scales / flip of ``settings`` → (21, H, W)."""
    return multiscale_probs(model, img, head, settings.base_size, settings.scales, settings.flip, device)


def predict(model, img: np.ndarray, head: str, settings: InferSettings, crf: CRFParams | None,
            device="cpu") -> np.ndarray:
    """Test-time prediction: multi-scale softmax, optional CRF (over :func:`crf_labels` with
    ``settings.crf_min_prob``, at ``settings.crf_scale``), argmax (DESIGN §3.7).

    Returns:
        (H, W) uint8 labels 0..20.
    """
    p = predict_probs(model, img, head, settings, device)
    if crf is None:
        return p.argmax(0).astype(np.uint8)
    return crf_argmax(img, p, crf, settings.crf_min_prob, settings.crf_scale)
