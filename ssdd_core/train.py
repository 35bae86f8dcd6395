"""Resumable training loop and the per-stage losses (PSA classifier / AffinityNet, SSDD
static, dynamic and baseline segmentation). DESIGN §3.2, §3.5-3.7."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import ssdd
from .crf import CRFParams, dense_crf
from .io import load_checkpoint, save_checkpoint
from .psa import affinity_loss

log = logging.getLogger(__name__)


class NonFiniteLoss(FloatingPointError):
    """A loss term became NaN / Inf during training."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cpu`` / ``cuda`` force one.

    Raises:
        RuntimeError: ``cuda`` requested but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config 'device: cuda' but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_hash(obj) -> str:
    """Short stable hash of a JSON-able config block."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Learning-rate multiplier: ``poly`` (power 0.9, PSA) or ``cosine`` over 1.2 × total steps
    (SSDD authors' horizon, so it never reaches 0), or ``constant``."""
    if schedule == "poly":
        return (1 - step / max(1, total)) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / (1.2 * max(1, total))))
    return 1.0


def make_optimizer(model, lr: float, weight_decay: float, new_lr_mult: float = 10.0) -> torch.optim.SGD:
    """SGD momentum 0.9; the backbone at ``lr``, new layers (``model.new_parameters()``) at
    ``lr × new_lr_mult``. Frozen (BN) parameters are left out."""
    new = {id(p) for p in model.new_parameters()}
    base = [p for p in model.parameters() if p.requires_grad and id(p) not in new]
    newp = [p for p in model.parameters() if p.requires_grad and id(p) in new]
    groups = [{"params": base, "lr": lr, "base_lr": lr},
              {"params": newp, "lr": lr * new_lr_mult, "base_lr": lr * new_lr_mult}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)


def fit(model, dataset, step_fn: Callable, out_path: str, *, epochs: int, batch_size: int, lr: float,
        weight_decay: float, schedule: str, device: torch.device, seed: int, threads: int = 1,
        nan_policy: str = "error", resume_key: str = "", amp: bool = False, max_steps: int | None = None,
        logger: logging.Logger = log) -> dict:
    """Train ``model`` and write its ``state_dict`` to ``out_path`` (atomically).

    A resume state (model, optimizer, epoch, step, losses) is written after every epoch to
    ``out_path + '.resume'``; a rerun with the same ``resume_key`` (a hash of the stage's
    config and inputs) continues from it. The file is removed when training finishes.

    Args:
        step_fn: ``step_fn(model, batch, device) -> (loss, parts)``, ``parts`` a dict of floats.
        nan_policy: ``error`` stops on a non-finite loss naming epoch / step / term;
            ``skip`` drops the batch with a warning (counted in the log).
        max_steps: stop after this many optimizer steps in total (for quick tests).
    Returns:
        dict with per-epoch mean losses and counts of skipped batches.
    Raises:
        NonFiniteLoss: with ``nan_policy='error'``.
    """
    seed_everything(seed)
    model.to(device)
    opt = make_optimizer(model, lr, weight_decay)
    loader_kw = dict(batch_size=batch_size, shuffle=False, drop_last=len(dataset) >= batch_size,
                     num_workers=threads if device.type == "cuda" else 0, pin_memory=device.type == "cuda")
    n = len(dataset)
    steps_per_epoch = max(1, n // batch_size if loader_kw["drop_last"] else math.ceil(n / batch_size))
    total = steps_per_epoch * epochs
    resume_path = Path(str(out_path) + ".resume")
    start_epoch, step, history, skipped = 0, 0, [], 0
    if resume_path.exists():
        st = load_checkpoint(resume_path, map_location=device)
        if st.get("resume_key") == resume_key:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            start_epoch, step = int(st["epoch"]), int(st["step"])
            history = json.loads(st["history"])
            skipped = int(st.get("skipped", 0))
            logger.info("resuming from %s: epoch %d done, step %d", resume_path, start_epoch, step)
        else:
            logger.info("ignoring %s: it belongs to another configuration", resume_path)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    for epoch in range(start_epoch, epochs):
        if max_steps is not None and step >= max_steps:
            break
        dataset.set_epoch(epoch)
        # Shuffle with a generator seeded by (seed, epoch) so a resumed run sees the same order.
        g = torch.Generator().manual_seed(seed * 7919 + epoch)
        order = torch.randperm(len(dataset), generator=g).tolist()
        loader = DataLoader(torch.utils.data.Subset(dataset, order), **loader_kw)
        model.train()
        sums, n = {}, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", mininterval=10, file=_TqdmLog(logger))
        for batch in bar:
            if max_steps is not None and step >= max_steps:
                break
            f = lr_factor(schedule, step, total)
            for gr in opt.param_groups:
                gr["lr"] = gr["base_lr"] * f
            with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
                loss, parts = step_fn(model, batch, device)
            bad = [k for k, v in parts.items() if not math.isfinite(v)]
            if not torch.isfinite(loss) or bad:
                msg = (f"non-finite loss at epoch {epoch + 1}, step {step + 1}: "
                       f"term(s) {bad or ['total']} = {[parts.get(k) for k in bad] or float(loss)}")
                if nan_policy == "skip":
                    skipped += 1
                    logger.warning("%s; batch skipped (%d so far)", msg, skipped)
                    opt.zero_grad(set_to_none=True)
                    step += 1
                    continue
                raise NonFiniteLoss(msg)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            n += 1
            parts = {"loss": float(loss.detach()), **parts}
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", refresh=False)
        means = {k: v / max(1, n) for k, v in sums.items()}
        history.append({"epoch": epoch + 1, "steps": n, **means})
        logger.info("epoch %d/%d: %s", epoch + 1, epochs, " ".join(f"{k}={v:.4f}" for k, v in means.items()))
        save_checkpoint(resume_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "epoch": epoch + 1, "step": step, "history": json.dumps(history),
                                      "skipped": skipped, "resume_key": resume_key})
    save_checkpoint(out_path, model.state_dict())
    if resume_path.exists():
        resume_path.unlink()
    return {"history": history, "steps": step, "skipped_batches": skipped}


