"""One function per pipeline stage (DESIGN §2). Each takes plain paths and config dicts, so it
runs from Snakemake's thin scripts, a notebook or a test alike; none imports snakemake."""
from __future__ import annotations

import collections
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from . import infer as infer_mod
from . import psa as psa_mod
from .config import WALK_SCALE_TOLERANCE, check_walk_scale, walk_scale_range
from .crf import CRFParams, dense_crf
from .data import VOCRoot, image_label_table
from .datasets import AffDataset, ClsDataset, SegDataset
from .infer import predict, static_integrate
from .io import (
    ArtifactError,
    H5Writer,
    atomic_dir,
    load_checkpoint,
    load_mask_png,
    read_h5,
    read_h5_ids,
    read_json,
    save_mask,
    write_json,
)
from .metrics import ConfusionMatrix
from .models.backbones import build_backbone, freeze_stem
from .models.nets import AffinityNet, Classifier, SegModel
from .train import (
    InLoopCRF,
    aff_step,
    cls_step,
    config_hash,
    fit,
    make_baseline_step,
    make_dynamic_step,
    make_static_step,
    pick_device,
    seed_everything,
)

log = logging.getLogger("ssdd")


def _bar(it, desc, logger=log, total=None):
    from .train import _TqdmLog
    return tqdm(it, desc=desc, total=total, mininterval=10, file=_TqdmLog(logger))


def read_shard_ids(path) -> list[str]:
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]


def id_map(split_files: Sequence[str], dirs_or_files: Sequence[str], suffix: str = "") -> dict[str, str]:
    """id → artifact path, from aligned lists of shard id files and shard artifacts.

    With ``suffix`` (e.g. ``.png``) the artifact is a folder and the path is folder/id+suffix;
    without, the artifact file itself (an HDF5 shard).
    """
    out = {}
    for sf, d in zip(split_files, dirs_or_files):
        for i in read_shard_ids(sf):
            out[i] = str(Path(d) / f"{i}{suffix}") if suffix else str(d)
    return out


# --------------------------------------------------------------------------- ids and labels

def split_ids(root: str, split: str, out_files: Sequence[str], check_images: bool = True) -> int:
    """Split a list's ids into ``len(out_files)`` contiguous shards (written atomically).

    Raises:
        DataError: missing root / list, or an id whose JPEG is missing.
    """
    from .io import atomic_path

    voc = VOCRoot(root)
    ids = voc.read_ids(split)
    if check_images:
        voc.check_ids(ids)
    n = len(out_files)
    for k, f in enumerate(out_files):
        part = ids[k * len(ids) // n:(k + 1) * len(ids) // n]
        with atomic_path(f) as tmp:
            Path(tmp).write_text("".join(i + "\n" for i in part))
    log.info("%d ids from %s split into %d shards", len(ids), voc.split_path(split), n)
    return len(ids)


def image_labels(data_cfg: dict, split_files: Sequence[str], out_json: str) -> dict:
    """Image-level labels of all training ids (DESIGN §3.1) → JSON {labels, skipped}."""
    voc = VOCRoot(data_cfg["root"], data_cfg["gt_dir"])
    ids = [i for f in split_files for i in read_shard_ids(f)]
    labels, skipped = image_label_table(voc, ids)
    if skipped:
        log.warning("%d of %d ids have no foreground label and are skipped: %s", len(skipped), len(ids),
                    ", ".join(skipped[:20]))
    write_json(out_json, {"labels": labels, "skipped": skipped})
    log.info("labels for %d ids (%d skipped)", len(labels), len(skipped))
    return {"n": len(labels), "skipped": len(skipped)}


def _setup(cfg: dict, threads: int):
    torch.set_num_threads(max(1, int(threads)))
    seed_everything(int(cfg.get("seed", 0)))
    return pick_device(cfg.get("device", "auto"))


def _backbone(cfg: dict, output_stride: int, pretrained: bool = True):
    m = cfg["model"]
    return build_backbone(m["backbone"], output_stride, pretrained=pretrained, weights=m.get("weights"))


# --------------------------------------------------------------------------- PSA

def train_cls(cfg: dict, labels_json: str, out: str, threads: int = 2) -> dict:
    """Train the PSA classifier (multilabel soft margin) → ``cls.pt``."""
    device = _setup(cfg, threads)
    c = cfg["cls"]
    labels = read_json(labels_json)["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    model = Classifier(_backbone(cfg, cfg["model"]["train_output_stride"]))
    if c.get("freeze_stem", True):
        log.info("freezing the backbone stem: %d parameter tensors", freeze_stem(model.backbone))
    ds = ClsDataset(voc, sorted(labels), labels, c["crop"], seed=cfg["seed"], scale_range=tuple(c["scale_range"]))
    return fit(model, ds, cls_step, out, epochs=c["epochs"], batch_size=c["batch"], lr=c["lr"],
               weight_decay=c["weight_decay"], schedule="poly", device=device, seed=cfg["seed"], threads=threads,
               nan_policy=cfg["nan_policy"],
               resume_key=config_hash([c, cfg["model"], cfg["data"], cfg["seed"], files_key([labels_json])]),
               amp=cfg["amp"], max_steps=c.get("max_steps"), logger=log)


def load_classifier(cfg: dict, path: str, output_stride: int, device) -> Classifier:
    model = Classifier(_backbone(cfg, output_stride, pretrained=False))
    _load_into(model, path)
    return model.to(device).eval()


def _load_into(model, path):
    sd = load_checkpoint(path)
    try:
        model.load_state_dict(sd)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path}: checkpoint does not match the {type(model).__name__} built from "
                            f"the config (another architecture?): {str(e)[:300]}") from e


