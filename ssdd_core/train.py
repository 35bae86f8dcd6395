"""The generic training engine: resumable :func:`fit` (optimiser, poly / cosine schedule,
seeding, device, AMP, NaN policy, resume key) and the tqdm-to-log adapter. It knows no method:
a stage passes a ``step(model, batch, device) -> (loss, parts)``; PSA's steps are in
:mod:`ssdd_core.psa`, SSDD's static / dynamic / baseline steps in :mod:`ssdd_core.refinement`."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .io import ArtifactError, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)
# marker of the line fit() logs at the end: its steps and seconds (ssdd_core.provenance reads it)
RUN_STATS = "run stats:"


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
        new_lr_mult: float = 10.0, nan_policy: str = "error", resume_key: str = "", amp: bool = False,
        max_steps: int | None = None, logger: logging.Logger = log,
        on_epoch_end: Callable[[int], None] | None = None) -> dict:
    """Train ``model`` and write its ``state_dict`` to ``out_path`` (atomically).

    A resume state (model, optimizer, epoch, step, losses) is written after every epoch to
    ``out_path + '.resume'``; a rerun with the same ``resume_key`` (a hash of the stage's
    config and inputs) continues from it. The file is removed when training finishes.

    Args:
        step_fn: ``step_fn(model, batch, device) -> (loss, parts)``, ``parts`` a dict of floats.
        nan_policy: ``error`` stops on a non-finite loss naming epoch / step / term;
            ``skip`` drops the batch with a warning (counted in the log).
        max_steps: stop after this many optimizer steps in total (for quick tests).
        new_lr_mult: the learning rate of the model's ``new_parameters()`` (heads, DD-Nets) as a
            multiple of ``lr`` (:func:`make_optimizer`).
        on_epoch_end: called with the 1-based epoch after each epoch, before its resume state is
            written (e.g. to close per-epoch statistics a step function gathered).
    Returns:
        dict with per-epoch mean losses and counts of skipped batches.
    Raises:
        NonFiniteLoss: with ``nan_policy='error'``.
        ArtifactError: a resume state of this ``resume_key`` whose optimizer state does not fit the model.
    """
    seed_everything(seed)
    model.to(device)
    # train() first: it freezes batch norm (FrozenBNMixin), so the optimiser holds the same parameters
    # whether or not the caller put the model in train mode before (a resume state must match them).
    model.train()
    opt = make_optimizer(model, lr, weight_decay, new_lr_mult)
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
            try:
                opt.load_state_dict(st["optimizer"])
            except ValueError as e:
                raise ArtifactError(f"{resume_path}: its optimizer state does not match this model's trainable "
                                    f"parameters ({e}); delete the file to train from the start") from e
            start_epoch, step = int(st["epoch"]), int(st["step"])
            history = json.loads(st["history"])
            skipped = int(st.get("skipped", 0))
            logger.info("resuming from %s: epoch %d done, step %d", resume_path, start_epoch, step)
        else:
            logger.info("ignoring %s: it belongs to another configuration", resume_path)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    timed_steps, timed_s = 0, 0.0  # this process's training steps and their wall time (provenance)
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
        t0 = time.perf_counter()
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
        timed_s += time.perf_counter() - t0
        timed_steps += n
        means = {k: v / max(1, n) for k, v in sums.items()}
        history.append({"epoch": epoch + 1, "steps": n, **means})
        logger.info("epoch %d/%d: %s", epoch + 1, epochs, " ".join(f"{k}={v:.4f}" for k, v in means.items()))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
        save_checkpoint(resume_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "epoch": epoch + 1, "step": step, "history": json.dumps(history),
                                      "skipped": skipped, "resume_key": resume_key})
    save_checkpoint(out_path, model.state_dict())
    if resume_path.exists():
        resume_path.unlink()
    stats = {"steps": timed_steps, "seconds": round(timed_s, 3), "batch": batch_size,
             "threads": torch.get_num_threads(), "device": device.type,
             "seconds_per_step": round(timed_s / timed_steps, 4) if timed_steps else None}
    logger.info("%s %s", RUN_STATS, json.dumps(stats))  # read back by ssdd_core.provenance
    return {"history": history, "steps": step, "skipped_batches": skipped, "timing": stats}


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
