"""PSA seed generation (Ahn & Kwak, CVPR 2018; DESIGN §3.2): CAM, affinity labels,
AffinityNet loss and the random walk that gives p^K0 / m^K0."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .crf import CRFParams, dense_crf_resized
from .data import normalize, resize_image
from .models.backbones import block_grid, resample_grid

IGNORE = 255


@torch.no_grad()
def compute_cam(model, img: np.ndarray, labels: Sequence[int], scales=(1.0, 0.5, 1.5, 2.0),
                flip: bool = True, device="cpu", base_size: int | None = None) -> np.ndarray:
    """Multi-scale, flipped CAM of the present classes, each normalised by its max.

    Args:
        model: :class:`~ssdd_core.models.nets.Classifier` in eval mode.
        img: (H, W, 3) uint8 RGB.
        labels: foreground classes 1..20 present in the image.
        scales: input scales, relative to the image (or to ``base_size``).
        flip: also run the horizontally flipped image.
        base_size: if set, the long side is first resized to this many pixels.
    Returns:
        (len(labels), H, W) float32 CAM in [0, 1] (each channel's max is 1 unless all 0).
    """
    h, w = img.shape[:2]
    x = torch.from_numpy(normalize(img))[None].to(device)
    base = 1.0 if not base_size else base_size / max(h, w)
    idx = torch.as_tensor([int(c) - 1 for c in labels], dtype=torch.long, device=device)
    acc = torch.zeros(len(labels), h, w, device=device)
    for s in scales:
        sh, sw = max(1, round(h * s * base)), max(1, round(w * s * base))
        xs = F.interpolate(x, (sh, sw), mode="bilinear", align_corners=False)
        batch = torch.cat([xs, xs.flip(-1)]) if flip else xs
        cam = resample_grid(model.cam(batch)[:, idx], model.backbone.grids["out"], block_grid(1), (sh, sw))
        if (sh, sw) != (h, w):
            cam = F.interpolate(cam, (h, w), mode="bilinear", align_corners=False)
        acc += cam[0]
        if flip:
            acc += cam[1].flip(-1)
    mx = acc.flatten(1).max(1).values.clamp(min=1e-5)[:, None, None]
    return (acc / mx).cpu().numpy().astype(np.float32)


def background_score(cam: np.ndarray, alpha: float) -> np.ndarray:
    """PSA background score ``(1 − max_c CAM_c)^α``.

    Args:
        cam: (C, H, W) float CAM in [0, 1] (C may be 0).
    Returns:
        (H, W) float32.
    """
    if cam.shape[0] == 0:
        return np.ones(cam.shape[1:], dtype=np.float32)
    return np.power(1.0 - cam.max(0), alpha).astype(np.float32)


def affinity_label_scores(img: np.ndarray, cam: np.ndarray, alpha: float, crf: CRFParams,
                          scale: float = 1.0) -> np.ndarray:
    """One PSA affinity-label score map: bg score with exponent α stacked over the CAM,
    refined by dense CRF over the present labels.

    Args:
        img: (H, W, 3) uint8; cam: (C, H, W) float in [0, 1].
        alpha: 4 ("la", low-alpha: confident foreground) or 32 ("ha": confident background).
        scale: in (0, 1]: run the CRF on the image and scores resized by this factor (kernel
            widths scaled alike) and upsample the result bilinearly. 1 = PSA (full size); 0.5
            made the rule 3× faster on voc2012_mini; the labels are pooled to the stride-8 grid anyway.
    Returns:
        (C + 1, H, W) float32 probabilities, channel 0 = background.
    Raises:
        ValueError: if ``scale`` is not in (0, 1].
    """
    probs = np.concatenate([background_score(cam, alpha)[None], cam], 0)
    return dense_crf_resized(img, probs, crf, scale)


def labels_from_scores(la: torch.Tensor, ha: torch.Tensor, valid: torch.Tensor, stride: int) -> torch.Tensor:
    """Affinity training labels on the stride grid (DESIGN §3.2).

    Each score map is average-pooled by ``stride``; label = la's argmax; la-background → 255;
    then ha-background → 0; grid cells mostly outside the image (padding) → 255.

    Args:
        la, ha: (C + 1, H, W) float score maps (channel 0 = background, then present classes
            in order), already cropped / flipped like the image. H, W multiples of stride.
        valid: (H, W) float, 1 inside the image, 0 on padding.
        stride: grid stride s.
    Returns:
        (H/s, W/s) int64 labels: 0 = bg, 1..C = present-class index, 255 = unknown.
    """
    pla = F.avg_pool2d(la[None], stride)[0]
    pha = F.avg_pool2d(ha[None], stride)[0]
    pv = F.avg_pool2d(valid[None, None], stride)[0, 0]
    lab = pla.argmax(0)
    lab[lab == 0] = IGNORE
    lab[pha.argmax(0) == 0] = 0
    lab[pv < 0.5] = IGNORE
    return lab


@lru_cache(maxsize=None)
def pair_offsets(radius: int = 5) -> list[tuple[int, int]]:
    """Offsets (dy, dx) with dy² + dx² < radius², one of each ± pair (dy > 0, or dy = 0, dx > 0)."""
    out = []
    for dy in range(0, radius):
        for dx in range(-radius + 1, radius):
            if dy * dy + dx * dx < radius * radius and (dy > 0 or dx > 0):
                out.append((dy, dx))
    return out


def pair_affinities(feat: torch.Tensor, radius: int = 5) -> tuple[torch.Tensor, list]:
    """Affinities ``a_ij = exp(−mean_k |f_ik − f_jk|)`` for all pairs within ``radius``.

    Args:
        feat: (B, D, h, w) AffinityNet features.
    Returns:
        (aff, offsets): list of (B, h − dy, w − |dx|) tensors aligned with the pair's first
        pixel window, one per offset; and the offsets.
    """
    offs = pair_offsets(radius)
    h, w = feat.shape[2:]
    out = []
    for dy, dx in offs:
        a, b = _windows(feat, dy, dx, h, w)
        out.append(torch.exp(-(a - b).abs().mean(1)))
    return out, offs


def _windows(t, dy, dx, h, w):
    x0 = max(0, -dx)
    x1 = w - max(0, dx)
    a = t[..., 0:h - dy, x0:x1]
    b = t[..., dy:h, x0 + dx:x1 + dx]
    return a, b


def affinity_loss(feat: torch.Tensor, labels: torch.Tensor, radius: int = 5) -> tuple[torch.Tensor, dict]:
    """PSA affinity loss ``bg_pos/4 + fg_pos/4 + neg/2`` (each a mean over its pairs).

    Args:
        feat: (B, D, h, w) features; labels: (B, h, w) int64 grid labels (255 excluded).
    Returns:
        (loss, parts): scalar loss and a dict of the three terms (floats) for logging.
    """
    h, w = labels.shape[1:]
    aff, offs = pair_affinities(feat, radius)
    sums = {"bg": 0.0, "fg": 0.0, "neg": 0.0}
    counts = {"bg": 0, "fg": 0, "neg": 0}
    eps = 1e-5
    for a, (dy, dx) in zip(aff, offs):
        la, lb = _windows(labels, dy, dx, h, w)
        ok = (la != IGNORE) & (lb != IGNORE)
        eq = la == lb
        bgp = ok & eq & (la == 0)
        fgp = ok & eq & (la != 0)
        neg = ok & ~eq
        sums["bg"] = sums["bg"] + (-torch.log(a + eps) * bgp).sum()
        sums["fg"] = sums["fg"] + (-torch.log(a + eps) * fgp).sum()
        sums["neg"] = sums["neg"] + (-torch.log(1 + eps - a) * neg).sum()
        counts["bg"] += int(bgp.sum())
        counts["fg"] += int(fgp.sum())
        counts["neg"] += int(neg.sum())
    terms = {k: sums[k] / max(1, counts[k]) if counts[k] else feat.sum() * 0.0 for k in sums}
    loss = terms["bg"] / 4 + terms["fg"] / 4 + terms["neg"] / 2
    return loss, {k: float(v.detach()) for k, v in terms.items()}


def transition_matrix(feat: torch.Tensor, radius: int = 5, beta: float = 8.0) -> torch.Tensor:
    """Sparse random-walk transition matrix ``T = D⁻¹ A^β`` over the feature grid.

    A holds ``a_ij`` for pairs strictly inside ``radius`` (both directions), 1 on the diagonal,
    0 elsewhere; D are its row sums (after the power), so each row of T sums to 1.

    Args:
        feat: (1, D, h, w) AffinityNet features.
    Returns:
        (h·w, h·w) sparse CSR float32 tensor.
    """
    _, _, h, w = feat.shape
    n = h * w
    idx = torch.arange(n, device=feat.device).view(h, w)
    rows, cols, vals = [idx.flatten()], [idx.flatten()], [torch.ones(n, device=feat.device)]
    aff, offs = pair_affinities(feat, radius)
    for a, (dy, dx) in zip(aff, offs):
        ia, ib = _windows(idx, dy, dx, h, w)
        v = a[0].flatten() ** beta
        rows += [ia.flatten(), ib.flatten()]
        cols += [ib.flatten(), ia.flatten()]
        vals += [v, v]
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    deg = torch.zeros(n, device=feat.device).index_add_(0, r, v)
    v = v / deg[r]
    return torch.sparse_coo_tensor(torch.stack([r, c]), v, (n, n), check_invariants=False).coalesce().to_sparse_csr()


@torch.no_grad()
def random_walk(aff_model, img: np.ndarray, cam: np.ndarray, bg_pow: float = 16.0, beta: float = 8.0,
                logt: int = 8, radius: int = 5, device="cpu", long_side: int | None = None) -> np.ndarray:
    """Propagate CAM scores with AffinityNet's random walk → p^K0 (DESIGN §3.2).

    The image (and the CAM) are first resized to a long side of ``long_side`` px, the scale
    AffinityNet was trained at (:func:`~ssdd_core.config.walk_scale_range`; PSA walks at the
    original size, inside its 448–768 px training range); the radius-``radius`` neighbourhood and the
    2^logt steps then cover the relative extent they were trained for. The image is padded to
    a multiple of the grid stride s; the CAM with a background channel ``(1 − max CAM)^bg_pow``
    is average-pooled by s; ``X ← T X`` is applied 2^logt times; the result is upsampled, the
    padding cropped, resized back to the image and each pixel normalised to sum 1.

    Args:
        aff_model: :class:`~ssdd_core.models.nets.AffinityNet` in eval mode.
        img: (H, W, 3) uint8; cam: (C, H, W) float CAM of the present classes.
        long_side: walk scale in px (None = the image's own size).
    Returns:
        (C + 1, H, W) float32 probabilities, channel 0 = background.
    """
    s = aff_model.grid_stride
    H, W = img.shape[:2]
    scores = torch.from_numpy(np.concatenate([background_score(cam, bg_pow)[None], cam], 0))[None]
    if long_side and long_side != max(H, W):
        r = long_side / max(H, W)
        size = (max(s, round(H * r)), max(s, round(W * r)))
        img = resize_image(img, size)
        scores = F.interpolate(scores, size, mode="bilinear", align_corners=False)
    h, w = img.shape[:2]
    ph, pw = -(-h // s) * s, -(-w // s) * s
    x = torch.from_numpy(normalize(img))[None]
    x = F.pad(x, (0, pw - w, 0, ph - h)).to(device)
    feat = aff_model(x)
    sc = F.pad(scores, (0, pw - w, 0, ph - h)).to(device)
    sc = F.avg_pool2d(sc, s)[0]  # (C+1, gh, gw)
    gh, gw = sc.shape[1:]
    T = transition_matrix(feat, radius, beta)
    X = sc.flatten(1).t().contiguous()  # (N, C+1)
    for _ in range(2 ** logt):
        X = T @ X
    out = X.t().reshape(1, -1, gh, gw)
    out = resample_grid(out, block_grid(s), block_grid(1), (h, w))
    if (h, w) != (H, W):
        out = F.interpolate(out, (H, W), mode="bilinear", align_corners=False)
    out = out[0].clamp(min=0)
    out = out / out.sum(0, keepdim=True).clamp(min=1e-8)
    return out.cpu().numpy().astype(np.float32)


def cam_label_map(cam: np.ndarray, labels: Sequence[int], bg_threshold: float) -> np.ndarray:
    """The CAM's own segmentation (the CAM row of seed scores): argmax over a constant
    background score ``bg_threshold`` and the CAM of each present class.

    Args:
        cam: (C, H, W) float CAM in [0, 1]; labels: the C present classes (1..20).
    Returns:
        (H, W) uint8 VOC class ids.
    """
    sc = np.concatenate([np.full((1,) + cam.shape[1:], bg_threshold, np.float32), cam], 0)
    return full_label_map(sc.argmax(0), labels)


def full_label_map(argmax_idx: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Map present-label indices (0 = bg, k = labels[k−1]) to VOC class ids, uint8 (H, W)."""
    lut = np.array([0] + [int(c) for c in labels], dtype=np.uint8)
    return lut[argmax_idx]


# --------------------------------------------------------------------------- training steps

def cls_step(model, batch, device):
    """Multilabel soft-margin loss of the PSA classifier."""
    x, y = batch["img"].to(device), batch["y"].to(device)
    loss = F.multilabel_soft_margin_loss(model(x), y)
    return loss, {"cls": float(loss.detach())}


def aff_step(model, batch, device):
    """PSA affinity loss (bg_pos/4 + fg_pos/4 + neg/2)."""
    loss, parts = affinity_loss(model(batch["img"].to(device)), batch["aff_label"].to(device))
    return loss, parts
