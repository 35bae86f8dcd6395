"""Multi-scale inference on the eval split (DESIGN §3.7) and scoring: eval mIoU and the seed
quality on the training ids (§3.8, paper Fig. 6)."""
from __future__ import annotations

import collections
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import infer as infer_mod
from .. import psa as psa_mod
from ..data import VOCRoot
from ..io import (
    ArtifactError,
    atomic_dir,
    atomic_path,
    id_map,
    load_mask_png,
    read_h5,
    read_h5_ids,
    read_shard_ids,
    save_mask,
    write_json,
)
from ..metrics import ConfusionMatrix, integration_stats
from ..models import factory
from .context import StageContext, progress

log = logging.getLogger("ssdd")


def infer(cfg: dict, model_name: str, model_pt: str, ids_file: str, out_dir: str, threads: int = 2) -> dict:
    """Multi-scale + flip (+ CRF) predictions of one eval shard → PNGs. No image labels used.

    ``model_name`` is the model's kind (:data:`ssdd_core.models.factory.SEG_KINDS`): ``dynamic``
    (predicts with head main), ``static`` or ``seg`` (a static-only row; both with head base).
    ``threads`` ≥ 2 also runs the CRF on ``threads`` worker processes, overlapped with the network
    (the same predictions).

    Raises:
        ValueError: unknown model kind.
    """
    ctx = StageContext(cfg, threads)
    if model_name not in factory.SEG_KINDS:
        raise ValueError(f"infer: unknown model kind {model_name!r} (one of {sorted(factory.SEG_KINDS)})")
    head = factory.SEG_KINDS[model_name][2]
    ic = infer_mod.InferSettings.from_config(cfg["infer"])
    model = factory.load(cfg, model_name, model_pt, ic.output_stride, ctx.device)
    voc = VOCRoot(cfg["eval"]["root"], cfg["eval"]["gt_dir"])
    params = infer_mod.inference_crf_params(cfg)
    ids = read_shard_ids(ids_file)
    t0 = time.time()
    # With t ≥ 2 threads, the CRF of images i - t + 1 .. i runs on t worker processes while the
    # network sees image i + 1 (with 1 thread, Snakemake's parallel shards keep the cores busy instead).
    # More shards beat more threads per shard: on 2 cores one such job was 1.39-1.44x slower than two
    # 1-thread shards on the same 40 images (t // 2 torch threads beside t - t // 2 workers: 1.5x).
    overlap = params is not None and threads >= 2 and len(ids) > 1
    # Default start method (fork on Linux, like InLoopCRF): "spawn" would re-run Snakemake's
    # script file as the child's __main__ and kill the worker.
    pool = ProcessPoolExecutor(int(threads)) if overlap else None
    pending = collections.deque()  # (id, future) in submission order

    def save_done(tmpdir, keep: int):
        while len(pending) > keep:
            j, fut = pending.popleft()
            save_mask(Path(tmpdir) / f"{j}.png", fut.result())

    with atomic_dir(out_dir) as tmpdir:
        try:
            for i in progress(ids, f"infer {model_name}"):
                img = voc.load_image(i)
                if pool is None:
                    save_mask(Path(tmpdir) / f"{i}.png", infer_mod.predict(model, img, head, ic, params, ctx.device))
                    continue
                p = infer_mod.predict_probs(model, img, head, ic, ctx.device)
                pending.append((i, pool.submit(infer_mod.crf_argmax, img, p, params, ic.crf_min_prob,
                                                  ic.crf_scale)))
                save_done(tmpdir, int(threads))
            save_done(tmpdir, 0)
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
    dt = time.time() - t0
    log.info("infer: %d images in %.1f s (%.2f img/s)", len(ids), dt, len(ids) / max(dt, 1e-9))
    return {"n": len(ids), "seconds": dt}


