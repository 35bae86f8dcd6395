"""SSDD's region refinement steps (DESIGN §3.5-3.7): the training steps of the static stage
(L_static = L_seg(m^K0) + L_diff0, Eq. 6-9), of the dynamic stage (Eq. 11-15: m^K1 / m^A1 by the
in-loop CRF, m^D1 / m^D2 by the SSDD modules) and of the static-only seg rows, with L_seg.
The SSDD module itself (difference detection, integration, L_diff; Eq. 3-5, 10, 17) is
:mod:`ssdd_core.ssdd`; the loop that runs these steps is :func:`ssdd_core.train.fit`."""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from . import ssdd
from .crf import CRFParams, dense_crf
from .metrics import advice_counts


def seg_loss(logits: torch.Tensor, mask: torch.Tensor, kind: str = "balanced") -> torch.Tensor:
    """L_seg (SSDD Eq. 8 / DESIGN §3.5).

    Args:
        logits: (B, 21, H, W); mask: (B, H, W) int64, 255 ignored.
        kind: ``balanced`` = cross-entropy averaged per class present in the mask, then over
            those classes; ``plain`` = pixel-mean cross-entropy.
    Returns:
        scalar (0 with grad when the mask has no valid pixel).
    """
    if kind == "plain":
        valid = mask != 255
        if not valid.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, mask, ignore_index=255)
    ce = F.cross_entropy(logits, mask, ignore_index=255, reduction="none")
    terms = []
    for c in torch.unique(mask):
        if int(c) == 255:
            continue
        sel = mask == c
        terms.append(ce[sel].mean())
    if not terms:
        return logits.sum() * 0.0
    return torch.stack(terms).mean()


def present_argmax(logits: torch.Tensor, y21: torch.Tensor) -> torch.Tensor:
    """argmax over present labels only. logits (B, 21, H, W), y21 (B, 21) → (B, H, W) int64."""
    masked = logits.masked_fill(~y21.bool()[:, :, None, None], float("-inf"))
    return masked.argmax(1)


def make_baseline_step(mask_key: str, loss_kind: str):
    def step(model, batch, device):
        out = model(batch["img"].to(device))
        loss = seg_loss(out["logits/base"], batch[mask_key].to(device), loss_kind)
        return loss, {"seg": float(loss.detach())}
    return step


def make_static_step(loss_kind: str, flag_ratio: float = 0.5):
    """L_static = L_seg(x, m^K0) + L_diff0 (Eq. 6-9): DD-Net d0 on m^K0 and m^A0, both with
    target [m^K0 ≠ m^A0], bad samples left out."""

    def step(model, batch, device):
        x = batch["img"].to(device)
        mk, ma, y21 = batch["K0"].to(device), batch["A0"].to(device), batch["y21"].to(device)
        out = model(x)
        l_seg = seg_loss(out["logits/base"], mk, loss_kind)
        target, valid = ssdd.difference_target(mk, ma)
        keep = ~ssdd.batch_flags(mk, ma, y21, flag_ratio).any(1)
        dk = model.dd("d0", out, "base", mk)
        da = model.dd("d0", out, "base", ma)
        l_diff = (ssdd.difference_loss(dk, target, valid, keep) + ssdd.difference_loss(da, target, valid, keep)) / 2
        return l_seg + l_diff, {"seg": float(l_seg.detach()), "diff": float(l_diff.detach()),
                                "kept": float(keep.float().mean())}

    return step


class InLoopCRF:
    """Dense CRF over a batch at the DD resolution with a process pool (DESIGN §3.6).

    Args:
        params: CRF settings (iterations come from ``iters``, t = 3 in the paper).
        workers: processes (0 = run in this process).
        scale: factor on the spatial kernel widths. 1 (default) = the authors: the t = 3 CRF
            runs at the DD resolution with the unscaled widths of the ``crf`` block. (At ¼, as
            the pipeline had it before issue 17, gauss sxy 3 becomes 0.75 px and the CRF hardly
            changes a mask, so m^A1 gives little advice.)
    """

    def __init__(self, params: CRFParams, workers: int = 0, scale: float = 1.0):
        self.params, self.scale = params, scale
        self.pool = ProcessPoolExecutor(workers) if workers > 0 else None
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, imgs: np.ndarray, probs: torch.Tensor, y21: torch.Tensor) -> torch.Tensor:
        """imgs (B, h, w, 3) uint8, probs (B, 21, h, w) softmax, y21 (B, 21) → (B, h, w) argmax
        of the CRF over present labels, as VOC class ids (int64)."""

        t0 = time.time()
        jobs, present = [], []
        for b in range(probs.shape[0]):
            labs = torch.nonzero(y21[b]).flatten()
            present.append(labs)
            p = probs[b, labs].float().cpu().numpy()
            jobs.append((np.ascontiguousarray(imgs[b]), p, self.params, self.scale))
        res = list(self.pool.map(_crf_job, jobs)) if self.pool else [_crf_job(j) for j in jobs]
        out = torch.stack([labs.cpu()[torch.from_numpy(q.argmax(0))] for labs, q in zip(present, res)])
        self.seconds += time.time() - t0
        self.calls += 1
        return out.to(probs.device)

    def close(self):
        if self.pool:
            self.pool.shutdown()


