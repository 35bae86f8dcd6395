"""The test-time CRF over a grid of settings, for one trained seg model, on a train_aug slice with
train GT (never val).

The ``crf`` block serves three stages: m^A0 = CRF(p^K0) of the seeds, the dynamic stage's in-loop
CRF and the CRF of multi-scale inference. ``seed_sweep.py crf`` chooses it for the seeds; this
chooses it for inference (``infer.crf_params``, merged over the ``crf`` block; the grid starts
from those), with the pipeline's own functions (``infer`` block: base size, scales, flip, the
labels reaching ``crf_min_prob``, ``crf_scale``):

    python tools/experiments/infer_crf_sweep.py results --configfile config/voc2012_balanced.yaml \\
        --model results/models/seg_K0.pt --kind seg --every 12 --bi-w 3 10 --bi-srgb 5 13

The multi-scale softmax is computed once per image; every setting's CRF, and no CRF, run on it.

``--scale-sets`` also weighs the test-time scales (issue 29: inference is the largest cost of a
repeated ablation): each set (comma-separated factors of ``base_size``) averages the per-scale
softmaxes (each with its flip when ``infer.flip``) exactly as :func:`multiscale_probs` over the
set would, so every scale runs once per image; the table adds each set's network seconds per
image (the sum of its scales' measured times) and each CRF's seconds per image:

    python tools/experiments/infer_crf_sweep.py results --configfile config/voc2012_balanced.yaml \
        --model results/models/seg_K0.pt --kind seg --every 12 --scale-sets 0.75,1,1.25 1,1.25 1
The slice is every ``--every``-th training id with GT from ``--offset``. A model trained on the
whole training set has seen these images: the CRF learns nothing, but it starts from sharper
predictions than on unseen images, so prefer a model trained without them (the models of
``seg_settings.py`` hold out ``sorted(ids)[::every]``: pass the same ``--every``, offset 0).
Writes ``<results>/experiments/infer_crf_sweep_<model>.json`` and prints a table, best first.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config_files import merged_config  # noqa: E402

from ssdd_core import infer as infer_mod  # noqa: E402
from ssdd_core.data import VOCRoot  # noqa: E402
from ssdd_core.io import read_json  # noqa: E402
from ssdd_core.metrics import ConfusionMatrix  # noqa: E402
from ssdd_core.models import factory  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a run's results/ (labels/train.json)")
    ap.add_argument("--configfile", nargs="*", default=[], help="configs merged over config.yaml, in order")
    ap.add_argument("--model", type=Path, required=True, help="a trained seg model (seg_K0.pt, dynamic.pt, ...)")
    ap.add_argument("--kind", choices=sorted(factory.SEG_KINDS), required=True, help="the model's kind")
    ap.add_argument("--every", type=int, default=12)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bi-w", type=float, nargs="*")
    ap.add_argument("--bi-srgb", type=float, nargs="*")
    ap.add_argument("--bi-sxy", type=float, nargs="*")
    ap.add_argument("--scale-sets", nargs="*", metavar="S,S,...",
                    help="sets of test-time scales to compare (default: infer.scales)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = merged_config(a.configfile)
    ic = infer_mod.InferSettings.from_config(cfg["infer"])
    head = factory.SEG_KINDS[a.kind][2]
    model = factory.load(cfg, a.kind, str(a.model), ic.output_stride)
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    labels = read_json(a.results / "labels" / "train.json")["labels"]
    ids = [i for i in sorted(labels)[a.offset::a.every] if voc.mask_path(i).exists()]
    if not ids:
        sys.exit(f"{a.results}: no training id with GT in this slice")
    base = infer_mod.inference_crf_params({**cfg, "infer": {**cfg["infer"], "crf": True}})
    grid = [replace(base, bi_w=w, bi_srgb=c, bi_sxy=x)
            for w, c, x in itertools.product(a.bi_w or [base.bi_w], a.bi_srgb or [base.bi_srgb],
                                             a.bi_sxy or [base.bi_sxy])]
    try:
        sets = [tuple(float(v) for v in t.split(",")) for t in a.scale_sets] if a.scale_sets else [ic.scales]
    except ValueError:
        sys.exit(f"--scale-sets: expected comma-separated numbers, got {a.scale_sets}")
    scales = sorted(set().union(*sets))
    # per scale set: the CRF grid's confusion matrices, no CRF's, and the seconds spent in each CRF
    cms = {ss: [ConfusionMatrix() for _ in grid] for ss in sets}
    cm_none = {ss: ConfusionMatrix() for ss in sets}
    net_s = dict.fromkeys(scales, 0.0)
    crf_s = {ss: [0.0] * len(grid) for ss in sets}
    t0 = time.time()
    for n, i in enumerate(ids):
        img, gt = voc.load_image(i), voc.load_mask(i)
        per_scale = {}
        for sc in scales:
            t1 = time.time()
            per_scale[sc] = infer_mod.multiscale_probs(model, img, head, ic.base_size, (sc,), ic.flip)
            net_s[sc] += time.time() - t1
        for ss in sets:
            p = np.mean([per_scale[sc] for sc in ss], axis=0)
            cm_none[ss].update(p.argmax(0), gt)
            for k, params in enumerate(grid):
                t1 = time.time()
                cms[ss][k].update(infer_mod.crf_argmax(img, p, params, ic.crf_min_prob, ic.crf_scale), gt)
                crf_s[ss][k] += time.time() - t1
        if (n + 1) % 20 == 0:
            print(f"{n + 1}/{len(ids)} images, {time.time() - t0:.0f} s", flush=True)
    rows = []
    for ss in sets:
        net = sum(net_s[sc] for sc in ss) / len(ids)
        rows.append({"scales": list(ss), "crf": None, "miou": cm_none[ss].compute()["miou"],
                     "fg": cm_none[ss].foreground_share()[0], "net_s": net, "crf_s": 0.0})
        rows += [{"scales": list(ss), "crf": {"bi_w": g.bi_w, "bi_srgb": g.bi_srgb, "bi_sxy": g.bi_sxy},
                  "miou": cm.compute()["miou"], "fg": cm.foreground_share()[0], "net_s": net,
                  "crf_s": secs / len(ids)} for g, cm, secs in zip(grid, cms[ss], crf_s[ss])]
    fg_gt = cm_none[sets[0]].foreground_share()[1]
    out = a.results / "experiments" / f"infer_crf_sweep_{a.model.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(a.model), "ids": len(ids), "every": a.every, "offset": a.offset,
                               "configfile": a.configfile, "base_size": ic.base_size, "flip": ic.flip,
                               "seconds": time.time() - t0, "fg_gt": fg_gt, "rows": rows}, indent=1))
    print(f"\n{a.model}: {len(ids)} training ids (every {a.every}th from {a.offset}), train GT, "
          f"{time.time() - t0:.0f} s; GT foreground {100 * fg_gt:.1f}%")
    print("| scales | test-time CRF | mIoU | foreground | network s/image | CRF s/image |")
    print("|---|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -r["miou"]):
        name = "none" if r["crf"] is None else ", ".join(f"{k} {v:g}" for k, v in r["crf"].items())
        print(f"| {', '.join(f'{v:g}' for v in r['scales'])} | {name} | {100 * r['miou']:.1f} | "
              f"{100 * r['fg']:.1f}% | {r['net_s']:.2f} | {r['crf_s']:.2f} |")


if __name__ == "__main__":
    main()
