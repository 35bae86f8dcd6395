"""Choose seed settings on a train_aug slice with train GT (issue 17; never on val).

Reuses a run's trained classifier / AffinityNet and scores, on every ``--every``-th training
id (from ``--offset``), the CAM (argmax against a background threshold) and m^K0 (the random
walk's argmax) over a grid of settings, with the pipeline's own functions:

    # CAM: long side before scaling, scales, inference output stride, background threshold
    python tools/experiments/seed_sweep.py cam results --configfile config/voc2012_mini.yaml \
        --base-size 256 320 --scales 1.0,0.5,1.5 1.0,0.5,1.5,2.0 --output-stride 16 8 \
        --bg-threshold 0.15 0.2 0.25 0.3
    # random walk: AffinityNet's output stride, walk scale, steps, background exponent (CAMs
    # from the config's cam block)
    python tools/experiments/seed_sweep.py walk results --configfile config/voc2012_mini.yaml \
        --walk-long-side 224 256 288 --logt 3 4 5 6 --bg-pow 2 3 4 6
    # the seeds' dense CRF (issue 30: m^A0 is the advice; SSDD needs it right more often than
    # m^K0 where the two differ): bilateral weight / widths, on the run's p^K0 (results/psa)
    python tools/experiments/seed_sweep.py crf results --configfile config/voc2012_balanced.yaml \
        --bi-w 3 5 10 --bi-srgb 5 13 --bi-sxy 50 80

The crf mode also reports, where m^A0 ≠ m^K0, how often each is right (``a_right``, ``k_right``).

Writes ``<results>/experiments/seed_sweep_<mode>.json`` (per setting: mIoU, per-class IoU,
seconds) and prints a table, best first. mIoU is over the classes present in the slice's GT.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config_files import merged_config, run_masks  # noqa: E402

from ssdd_core import psa  # noqa: E402
from ssdd_core.crf import dense_crf  # noqa: E402
from ssdd_core.data import VOCRoot  # noqa: E402
from ssdd_core.io import read_json  # noqa: E402
from ssdd_core.metrics import ConfusionMatrix, advice_counts  # noqa: E402
from ssdd_core.models import factory  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["cam", "walk", "crf"])
    ap.add_argument("results", type=Path, help="a run's results/ folder (models/cls.pt, models/aff.pt, labels/)")
    ap.add_argument("--configfile", nargs="*", default=[], help="configs merged over config.yaml, in order")
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base-size", type=int, nargs="*")
    ap.add_argument("--scales", nargs="*", help="comma-separated scale lists")
    ap.add_argument("--output-stride", type=int, nargs="*")
    ap.add_argument("--bg-threshold", type=float, nargs="*")
    ap.add_argument("--walk-long-side", type=int, nargs="*")
    ap.add_argument("--logt", type=int, nargs="*")
    ap.add_argument("--bg-pow", type=float, nargs="*")
    ap.add_argument("--bi-w", type=float, nargs="*")
    ap.add_argument("--bi-srgb", type=float, nargs="*")
    ap.add_argument("--bi-sxy", type=float, nargs="*")
    ap.add_argument("--gauss-compat", type=float, nargs="*")
    a = ap.parse_args()
    if a.mode == "crf":
        return crf_sweep(a)
    torch.set_num_threads(a.threads)
    cfg = merged_config(a.configfile)
    c, p = cfg["cam"], cfg["psa"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    labels = read_json(a.results / "labels" / "train.json")["labels"]
    ids = [i for i in sorted(labels)[a.offset::a.every] if voc.mask_path(i).exists()]
    print(f"{len(ids)} training ids (every {a.every}th from {a.offset}), train GT", flush=True)
    device = torch.device("cpu")
    imgs = {i: voc.load_image(i) for i in ids}
    gts = {i: voc.load_mask(i) for i in ids}
    rows = []

    def score(maps):
        cm = ConfusionMatrix()
        for i in ids:
            cm.update(maps[i], gts[i])
        return cm.compute()

    if a.mode == "cam":
        grid = list(itertools.product(a.base_size or [c["base_size"]],
                                      [tuple(float(x) for x in s.split(",")) for s in (a.scales or [])]
                                      or [tuple(c["scales"])], a.output_stride or [c["output_stride"]]))
        for base, scales, os_ in grid:
            model = factory.load(cfg, "cls", str(a.results / "models" / "cls.pt"), os_, device)
            t0 = time.time()
            cams = {i: psa.compute_cam(model, imgs[i], labels[i], scales, c["flip"], device, base) for i in ids}
            dt = time.time() - t0
            for thr in a.bg_threshold or [c["bg_threshold"]]:
                r = score({i: psa.cam_label_map(cams[i], labels[i], thr) for i in ids})
                rows.append({"base_size": base, "scales": list(scales), "output_stride": os_, "bg_threshold": thr,
                             "miou": r["miou"], "iou": r["iou"], "seconds_per_image": dt / len(ids)})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "iou"}), flush=True)
    else:
        cls = factory.load(cfg, "cls", str(a.results / "models" / "cls.pt"), c["output_stride"], device)
        cams = {i: psa.compute_cam(cls, imgs[i], labels[i], tuple(c["scales"]), c["flip"], device, c["base_size"])
                for i in ids}
        affs = {}
        for os_ in a.output_stride or [p["output_stride"]]:
            affs[os_] = factory.load(cfg, "aff", str(a.results / "models" / "aff.pt"), os_)
        for os_, side, logt, bg_pow in itertools.product(affs, a.walk_long_side or [p["walk_long_side"]],
                                                         a.logt or [p["logt"]], a.bg_pow or [p["bg_pow"]]):
            aff = affs[os_]
            t0 = time.time()
            maps = {i: psa.full_label_map(psa.random_walk(aff, imgs[i], cams[i], bg_pow, p["beta"], logt,
                                                          cfg["aff"]["radius"], device, side).argmax(0), labels[i])
                    for i in ids}
            dt = time.time() - t0
            r = score(maps)
            rows.append({"output_stride": os_, "walk_long_side": side, "logt": logt, "bg_pow": bg_pow,
                         "miou": r["miou"], "iou": r["iou"],
                         "seconds_per_image": dt / len(ids)})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "iou"}), flush=True)
    out = a.results / "experiments" / f"seed_sweep_{a.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ids": len(ids), "every": a.every, "offset": a.offset, "configfile": a.configfile,
                               "rows": rows}, indent=1))
    print(f"\nbest first ({out}):")
    for r in sorted(rows, key=lambda r: -r["miou"]):
        print({k: v for k, v in r.items() if k != "iou"})


def _crf_one(job):
    """One image's m^A0 under one CRF setting (a process-pool job): (id, setting index, mask)."""
    i, k, img, prob, labels, params = job
    return i, k, psa.full_label_map(dense_crf(img, prob, params).argmax(0), labels)


