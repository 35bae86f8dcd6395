"""SSDD's refinement stages: the dense CRF (m^A0, DESIGN §3.3), static region refinement
(training and integration → m^D0, §3.5), dynamic region refinement (the final model, §3.6) and
the static-only seg rows trained on one mask (the baseline, §3.7)."""
from __future__ import annotations

import copy
import logging
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .. import psa as psa_mod
from ..crf import CRFParams, dense_crf
from ..datasets import SegDataset
from ..infer import static_integrate
from ..io import (
    H5Writer,
    atomic_dir,
    files_key,
    id_map,
    load_mask_png,
    read_h5,
    read_h5_ids,
    read_json,
    read_shard_ids,
    save_mask,
    write_json,
)
from ..models import factory
from ..refinement import DynamicDiagnostics, InLoopCRF, make_baseline_step, make_dynamic_step, make_static_step
from ..ssdd import Biases
from .context import StageContext, ordered_map, progress

log = logging.getLogger("ssdd")


def crf(cfg: dict, psa_h5: str, out_dir: str, workers: int = 1) -> dict:
    """Dense CRF of p^K0 over present labels → m^A0 PNGs (DESIGN §3.3). The CRF's marginals p^A0
    are not kept: SSDD reads only the mask m^A0. ``workers`` > 1 runs the images on that many
    processes (the rule's threads; the masks are the same)."""
    ctx = StageContext(cfg, torch_setup=False)
    params = CRFParams.from_config(cfg["crf"])
    ids = read_h5_ids(psa_h5)
    t0 = time.time()
    with ordered_map(partial(_crf_mask, psa_h5, ctx.voc, params), ids, workers) as masks, \
            atomic_dir(out_dir) as tmpdir:
        for i, mask in progress(zip(ids, masks), "crf", total=len(ids)):
            save_mask(Path(tmpdir) / f"{i}.png", mask)
    dt = time.time() - t0
    log.info("crf: %d images in %.1f s (%.2f img/s, %d worker(s))", len(ids), dt, len(ids) / max(dt, 1e-9),
             max(1, workers))
    return {"n": len(ids), "seconds": dt}


def _crf_mask(psa_h5: str, voc, params: CRFParams, image_id: str) -> np.ndarray:
    """m^A0 of one id: the dense CRF of its p^K0 as a VOC label map (uint8 (H, W))."""
    d = read_h5(psa_h5, image_id)
    q = dense_crf(voc.load_image(image_id), d["prob"], params)
    return psa_mod.full_label_map(q.argmax(0), d["labels"])


def _given(path: str | None) -> list[str]:
    return [] if path is None else [path]


def _seg_fit(ctx: StageContext, block: dict, model, ds, step, out: str, key_extra, on_epoch_end=None) -> dict:
    """Seg training with a block's settings, cosine schedule (the SSDD stages and seg rows)."""
    cfg = ctx.cfg
    return ctx.fit(model, ds, step, out, block, "cosine", [block, cfg["seg"], cfg["model"], cfg["seed"], key_extra],
                   on_epoch_end)