def cam(cfg: dict, cls_pt: str, ids_file: str, labels_json: str, out_h5: str, threads: int = 2) -> dict:
    """Multi-scale CAM for one shard → HDF5 (per id: ``cam`` (C, H, W) float16, ``labels``)."""
    device = _setup(cfg, threads)
    c = cfg["cam"]
    labels = read_json(labels_json)["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    model = load_classifier(cfg, cls_pt, c["output_stride"], device)
    ids = [i for i in read_shard_ids(ids_file) if i in labels]
    t0 = time.time()
    with H5Writer(out_h5) as w:
        for i in _bar(ids, "cam"):
            img = voc.load_image(i)
            m = psa_mod.compute_cam(model, img, labels[i], tuple(c["scales"]), c["flip"], device, c.get("base_size"))
            w.add(i, cam=m, labels=np.array(labels[i], dtype=np.int64))
    dt = time.time() - t0
    log.info("cam: %d images in %.1f s (%.2f img/s)", len(ids), dt, len(ids) / max(dt, 1e-9))
    return {"n": len(ids), "seconds": dt}


def aff_labels(cfg: dict, cam_h5: str, out_h5: str) -> dict:
    """la / ha affinity-label score maps (α = alpha_la / alpha_ha, each CRF-refined) for one shard."""
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    a = cfg["aff"]
    crf = CRFParams.from_config(a["crf"])
    scale = a.get("label_scale", 1.0)
    ids = read_h5_ids(cam_h5)
    t0 = time.time()
    with H5Writer(out_h5) as w:
        for i in _bar(ids, "aff_labels"):
            d = read_h5(cam_h5, i)
            img = voc.load_image(i)
            la = psa_mod.affinity_label_scores(img, d["cam"], a["alpha_la"], crf, scale)
            ha = psa_mod.affinity_label_scores(img, d["cam"], a["alpha_ha"], crf, scale)
            w.add(i, la=la, ha=ha, labels=d["labels"])
    dt = time.time() - t0
    log.info("aff_labels: %d images in %.1f s", len(ids), dt)
    return {"n": len(ids), "seconds": dt}


def train_aff(cfg: dict, labels_json: str, aff_h5s: Sequence[str], out: str, threads: int = 2) -> dict:
    """Train AffinityNet on the la/ha labels → ``aff.pt``. The encoder starts from ImageNet."""
    device = _setup(cfg, threads)
    a = cfg["aff"]
    labels = read_json(labels_json)["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    shard_of = {}
    for h in aff_h5s:
        for i in read_h5_ids(h):
            shard_of[i] = h
    ids = sorted(i for i in labels if i in shard_of)
    model = AffinityNet(_backbone(cfg, cfg["model"]["train_output_stride"]), a["grid_stride"])
    ds = AffDataset(voc, ids, labels, a["crop"], seed=cfg["seed"], scale_range=tuple(a["scale_range"]),
                    score_shard=shard_of, stride=a["grid_stride"])
    return fit(model, ds, aff_step, out, epochs=a["epochs"], batch_size=a["batch"], lr=a["lr"],
               weight_decay=a["weight_decay"], schedule="poly", device=device, seed=cfg["seed"], threads=threads,
               nan_policy=cfg["nan_policy"], resume_key=config_hash([a, cfg["model"], cfg["seed"], files_key(aff_h5s)]),
               amp=cfg["amp"], max_steps=a.get("max_steps"), logger=log)


def psa(cfg: dict, aff_pt: str, cam_h5: str, out_h5: str, out_dir: str, threads: int = 2) -> dict:
    """Random walk for one shard → p^K0 (HDF5 ``prob`` (C+1, H, W), ``labels``) and m^K0 PNGs."""
    device = _setup(cfg, threads)
    p = cfg["psa"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    model = AffinityNet(_backbone(cfg, p["output_stride"], pretrained=False), cfg["aff"]["grid_stride"])
    _load_into(model, aff_pt)
    model.to(device).eval()
    ids = read_h5_ids(cam_h5)
    a = cfg["aff"]
    walk = p.get("walk_long_side")
    off_scale = 0
    t0 = time.time()
    with H5Writer(out_h5) as w, atomic_dir(out_dir) as tmpdir:
        for i in _bar(ids, "psa"):
            d = read_h5(cam_h5, i)
            img = voc.load_image(i)
            if walk is None and check_walk_scale(max(img.shape[:2]), a["crop"], a["scale_range"]):
                off_scale += 1
            prob = psa_mod.random_walk(model, img, d["cam"], p["bg_pow"], p["beta"], p["logt"],
                                       a["radius"], device, walk)
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


def crf(cfg: dict, psa_h5: str, out_dir: str) -> dict:
    """Dense CRF of p^K0 over present labels → m^A0 PNGs (DESIGN §3.3). The CRF's marginals p^A0
    are not kept: SSDD reads only the mask m^A0."""
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    params = CRFParams.from_config(cfg["crf"])
    ids = read_h5_ids(psa_h5)
    t0 = time.time()
    with atomic_dir(out_dir) as tmpdir:
        for i in _bar(ids, "crf"):
            d = read_h5(psa_h5, i)
            img = voc.load_image(i)
            q = dense_crf(img, d["prob"], params)
            save_mask(Path(tmpdir) / f"{i}.png", psa_mod.full_label_map(q.argmax(0), d["labels"]))
    dt = time.time() - t0
    log.info("crf: %d images in %.1f s (%.2f img/s)", len(ids), dt, len(ids) / max(dt, 1e-9))
    return {"n": len(ids), "seconds": dt}


def import_seeds(cfg: dict, ids_file: str, labels_json: str, out_h5: str, out_dir: str) -> dict:
    """Precomputed seeds of one shard → p^K0 (HDF5) and m^K0 PNGs, the ``psa`` rule's outputs
    (``seeds.source: precomputed``; formats and checks in :mod:`ssdd_core.seed_import`)."""
    from .seed_import import import_seeds as run

    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    labels = read_json(labels_json)["labels"]
    ids = [i for i in read_shard_ids(ids_file) if i in labels]
    return run(cfg["seeds"]["dir"], ids, labels, lambda i: voc.load_image(i).shape[:2], out_h5, out_dir,
               float(cfg["seeds"]["png_confidence"]))


# --------------------------------------------------------------------------- SSDD

def _seg_model(cfg: dict, heads, ddnets, output_stride: int, pretrained=False):
    s = cfg["seg"]
    return SegModel(_backbone(cfg, output_stride, pretrained=pretrained), heads, ddnets, s["head_hidden"],
                    s["head_dilation"], s["dd_width"], s["dd_stride"], s["dd_bn"])


def _init_encoder(cfg: dict, heads, ddnets, cls_pt: str | None) -> SegModel:
    """A seg model for training at the training output stride, encoder θ_e initialised from the
    PSA classifier (DESIGN §3.5, §3.6), or from ImageNet weights when there is none
    (``seeds.source: precomputed`` skips the classifier)."""
    model = _seg_model(cfg, heads, ddnets, cfg["model"]["train_output_stride"], pretrained=cls_pt is None)
    if cls_pt is not None:
        _init_from_cls(model, cls_pt)
    return model


def _init_from_cls(model: SegModel, cls_pt: str) -> None:
    """Encoder θ_e initialised from the PSA classifier (DESIGN §3.5, §3.6)."""
    sd = load_checkpoint(cls_pt)
    bb = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if not bb:
        raise ArtifactError(f"{cls_pt}: no backbone weights in this classifier checkpoint")
    try:
        model.backbone.load_state_dict(bb)
    except RuntimeError as e:
        raise ArtifactError(f"{cls_pt}: classifier backbone does not match config 'model': {str(e)[:300]}") from e


def _given(path: str | None) -> list[str]:
    return [] if path is None else [path]


def files_key(paths) -> list:
    """(path, size, mtime) of input files: part of a resume key, so a resume state is never
    applied after an input changed."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def _seg_train(cfg, block, model, ds, step, out, threads, device, key_extra):
    return fit(model, ds, step, out, epochs=block["epochs"], batch_size=block["batch"], lr=block["lr"],
               weight_decay=block["weight_decay"], schedule="cosine", device=device, seed=cfg["seed"],
               threads=threads, nan_policy=cfg["nan_policy"],
               resume_key=config_hash([block, cfg["seg"], cfg["model"], cfg["seed"], key_extra]),
               amp=cfg["amp"], max_steps=block.get("max_steps"), logger=log)


def train_static(cfg: dict, cls_pt: str | None, labels_json: str, split_files, k0_dirs, a0_dirs, out: str,
                 threads: int = 2) -> dict:
    """Static region refinement training, L_static = L_seg(m^K0) + L_diff0 (Eq. 6-9)."""
    device = _setup(cfg, threads)
    s = cfg["static"]
    labels = read_json(labels_json)["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    k0, a0 = id_map(split_files, k0_dirs, ".png"), id_map(split_files, a0_dirs, ".png")
    ids = sorted(i for i in labels if i in k0)
    model = _init_encoder(cfg, ("base",), ("d0",), cls_pt)
    ds = SegDataset(voc, ids, labels, s["crop"], seed=cfg["seed"], masks={"K0": k0, "A0": a0},
                    resize_range=tuple(s["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    step = make_static_step(cfg["seg"]["seg_loss"], s["flag_ratio"])
    return _seg_train(cfg, s, model, ds, step, out, threads, device, files_key([*_given(cls_pt), *k0_dirs, *a0_dirs]))


def integrate(cfg: dict, static_pt: str, labels_json: str, ids_file: str, k0_dir: str, a0_dir: str,
              out_dir: str, out_h5: str, threads: int = 2) -> dict:
    """m^D0 for one shard (Eq. 3, 4, 10) → PNGs + d^K0 / d^A0 logits (HDF5)."""
    device = _setup(cfg, threads)
    s = cfg["static"]
    labels = read_json(labels_json)["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    model = _seg_model(cfg, ("base",), ("d0",), cfg["model"]["train_output_stride"])
    _load_into(model, static_pt)
    model.to(device).eval()
    ids = [i for i in read_shard_ids(ids_file) if i in labels]
    stats = {"n": 0, "flagged_images": 0, "pix": 0, "pix_k_ne_a": 0, "pix_took_a": 0}
    with H5Writer(out_h5) as w, atomic_dir(out_dir) as tmpdir:
        for i in _bar(ids, "integrate"):
            img = voc.load_image(i)
            mk = load_mask_png(Path(k0_dir) / f"{i}.png")
            ma = load_mask_png(Path(a0_dir) / f"{i}.png")
            r = static_integrate(model, img, mk, ma, labels[i], s["crop"], s, s["flag_ratio"], device)
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


def train_seg(cfg, cls_pt: str | None, labels_json, split_files, mask_dirs, out, threads=2) -> dict:
    """A static-only seg row: the seg model trained with L_seg alone on one seed mask, with the
    ``baseline`` block's settings. On m^K0 it is the PSA-style baseline (DESIGN §3.7); on m^A0 and
    m^D0 the paper's "PSA + CRF" and "static region refinement" rows (Fig. 8).

    Args:
        mask_dirs: per-shard folders of the mask's PNGs, aligned with ``split_files``.
    Returns: :func:`ssdd_core.train.fit`'s summary; writes the checkpoint ``out``.
    """
    device = _setup(cfg, threads)
    b = cfg["baseline"]
    labels = read_json(labels_json)["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    masks = id_map(split_files, mask_dirs, ".png")
    ids = sorted(i for i in labels if i in masks)
    model = _init_encoder(cfg, ("base",), (), cls_pt)
    ds = SegDataset(voc, ids, labels, b["crop"], seed=cfg["seed"], masks={"M": masks},
                    resize_range=tuple(b["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    return _seg_train(cfg, b, model, ds, make_baseline_step("M", cfg["seg"]["seg_loss"]), out, threads, device,
                      files_key([*_given(cls_pt), *mask_dirs]))


def inloop_crf(cfg: dict, threads: int = 2) -> InLoopCRF:
    """The dynamic stage's training-time CRF (DESIGN §3.6): ``dynamic.crf_iters`` iterations
    of the ``crf`` block at the DD resolution, kernel widths × ``dynamic.crf_kernel_scale``
    (1 in every shipped config, the authors' code; README "Deviations" has a proxy measurement
    of ¼, the value the code used to hard-wire)."""
    d = cfg["dynamic"]
    workers = d["crf_workers"] if d["crf_workers"] is not None else max(0, int(threads) if threads > 1 else 0)
    return InLoopCRF(CRFParams.from_config({**cfg["crf"], "iters": d["crf_iters"]}), workers,
                     float(d["crf_kernel_scale"]))


def train_dynamic(cfg, cls_pt: str | None, labels_json, split_files, d0_dirs, out, threads=2) -> dict:
    """Dynamic region refinement (Eq. 11-15) → ``dynamic.pt`` (heads main/sub, DD-Nets d1/d2)."""
    device = _setup(cfg, threads)
    d = cfg["dynamic"]
    labels = read_json(labels_json)["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    d0 = id_map(split_files, d0_dirs, ".png")
    ids = sorted(i for i in labels if i in d0)
    model = _init_encoder(cfg, ("main", "sub"), ("d1", "d2"), cls_pt)
    ds = SegDataset(voc, ids, labels, d["crop"], seed=cfg["seed"], masks={"D0": d0},
                    resize_range=tuple(d["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    incrf = inloop_crf(cfg, threads)
    try:
        step = make_dynamic_step(cfg["seg"]["seg_loss"], incrf, d, d["alpha"], d["flag_ratio"], d["warmup_epochs"])
        res = _seg_train(cfg, d, model, ds, step, out, threads, device,
                         [cfg["crf"], files_key([*_given(cls_pt), *d0_dirs])])
    finally:
        incrf.close()
    res["crf_seconds_per_iter"] = incrf.seconds / max(1, incrf.calls)
    log.info("in-loop CRF: %.3f s per iteration over %d iterations", res["crf_seconds_per_iter"], incrf.calls)
    return res


# --------------------------------------------------------------------------- inference / scoring

def infer(cfg: dict, model_name: str, model_pt: str, ids_file: str, out_dir: str, threads: int = 2) -> dict:
    """Multi-scale + flip (+ CRF) predictions of one eval shard → PNGs. No image labels used.

    ``model_name`` is the model's kind: ``dynamic`` (heads main / sub, DD-Nets d1 / d2; predicts
    with main), ``static`` (base + d0) or ``seg`` (a static-only row: base alone).
    ``threads`` ≥ 2 also runs the CRF in a worker process, overlapped with the network."""
    device = _setup(cfg, threads)
    kinds = {"dynamic": (("main", "sub"), ("d1", "d2"), "main"), "seg": (("base",), (), "base"),
             "static": (("base",), ("d0",), "base")}
    if model_name not in kinds:
        raise ValueError(f"infer: unknown model kind {model_name!r} (one of {sorted(kinds)})")
    heads = kinds[model_name]
    ic = cfg["infer"]
    model = _seg_model(cfg, heads[0], heads[1], ic["output_stride"])
    _load_into(model, model_pt)
    model.to(device).eval()
    voc = VOCRoot(cfg["eval"]["root"], cfg["eval"]["gt_dir"])
    params = CRFParams.from_config(cfg["crf"]) if ic["crf"] else None
    ids = read_shard_ids(ids_file)
    t0 = time.time()
    # With 2+ threads, the CRF of image i runs in a worker process while the network sees
    # image i + 1 (with 1 thread, Snakemake's parallel shards keep the cores busy instead).
    overlap = params is not None and threads >= 2 and len(ids) > 1
    # Default start method (fork on Linux, like InLoopCRF): "spawn" would re-run Snakemake's
    # script file as the child's __main__ and kill the worker.
    pool = ProcessPoolExecutor(1) if overlap else None
    min_prob = float(ic.get("crf_min_prob", 0.0))
    crf_scale = float(ic.get("crf_scale", 1.0))
    pending = collections.deque()  # (id, future) in submission order

    def save_done(tmpdir, keep: int):
        while len(pending) > keep:
            j, fut = pending.popleft()
            save_mask(Path(tmpdir) / f"{j}.png", fut.result())

    with atomic_dir(out_dir) as tmpdir:
        try:
            for i in _bar(ids, f"infer {model_name}"):
                img = voc.load_image(i)
                if pool is None:
                    save_mask(Path(tmpdir) / f"{i}.png", predict(model, img, heads[2], ic, params, device))
                    continue
                p = infer_mod.predict_probs(model, img, heads[2], ic, device)
                pending.append((i, pool.submit(infer_mod.crf_argmax, img, p, params, min_prob, crf_scale)))
                save_done(tmpdir, 1)
            save_done(tmpdir, 0)
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
    dt = time.time() - t0
    log.info("infer: %d images in %.1f s (%.2f img/s)", len(ids), dt, len(ids) / max(dt, 1e-9))
    return {"n": len(ids), "seconds": dt}


def score(eval_cfg: dict, split_files, pred_dirs, out_json: str, extra: dict | None = None) -> dict:
    """Confusion-matrix mIoU of predictions against the eval GT (DESIGN §3.8) → JSON."""
    voc = VOCRoot(eval_cfg["root"], eval_cfg["gt_dir"])
    cm = ConfusionMatrix()
    preds = id_map(split_files, pred_dirs, ".png")
    for i, p in _bar(preds.items(), "score", total=len(preds)):
        gt = voc.load_mask(i)
        pr = load_mask_png(p)
        if pr.shape != gt.shape:
            raise ArtifactError(f"{p}: prediction {pr.shape} vs GT {gt.shape} of {voc.mask_path(i)}")
        cm.update(pr, gt)
    res = cm.compute()
    res.update({"split": str(eval_cfg["split"]), "root": str(voc.root), "gt_dir": eval_cfg["gt_dir"]})
    res.update(extra or {})
    write_json(out_json, res)
    log.info("mIoU %.4f over %d images", res["miou"] or float("nan"), res["n_images"])
    return res


def integration_stats(m_k: np.ndarray, m_a: np.ndarray, m_d: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Counts describing how m^D chose between m^K and m^A, checked against GT (DESIGN §3.4).

    Args:
        m_k, m_a, m_d: (H, W) uint8 knowledge, advice and integrated masks; gt: (H, W) uint8
            ground truth (255 = void, left out).
    Returns:
        (7,) int64: pixels scored, pixels where m^K ≠ m^A, of those: where m^D took m^A, where
        m^K is right, where m^A is right, where m^D is right, and where the better one of
        m^K / m^A is right (an oracle choice).
    """
    ok = gt != 255
    diff = ok & (m_k != m_a)
    g = gt[diff]
    k_ok, a_ok, d_ok = m_k[diff] == g, m_a[diff] == g, m_d[diff] == g
    return np.array([ok.sum(), diff.sum(), (m_d[diff] == m_a[diff]).sum(), k_ok.sum(), a_ok.sum(), d_ok.sum(),
                     (k_ok | a_ok).sum()], dtype=np.int64)


def score_seeds(cfg: dict, split_files, mask_sets: dict, cam_h5s, out_json: str) -> dict:
    """Seed quality on the training ids with GT (paper Fig. 6): CAM (bg threshold), K0, A0, D0.

    When K0, A0 and D0 are all given, ``integration`` adds how m^D0 chose where m^K0 ≠ m^A0
    (fractions of the differing pixels, see :func:`integration_stats`); the flagged-sample
    counts are in ``integrate``'s own stats.

    Args:
        mask_sets: name → list of shard folders aligned with ``split_files``.
        cam_h5s: the CAM shards; empty (precomputed seeds) leaves the CAM row out.
    """
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    maps = {name: id_map(split_files, dirs, ".png") for name, dirs in mask_sets.items()}
    cms = {name: ConfusionMatrix() for name in [*mask_sets, "CAM"]}
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
    write_json(out_json, {"summary": summary, **out})
    log.info("seed mIoU: %s", summary)
    return summary


def table1(miou_json: str, baseline_json: str, out_md: str) -> str:
    """Per-class IoU of the baseline, SSDD and the gain, like the paper's Table 1 (markdown)."""
    from .data import CLASS_NAMES
    from .io import atomic_path

    s, b = read_json(miou_json), read_json(baseline_json)
    def fmt(v):
        return "–" if v is None else f"{100 * v:.1f}"

    rows = ["| class | baseline | SSDD | gain |", "| --- | ---: | ---: | ---: |"]
    for c, name in enumerate(CLASS_NAMES):
        bi, si = b["iou"][c], s["iou"][c]
        gain = None if bi is None or si is None else si - bi
        rows.append(f"| {name} | {fmt(bi)} | {fmt(si)} | {'–' if gain is None else f'{100 * gain:+.1f}'} |")
    g = None if s["miou"] is None or b["miou"] is None else s["miou"] - b["miou"]
    rows.append(f"| **mIoU (classes in GT)** | {fmt(b['miou'])} | {fmt(s['miou'])} | "
                f"{'–' if g is None else f'{100 * g:+.1f}'} |")
    from .report import published_table

    text = (f"# Table 1 — baseline vs SSDD on {s['split']} ({s['n_images']} images)\n\n" + "\n".join(rows) + "\n\n"
            + published_table())
    with atomic_path(out_md) as tmp:
        Path(tmp).write_text(text)
    return text


def sweep_table(weights, seeds_jsons, out_json: str) -> dict:
    """Collect the CRF sweep: per bilateral weight, K0 / A0 / D0 mIoU and the D0 − A0 gain."""
    rows = []
    for w, p in zip(weights, seeds_jsons):
        s = read_json(p)["summary"]
        rows.append({"bi_w": w, "K0": s["K0"], "A0": s["A0"], "D0": s["D0"],
                     "D0_minus_A0": None if s["D0"] is None or s["A0"] is None else s["D0"] - s["A0"]})
    write_json(out_json, {"rows": rows})
    for r in rows:
        log.info("bi_w=%s K0=%.4f A0=%.4f D0=%.4f", r["bi_w"], r["K0"], r["A0"], r["D0"])
    return {"rows": rows}