def crf_sweep(a) -> None:
    """m^A0 = CRF(p^K0) (the crf rule's computation) under a grid of CRF settings, on the slice:
    mIoU, and where m^A0 ≠ m^K0 the share of pixels each is right on, in a process pool of
    ``--threads`` single-threaded workers."""
    from concurrent.futures import ProcessPoolExecutor
    from dataclasses import replace

    from ssdd_core.crf import CRFParams
    from ssdd_core.io import load_mask_png, read_h5, read_h5_ids

    cfg = merged_config(a.configfile)
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    base = CRFParams.from_config(cfg["crf"])
    h5s = sorted((a.results / "psa").glob("*.h5"))
    where = {i: h for h in h5s for i in read_h5_ids(h)}
    k0 = run_masks(a.results, "K0")
    ids = [i for i in sorted(where)[a.offset::a.every] if voc.mask_path(i).exists()]
    print(f"{len(ids)} training ids (every {a.every}th from {a.offset}), train GT", flush=True)
    grid = [replace(base, bi_w=w, bi_srgb=c, bi_sxy=x, gauss_compat=g)
            for w, c, x, g in itertools.product(a.bi_w or [base.bi_w], a.bi_srgb or [base.bi_srgb],
                                                a.bi_sxy or [base.bi_sxy], a.gauss_compat or [base.gauss_compat])]
    gts = {i: voc.load_mask(i) for i in ids}
    mk = {i: load_mask_png(k0[i]) for i in ids}
    cms = [ConfusionMatrix() for _ in grid]
    diff = np.zeros((len(grid), 3), dtype=np.int64)  # valid pixels where A ≠ K; of those A right; K right
    cm_k = ConfusionMatrix()
    for i in ids:
        cm_k.update(mk[i], gts[i])

    def jobs():
        for i in ids:
            d = read_h5(where[i], i)
            img = voc.load_image(i)
            for k, params in enumerate(grid):
                yield i, k, img, d["prob"], d["labels"], params

    t0 = time.time()
    with ProcessPoolExecutor(max(1, a.threads)) as pool:
        for i, k, ma in pool.map(_crf_one, jobs(), chunksize=4):
            g = gts[i]
            cms[k].update(ma, g)
            diff[k] += advice_counts(mk[i], ma, g)
    dt = time.time() - t0
    rows = []
    for k, params in enumerate(grid):
        n = max(1, int(diff[k, 0]))
        rows.append({"bi_w": params.bi_w, "bi_srgb": params.bi_srgb, "bi_sxy": params.bi_sxy,
                     "gauss_compat": params.gauss_compat, "miou": cms[k].compute()["miou"],
                     "k0_miou": cm_k.compute()["miou"], "a_ne_k_pixels": int(diff[k, 0]),
                     "a_right": diff[k, 1] / n, "k_right": diff[k, 2] / n})
        print(json.dumps(rows[-1]), flush=True)
    out = a.results / "experiments" / "seed_sweep_crf.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ids": len(ids), "every": a.every, "offset": a.offset, "configfile": a.configfile,
                               "seconds": dt, "rows": rows}, indent=1))
    print(f"\n{dt:.0f} s; best first ({out}):")
    for r in sorted(rows, key=lambda r: -r["miou"]):
        print(r)


if __name__ == "__main__":
    main()