def train_static(cfg: dict, cls_pt: str | None, labels_json: str, split_files, k0_dirs, a0_dirs, out: str,
                 threads: int = 2) -> dict:
    """Static region refinement training, L_static = L_seg(m^K0) + L_diff0 (Eq. 6-9)."""
    ctx = StageContext(cfg, threads, labels_json)
    s = cfg["static"]
    k0, a0 = id_map(split_files, k0_dirs, ".png"), id_map(split_files, a0_dirs, ".png")
    ids = sorted(i for i in ctx.labels if i in k0)
    model = factory.for_training(cfg, "static", cls_pt)
    ds = SegDataset(ctx.voc, ids, ctx.labels, s["crop"], seed=cfg["seed"], masks={"K0": k0, "A0": a0},
                    resize_range=tuple(s["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    step = make_static_step(cfg["seg"]["seg_loss"], s["flag_ratio"])
    return _seg_fit(ctx, s, model, ds, step, out, files_key([*_given(cls_pt), *k0_dirs, *a0_dirs]))


def integrate(cfg: dict, static_pt: str, labels_json: str, ids_file: str, k0_dir: str, a0_dir: str,
              out_dir: str, out_h5: str, threads: int = 2) -> dict:
    """m^D0 for one shard (Eq. 3, 4, 10) → PNGs + d^K0 / d^A0 logits on the DD grid (HDF5)."""
    ctx = StageContext(cfg, threads, labels_json)
    s = cfg["static"]
    biases = Biases.from_config(s)
    model = factory.load(cfg, "static", static_pt, cfg["model"]["train_output_stride"], ctx.device)
    ids = [i for i in read_shard_ids(ids_file) if i in ctx.labels]
    stats = {"n": 0, "flagged_images": 0, "pix": 0, "pix_k_ne_a": 0, "pix_took_a": 0}
    with H5Writer(out_h5) as w, atomic_dir(out_dir) as tmpdir:
        for i in progress(ids, "integrate"):
            img = ctx.voc.load_image(i)
            mk = load_mask_png(Path(k0_dir) / f"{i}.png")
            ma = load_mask_png(Path(a0_dir) / f"{i}.png")
            r = static_integrate(model, img, mk, ma, ctx.labels[i], s["crop"], biases, s["flag_ratio"],
                                 ctx.device)
            save_mask(Path(tmpdir) / f"{i}.png", r["mask"])
            w.add(i, d_k=r["d_k"], d_a=r["d_a"], flags=r["flags"])
            diff = mk != ma
            stats["n"] += 1
            stats["flagged_images"] += int(r["flags"].any())
            stats["pix"] += int(mk.size)
            stats["pix_k_ne_a"] += int(diff.sum())
            stats["pix_took_a"] += int((diff & (r["mask"] == ma)).sum())
    log.info("integrate: %s", stats)
    return stats


def _init_static(block: dict, name: str, static_pt: str | None) -> str | None:
    """``static_pt`` when the block's ``init`` is ``static``, None for ``classifier``.

    Raises:
        ValueError: ``init: static`` without a static model."""
    if block["init"] != "static":
        return None
    if static_pt is None:
        raise ValueError(f"config {name}.init is 'static' but no static-stage model (static.pt) was given")
    return static_pt


def train_seg(cfg, cls_pt: str | None, labels_json, split_files, mask_dirs, out, threads=2,
              static_pt: str | None = None) -> dict:
    """A static-only seg row: the seg model trained with L_seg alone on one seed mask, with the
    ``baseline`` block's settings. On m^K0 it is the PSA-style baseline (DESIGN §3.7); on m^A0 and
    m^D0 the paper's "PSA + CRF" and "static region refinement" rows (Fig. 8).

    Args:
        mask_dirs: per-shard folders of the mask's PNGs, aligned with ``split_files``.
        static_pt: the static stage's model; the start point with ``baseline.init: static``
            (:func:`~ssdd_core.models.factory.init_from_static`), ignored otherwise.
    Returns: :func:`ssdd_core.train.fit`'s summary; writes the checkpoint ``out``.
    Raises:
        ValueError: ``baseline.init: static`` and no ``static_pt``.
    """
    ctx = StageContext(cfg, threads, labels_json)
    b = cfg["baseline"]
    static_pt = _init_static(b, "baseline", static_pt)
    masks = id_map(split_files, mask_dirs, ".png")
    ids = sorted(i for i in ctx.labels if i in masks)
    model = factory.for_training(cfg, "seg", cls_pt, static_pt)
    ds = SegDataset(ctx.voc, ids, ctx.labels, b["crop"], seed=cfg["seed"], masks={"M": masks},
                    resize_range=tuple(b["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    return _seg_fit(ctx, b, model, ds, make_baseline_step("M", cfg["seg"]["seg_loss"]), out,
                    files_key([*_given(cls_pt), *_given(static_pt), *mask_dirs]))


def inloop_crf(cfg: dict, threads: int = 2) -> InLoopCRF:
    """The dynamic stage's training-time CRF (DESIGN §3.6): ``dynamic.crf_iters`` iterations
    of the ``crf`` block at the DD resolution, kernel widths × ``dynamic.crf_kernel_scale``
    (1 in every shipped config, the authors' code; docs/deviations.md has a proxy measurement
    of ¼, the value the code used to hard-wire)."""
    d = cfg["dynamic"]
    workers = d["crf_workers"] if d["crf_workers"] is not None else max(0, int(threads) if threads > 1 else 0)
    return InLoopCRF(CRFParams.from_config({**cfg["crf"], "iters": d["crf_iters"]}), workers,
                     float(d["crf_kernel_scale"]))


def _start_diagnostics(model, ds: SegDataset, idx: list[int], step, batch_size: int, device: torch.device) -> None:
    """One pass of the dynamic step over the diagnostics crops ``idx`` of ``ds`` before training,
    without an update: the masks the start point makes (the "epoch 0" row of
    :class:`~ssdd_core.refinement.DynamicDiagnostics`, fed by ``step``), on the crops of the first
    epoch. The model's weights and buffers (the DD-Nets' batch-norm statistics) and the torch,
    NumPy and Python RNGs are restored afterwards, so training is the same with or without it."""
    state = copy.deepcopy(model.state_dict())
    py_rng, np_rng = random.getstate(), np.random.get_state()
    model.to(device).train()
    ds.set_epoch(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, idx), batch_size=batch_size, shuffle=False)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        for batch in loader:
            step(model, batch, device)
    model.load_state_dict(state)
    random.setstate(py_rng)
    np.random.set_state(np_rng)


def train_dynamic(cfg, cls_pt: str | None, labels_json, split_files, d0_dirs, out, threads=2,
                  diag_json: str | None = None, static_pt: str | None = None, refinement: bool = True) -> dict:
    """Dynamic region refinement (Eq. 11-15) → ``dynamic.pt`` (heads main/sub, DD-Nets d1/d2).

    The model starts from the PSA classifier's encoder (``dynamic.init: classifier``, the paper)
    or from ``static_pt``, the static stage's model (``init: static``: encoder, both heads from
    its head, both DD-Nets from its DD-Net; beyond the paper). Raises ValueError for
    ``init: static`` without ``static_pt``.

    With ``diag_json``, the per-epoch :class:`~ssdd_core.refinement.DynamicDiagnostics` on the
    crops of every ``dynamic.diagnostics_every``-th training id with GT go there (JSON
    ``{"ids": n, "epochs": [...]}``; ``{"ids": 0, "epochs": []}`` when off or no id has GT). Row
    ``epoch`` 0 is the start point on the first epoch's crops, before any update (training is
    unchanged by it); row e ≥ 1 is accumulated over epoch e's training iterations.

    ``refinement`` False trains the control row DYN0 (m^D0 in every seg loss;
    :func:`~ssdd_core.refinement.make_dynamic_step`).
    """
    ctx = StageContext(cfg, threads, labels_json)
    d = cfg["dynamic"]
    static_pt = _init_static(d, "dynamic", static_pt)
    d0 = id_map(split_files, d0_dirs, ".png")
    ids = sorted(i for i in ctx.labels if i in d0)
    every = int(d["diagnostics_every"]) if diag_json else 0
    gt = {i: str(ctx.voc.mask_path(i)) for i in ids if ctx.voc.mask_path(i).exists()}
    gt = {i: gt[i] for i in sorted(gt)[::every]} if every else {}
    diag = DynamicDiagnostics() if gt else None
    partial = Path(str(out) + ".diag.json")  # survives an interrupted run, like the resume state
    if diag is not None and partial.exists() and Path(str(out) + ".resume").exists():
        # rows of epochs this run will not redo (it resumes after them); the others are replaced
        diag.history = [r for r in read_json(partial).get("epochs", []) if r["epoch"] <= d["epochs"]]

    def end_epoch(epoch: int) -> None:
        if diag is not None:
            row = diag.end_epoch(epoch)
            log.info("dynamic diagnostics, epoch %d: %s", epoch, row)
            write_json(partial, {"ids": len(gt), "epochs": diag.history})

    model = factory.for_training(cfg, "dynamic", cls_pt, static_pt)
    masks = {"D0": d0, **({"GT": gt} if gt else {})}
    ds = SegDataset(ctx.voc, ids, ctx.labels, d["crop"], seed=cfg["seed"], masks=masks,
                    resize_range=tuple(d["resize_range"]), dd_stride=cfg["seg"]["dd_stride"], optional=("GT",))
    incrf = inloop_crf(cfg, threads)
    try:
        step = make_dynamic_step(cfg["seg"]["seg_loss"], incrf, Biases.from_config(d), d["alpha"], d["flag_ratio"],
                                 d["warmup_epochs"], diag, refinement)
        key = [cfg["crf"], files_key([*_given(cls_pt), *_given(static_pt), *d0_dirs]), refinement]
        if diag is not None and not any(r["epoch"] == 0 for r in diag.history):
            pos = {i: n for n, i in enumerate(ids)}
            _start_diagnostics(model, ds, [pos[i] for i in gt], step, d["batch"], ctx.device)
            end_epoch(0)
        res = _seg_fit(ctx, d, model, ds, step, out, key, end_epoch)
    finally:
        incrf.close()
    if diag_json:
        write_json(diag_json, {"ids": len(gt), "epochs": diag.history if diag else []})
        partial.unlink(missing_ok=True)
    res["crf_seconds_per_iter"] = incrf.seconds / max(1, incrf.calls)
    log.info("in-loop CRF: %.3f s per iteration over %d iterations", res["crf_seconds_per_iter"], incrf.calls)
    return res