def _crf_job(args):
    img, p, params, scale = args
    return dense_crf(img, p, params, scale=scale)


def dynamic_masks(model, out: dict, img_dd: np.ndarray, md0: torch.Tensor, y21: torch.Tensor, crf: InLoopCRF,
                  biases: ssdd.Biases, flag_ratio: float = 0.5) -> dict:
    """The masks and DD-Net outputs of one dynamic iteration (SSDD Eq. 11-14, DESIGN §3.6).

    Args:
        model: a SegModel with heads main / sub and DD-Nets d1 / d2; ``out`` its forward output.
        img_dd: (B, h, w, 3) uint8 images at the DD resolution (for the in-loop CRF).
        md0: (B, h, w) int64 m^D0; y21: (B, 21) present labels incl. background.
        biases: the Eq. 17 biases used for m^D1 and m^D2.
    Returns:
        dict of (B, h, w) int64 masks ``K1`` (main head, present-label argmax), ``A1`` (its CRF),
        ``sub``, ``D1``, ``D2`` (all without gradient), DD logits ``d1(K1)``, ``d1(A1)``,
        ``d2(D0)``, ``d2(D1)`` (with gradient to the DD-Nets when grad is enabled) and the
        (B, 21) bad-sample flags ``flags1`` of (m^K1, m^A1).
    """
    lm, ls = out["logits/main"], out["logits/sub"]
    with torch.no_grad():
        mk1 = present_argmax(lm, y21)
        ma1 = crf(img_dd, F.softmax(lm.float(), 1), y21)
        msub = present_argmax(ls, y21)
    dk1 = model.dd("d1", out, "main", mk1)
    da1 = model.dd("d1", out, "main", ma1)
    dd0 = model.dd("d2", out, "sub", md0)
    with torch.no_grad():
        flags1 = ssdd.batch_flags(mk1, ma1, y21, flag_ratio)
        md1 = ssdd.integrate(dk1.detach(), da1.detach(), mk1, ma1, flags1, biases.b_dd, biases.b_class,
                             biases.b_bg)
    dd1 = model.dd("d2", out, "sub", md1)
    with torch.no_grad():
        flags2 = ssdd.batch_flags(md0, md1, y21, flag_ratio)
        md2 = ssdd.integrate(dd0.detach(), dd1.detach(), md0, md1, flags2, biases.b_dd, biases.b_class,
                             biases.b_bg)
    return {"K1": mk1, "A1": ma1, "sub": msub, "D1": md1, "D2": md2, "flags1": flags1,
            "d1(K1)": dk1, "d1(A1)": da1, "d2(D0)": dd0, "d2(D1)": dd1}


class DynamicDiagnostics:
    """Is the dynamic stage refining? Per epoch, on training crops that have GT (issue 18; DESIGN
    §3.6): mIoU against the GT of m^D0 (the labels the stage starts from) and of the masks one
    iteration makes from the model being trained (m^K1 main head, m^A1 its CRF, m^D1, m^D2, what
    the main head learns from), the share of foreground each predicts against the GT's, and where
    m^K1 ≠ m^A1 how often each is right: the paper's
    precondition is that the advice m^A1 is right more often than wrong there
    (|S^{A,T}| > |S^{A,F}|). Bookkeeping over the masks the training step computes anyway.
    """

    MASKS = ("D0", "K1", "A1", "D1", "D2")

    def __init__(self):
        self.history: list[dict] = []
        self._reset()

    def _reset(self):
        from .metrics import ConfusionMatrix

        self.cms = {m: ConfusionMatrix() for m in self.MASKS}
        self.diff = np.zeros(3, dtype=np.int64)  # valid pixels where K1 ≠ A1; of those A1 right; K1 right

    def update(self, masks: dict, gt: torch.Tensor) -> None:
        """Add a batch: ``masks`` name → (B, h, w) int64 (at least :attr:`MASKS`), ``gt`` (B, h, w)
        int64 with 255 = no GT (crops of ids without GT are all 255 and add nothing)."""
        g = gt.cpu().numpy()
        ms = {m: masks[m].detach().cpu().numpy() for m in self.MASKS}
        for b in range(g.shape[0]):
            if not (g[b] != 255).any():
                continue
            for m in self.MASKS:
                pred, tgt = ms[m][b], g[b].copy()
                tgt[pred == 255] = 255  # a mask's own ignore pixels are not scored
                self.cms[m].update(np.where(pred == 255, 0, pred), tgt)
            self.diff += advice_counts(ms["K1"][b], ms["A1"][b], g[b])

    def end_epoch(self, epoch: int) -> dict:
        """Close epoch ``epoch`` (1-based; 0 = the start point, before training): append its row
        to :attr:`history`, reset, return it. ``miou`` per mask over the classes in GT (None
        without GT pixels); ``fg`` per mask the share of its scored pixels it calls foreground
        and ``fg_gt`` that share in the GT (over m^D0's scored pixels); ``k1_ne_a1`` pixels,
        ``a1_right`` / ``k1_right`` fractions of them."""
        n = int(self.diff[0])

        row = {"epoch": int(epoch), "crops": int(self.cms["D0"].n_images),
               "miou": {m: self.cms[m].compute()["miou"] for m in self.MASKS},
               "fg": {m: self.cms[m].foreground_share()[0] for m in self.MASKS},
               "fg_gt": self.cms["D0"].foreground_share()[1],
               "k1_ne_a1": n, "a1_right": float(self.diff[1] / n) if n else None,
               "k1_right": float(self.diff[2] / n) if n else None}
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        self._reset()
        return row