def score(eval_cfg: dict, split_files, pred_dirs, out_json: str, extra: dict | None = None,
          out_confusion: str | None = None) -> dict:
    """Confusion-matrix mIoU of predictions against the eval GT (DESIGN §3.8) → JSON; with
    ``out_confusion`` also the per-image confusion matrices (HDF5 ``ids`` (N,), ``confusion``
    (N, 21, 21) int32, ids sorted), for the image-level bootstrap of the ablation table."""
    voc = VOCRoot(eval_cfg["root"], eval_cfg["gt_dir"])
    cm = ConfusionMatrix()
    preds = id_map(split_files, pred_dirs, ".png")
    per_image = {}
    for i, p in progress(preds.items(), "score", total=len(preds)):
        gt = voc.load_mask(i)
        pr = load_mask_png(p)
        if pr.shape != gt.shape:
            raise ArtifactError(f"{p}: prediction {pr.shape} vs GT {gt.shape} of {voc.mask_path(i)}")
        per_image[i] = cm.update(pr, gt)
    if out_confusion:
        import h5py

        ids = sorted(per_image)
        with atomic_path(out_confusion) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("ids", data=np.array(ids, dtype="S"))
            f.create_dataset("confusion", data=np.stack([per_image[i] for i in ids]).astype(np.int32),
                             compression="gzip")
    res = cm.compute()
    res.update({"split": str(eval_cfg["split"]), "root": str(voc.root), "gt_dir": eval_cfg["gt_dir"]})
    res.update(extra or {})
    write_json(out_json, res)
    log.info("mIoU %.4f over %d images", res["miou"] or float("nan"), res["n_images"])
    return res


def score_seeds(cfg: dict, split_files, mask_sets: dict, cam_h5s, out_json: str, extra: dict | None = None) -> dict:
    """Seed quality on the training ids with GT (paper Fig. 6): CAM (bg threshold), K0, A0, D0.

    When K0, A0 and D0 are all given, ``integration`` adds how m^D0 chose where m^K0 ≠ m^A0
    (fractions of the differing pixels, see :func:`integration_stats`); the flagged-sample
    counts are in ``integrate``'s own stats.

    Args:
        mask_sets: name → list of shard folders aligned with ``split_files``.
        cam_h5s: the CAM shards; empty (precomputed seeds) leaves the CAM row out.
        extra: more keys for the JSON (the workflow adds ``provenance``).
    """
    voc = StageContext(cfg, torch_setup=False).voc
    maps = {name: id_map(split_files, dirs, ".png") for name, dirs in mask_sets.items()}
    # seeds may leave pixels unlabelled (255): scored as ignore, with their coverage reported
    cms = {name: ConfusionMatrix(pred_ignore=True) for name in [*mask_sets, "CAM"]}
    cam_shard = {i: h for h in cam_h5s for i in read_h5_ids(h)}
    thr = cfg["cam"]["bg_threshold"]
    ids = sorted(set(cam_shard).union(*[set(m) for m in maps.values()]))
    counts = np.zeros(7, dtype=np.int64)  # integration_stats, summed; stays 0 without K0/A0/D0
    for i in ids:
        if not voc.mask_path(i).exists():
            continue
        gt = voc.load_mask(i)  # once per id, for every mask set
        loaded = {}
        for name, m in maps.items():
            if i in m and Path(m[i]).exists():
                loaded[name] = load_mask_png(m[i])
                cms[name].update(loaded[name], gt)
        if {"K0", "A0", "D0"} <= set(loaded):
            counts += integration_stats(loaded["K0"], loaded["A0"], loaded["D0"], gt)
        if i in cam_shard:
            d = read_h5(cam_shard[i], i)
            cms["CAM"].update(psa_mod.cam_label_map(d["cam"], d["labels"], thr), gt)
    out = {name: cm.compute() for name, cm in cms.items() if name != "CAM"}
    if cam_h5s:  # no CAM row for precomputed seeds
        out["CAM"] = cms["CAM"].compute()
        out["CAM"]["bg_threshold"] = thr
    summary = {k: v["miou"] for k, v in out.items()}
    if counts[0]:
        nd = max(1, int(counts[1]))
        out["integration"] = {
            "pixels": int(counts[0]), "frac_K_ne_A": float(counts[1] / counts[0]),
            "of_differing": {"D_took_A": float(counts[2] / nd), "K_right": float(counts[3] / nd),
                             "A_right": float(counts[4] / nd), "D_right": float(counts[5] / nd),
                             "oracle_right": float(counts[6] / nd)}}
        log.info("integration: %s", out["integration"])
    write_json(out_json, {"summary": summary, **out, **(extra or {})})
    log.info("seed mIoU: %s", summary)
    return summary