class _TqdmLog:
    """File-like object that sends tqdm's bar to a logger (so it lands in the rule's log)."""

    def __init__(self, logger):
        self.logger = logger

    def write(self, s):
        s = s.strip("\r\n ")
        if s:
            self.logger.info(s)

    def flush(self):
        pass


# --------------------------------------------------------------------------- losses

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


def cls_step(model, batch, device):
    """Multilabel soft-margin loss of the PSA classifier."""
    x, y = batch["img"].to(device), batch["y"].to(device)
    loss = F.multilabel_soft_margin_loss(model(x), y)
    return loss, {"cls": float(loss.detach())}


def aff_step(model, batch, device):
    """PSA affinity loss (bg_pos/4 + fg_pos/4 + neg/2)."""
    loss, parts = affinity_loss(model(batch["img"].to(device)), batch["aff_label"].to(device))
    return loss, parts


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
        import time

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
                  biases: tuple[float, float, float], flag_ratio: float = 0.5) -> dict:
    """The masks and DD-Net outputs of one dynamic iteration (SSDD Eq. 11-14, DESIGN §3.6).

    Args:
        model: a SegModel with heads main / sub and DD-Nets d1 / d2; ``out`` its forward output.
        img_dd: (B, h, w, 3) uint8 images at the DD resolution (for the in-loop CRF).
        md0: (B, h, w) int64 m^D0; y21: (B, 21) present labels incl. background.
        biases: (b_dd, b_class, b_bg) of Eq. 17, used for m^D1 and m^D2.
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
        md1 = ssdd.integrate(dk1.detach(), da1.detach(), mk1, ma1, flags1, *biases)
    dd1 = model.dd("d2", out, "sub", md1)
    with torch.no_grad():
        flags2 = ssdd.batch_flags(md0, md1, y21, flag_ratio)
        md2 = ssdd.integrate(dd0.detach(), dd1.detach(), md0, md1, flags2, *biases)
    return {"K1": mk1, "A1": ma1, "sub": msub, "D1": md1, "D2": md2, "flags1": flags1,
            "d1(K1)": dk1, "d1(A1)": da1, "d2(D0)": dd0, "d2(D1)": dd1}


def make_dynamic_step(loss_kind: str, crf: InLoopCRF, biases: dict, alpha: float = 0.5, flag_ratio: float = 0.5,
                      warmup_epochs: int = 0):
    """Dynamic region refinement, one iteration (SSDD Eq. 11-15, DESIGN §3.6).

    ``warmup_epochs`` (beyond the paper, 0 = paper): in the batches of epochs < warmup_epochs
    (``batch['epoch']``) the seg heads learn from m^D0 alone (m^D2 and m^D1 are replaced by
    m^D0 in the seg losses) while the DD-Nets train on their usual targets, so short runs do
    not feed an untrained head's own predictions back as labels.
    """
    b = (biases["b_dd"], biases["b_class"], biases["b_bg"])

    def step(model, batch, device):
        x = batch["img"].to(device)
        md0, y21 = batch["D0"].to(device), batch["y21"].to(device)
        out = model(x)
        lm, ls = out["logits/main"], out["logits/sub"]
        r = dynamic_masks(model, out, batch["img_dd"].numpy(), md0, y21, crf, b, flag_ratio)
        mk1, ma1, msub, md1, md2, flags1 = r["K1"], r["A1"], r["sub"], r["D1"], r["D2"], r["flags1"]
        dk1, da1, dd0, dd1 = r["d1(K1)"], r["d1(A1)"], r["d2(D0)"], r["d2(D1)"]
        warm = int(torch.as_tensor(batch.get("epoch", 0)).flatten()[0]) < warmup_epochs
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
