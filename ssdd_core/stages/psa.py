"""PSA's seed chain (DESIGN §3.2): classifier → CAM → affinity labels → AffinityNet → random
walk (p^K0, m^K0); or another method's seeds in their place (``seeds.source: precomputed``)."""
from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import psa as psa_mod
from ..config import WALK_SCALE_TOLERANCE, check_walk_scale, walk_scale_range
from ..crf import CRFParams
from ..datasets import AffDataset, ClsDataset
from ..io import H5Writer, atomic_dir, files_key, read_h5, read_h5_ids, read_shard_ids, save_mask
from ..models import factory
from ..models.backbones import freeze_stem
from .context import StageContext, ordered_map, progress

log = logging.getLogger("ssdd")


def train_cls(cfg: dict, labels_json: str, out: str, threads: int = 2) -> dict:
    """Train the PSA classifier (multilabel soft margin) → ``cls.pt``."""
    ctx = StageContext(cfg, threads, labels_json)
    c = cfg["cls"]
    model = factory.build(cfg, "cls", cfg["model"]["train_output_stride"], pretrained=True)
    if c["freeze_stem"]:
        log.info("freezing the backbone stem: %d parameter tensors", freeze_stem(model.backbone))
    ds = ClsDataset(ctx.voc, sorted(ctx.labels), ctx.labels, c["crop"], seed=cfg["seed"],
                    scale_range=tuple(c["scale_range"]))
    return ctx.fit(model, ds, psa_mod.cls_step, out, c, "poly",
                   [c, cfg["model"], cfg["data"], cfg["seed"], files_key([labels_json])])


def cam(cfg: dict, cls_pt: str, ids_file: str, labels_json: str, out_h5: str, threads: int = 2) -> dict:
    """Multi-scale CAM for one shard → HDF5 (per id: ``cam`` (C, H, W) float16, ``labels``)."""
    ctx = StageContext(cfg, threads, labels_json)
    c = cfg["cam"]
    model = factory.load(cfg, "cls", cls_pt, c["output_stride"], ctx.device)
    ids = [i for i in read_shard_ids(ids_file) if i in ctx.labels]
    t0 = time.time()
    with H5Writer(out_h5) as w:
        for i in progress(ids, "cam"):
            img = ctx.voc.load_image(i)
            m = psa_mod.compute_cam(model, img, ctx.labels[i], tuple(c["scales"]), c["flip"], ctx.device,
                                    c["base_size"])
            w.add(i, cam=m, labels=np.array(ctx.labels[i], dtype=np.int64))
    dt = time.time() - t0
    log.info("cam: %d images in %.1f s (%.2f img/s)", len(ids), dt, len(ids) / max(dt, 1e-9))
    return {"n": len(ids), "seconds": dt}


def aff_labels(cfg: dict, cam_h5: str, out_h5: str, workers: int = 1) -> dict:
    """la / ha affinity-label score maps (α = alpha_la / alpha_ha, each CRF-refined) for one shard.
    ``workers`` > 1 runs the images on that many processes (the rule's threads; same maps)."""
    ctx = StageContext(cfg, torch_setup=False)
    a = cfg["aff"]
    fn = partial(_aff_label_maps, cam_h5, ctx.voc, a["alpha_la"], a["alpha_ha"], CRFParams.from_config(a["crf"]),
                 a["label_scale"])
    ids = read_h5_ids(cam_h5)
    t0 = time.time()
    with ordered_map(fn, ids, workers) as maps, H5Writer(out_h5) as w:
        for i, (la, ha, labels) in progress(zip(ids, maps), "aff_labels", total=len(ids)):
            w.add(i, la=la, ha=ha, labels=labels)
    dt = time.time() - t0
    log.info("aff_labels: %d images in %.1f s (%d worker(s))", len(ids), dt, max(1, workers))
    return {"n": len(ids), "seconds": dt}