def make_dynamic_step(loss_kind: str, crf: InLoopCRF, biases: ssdd.Biases, alpha: float = 0.5, flag_ratio: float = 0.5,
                      warmup_epochs: int = 0, diagnostics: DynamicDiagnostics | None = None, refinement: bool = True):
    """Dynamic region refinement, one iteration (SSDD Eq. 11-15, DESIGN §3.6).

    ``warmup_epochs`` (beyond the paper, 0 = paper): in the batches of epochs < warmup_epochs
    (``batch['epoch']``) the seg heads learn from m^D0 alone (m^D2 and m^D1 are replaced by
    m^D0 in the seg losses) while the DD-Nets train on their usual targets, so short runs do
    not feed an untrained head's own predictions back as labels.

    ``diagnostics``: when given and the batch has ``GT`` crops, the iteration's masks are added
    to it (:class:`DynamicDiagnostics`; nothing else changes).

    ``refinement`` False is the control row DYN0 (issue 30): the same model, losses, DD-Nets and
    schedule, but the seg losses take m^D0 in place of m^D1 and m^D2 in every epoch (the warm-up
    path throughout), so SSDD − DYN0 is what the dynamic refinement itself contributes.
    """
    def step(model, batch, device):
        x = batch["img"].to(device)
        md0, y21 = batch["D0"].to(device), batch["y21"].to(device)
        out = model(x)
        lm, ls = out["logits/main"], out["logits/sub"]
        r = dynamic_masks(model, out, batch["img_dd"].numpy(), md0, y21, crf, biases, flag_ratio)
        mk1, ma1, msub, md1, md2, flags1 = r["K1"], r["A1"], r["sub"], r["D1"], r["D2"], r["flags1"]
        dk1, da1, dd0, dd1 = r["d1(K1)"], r["d1(A1)"], r["d2(D0)"], r["d2(D1)"]
        if diagnostics is not None and "GT" in batch:
            diagnostics.update({**r, "D0": md0}, batch["GT"])
        warm = not refinement or int(torch.as_tensor(batch.get("epoch", 0)).flatten()[0]) < warmup_epochs
        l_main = seg_loss(lm, md0 if warm else md2, loss_kind)
        l_sub = alpha * seg_loss(ls, md0, loss_kind) + (1 - alpha) * seg_loss(ls, md0 if warm else md1, loss_kind)
        t1, v1 = ssdd.difference_target(mk1, ma1)
        keep1 = ~flags1.any(1)
        t20, v20 = ssdd.difference_target(md0, msub)
        t21, v21 = ssdd.difference_target(msub, md1)
        l_diff = (ssdd.difference_loss(dk1, t1, v1, keep1) + ssdd.difference_loss(da1, t1, v1, keep1)
                  + ssdd.difference_loss(dd0, t20, v20) + ssdd.difference_loss(dd1, t21, v21)) / 4
        agree = float(((md2 == md0) | (md0 == 255)).float().mean())
        return l_main + l_sub + l_diff, {"main": float(l_main.detach()), "sub": float(l_sub.detach()),
                                         "diff": float(l_diff.detach()), "d2_eq_d0": agree,
                                         "kept1": float(keep1.float().mean()), "warmup": float(warm)}

    return step