def _aff_label_maps(cam_h5: str, voc, alpha_la: float, alpha_ha: float, crf: CRFParams, scale: float,
                    image_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The la and ha score maps of one id and its labels (:func:`ssdd_core.psa.affinity_label_scores`)."""
    d = read_h5(cam_h5, image_id)
    img = voc.load_image(image_id)
    return (psa_mod.affinity_label_scores(img, d["cam"], alpha_la, crf, scale),
            psa_mod.affinity_label_scores(img, d["cam"], alpha_ha, crf, scale), d["labels"])


def train_aff(cfg: dict, labels_json: str, aff_h5s: Sequence[str], out: str, threads: int = 2) -> dict:
    """Train AffinityNet on the la/ha labels → ``aff.pt``. The encoder starts from ImageNet."""
    ctx = StageContext(cfg, threads, labels_json)
    a = cfg["aff"]
    shard_of = {}
    for h in aff_h5s:
        for i in read_h5_ids(h):
            shard_of[i] = h
    ids = sorted(i for i in ctx.labels if i in shard_of)
    model = factory.build(cfg, "aff", cfg["model"]["train_output_stride"], pretrained=True)
    ds = AffDataset(ctx.voc, ids, ctx.labels, a["crop"], seed=cfg["seed"], scale_range=tuple(a["scale_range"]),
                    score_shard=shard_of, stride=a["grid_stride"])
    return ctx.fit(model, ds, psa_mod.aff_step, out, a, "poly", [a, cfg["model"], cfg["seed"], files_key(aff_h5s)])


def psa(cfg: dict, aff_pt: str, cam_h5: str, out_h5: str, out_dir: str, threads: int = 2) -> dict:
    """Random walk for one shard → p^K0 (HDF5 ``prob`` (C+1, H, W), ``labels``) and m^K0 PNGs."""
    ctx = StageContext(cfg, threads)
    p, a = cfg["psa"], cfg["aff"]
    model = factory.load(cfg, "aff", aff_pt, p["output_stride"], ctx.device)
    ids = read_h5_ids(cam_h5)
    walk = p["walk_long_side"]
    off_scale = 0
    t0 = time.time()
    with H5Writer(out_h5) as w, atomic_dir(out_dir) as tmpdir:
        for i in progress(ids, "psa"):
            d = read_h5(cam_h5, i)
            img = ctx.voc.load_image(i)
            if walk is None and check_walk_scale(max(img.shape[:2]), a["crop"], a["scale_range"]):
                off_scale += 1
            prob = psa_mod.random_walk(model, img, d["cam"], p["bg_pow"], p["beta"], p["logt"],
                                       a["radius"], ctx.device, walk)
            w.add(i, prob=prob, labels=d["labels"])
            save_mask(Path(tmpdir) / f"{i}.png", psa_mod.full_label_map(prob.argmax(0), d["labels"]))
    if off_scale:
        lo, hi = walk_scale_range(a["crop"], a["scale_range"])
        log.warning("psa: %d of %d images walked at their own size (psa.walk_long_side: null), more than "
                    "%.2fx outside AffinityNet's training long sides of %.0f-%.0f px", off_scale, len(ids),
                    WALK_SCALE_TOLERANCE, lo, hi)
    dt = time.time() - t0
    log.info("psa: %d images in %.1f s (%.2f img/s)", len(ids), dt, len(ids) / max(dt, 1e-9))
    return {"n": len(ids), "seconds": dt}


def import_seeds(cfg: dict, ids_file: str, labels_json: str, out_h5: str, out_dir: str) -> dict:
    """Precomputed seeds of one shard → p^K0 (HDF5) and m^K0 PNGs, the ``psa`` rule's outputs
    (``seeds.source: precomputed``; formats and checks in :mod:`ssdd_core.seed_import`)."""
    from ..seed_import import import_seeds as run

    ctx = StageContext(cfg, labels_json=labels_json, torch_setup=False)
    ids = [i for i in read_shard_ids(ids_file) if i in ctx.labels]
    return run(cfg["seeds"]["dir"], ids, ctx.labels, lambda i: ctx.voc.image_size(i, decode=False), out_h5, out_dir,
               float(cfg["seeds"]["png_confidence"]))
