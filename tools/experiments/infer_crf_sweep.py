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
    cms = [ConfusionMatrix() for _ in grid]
    cm_none = ConfusionMatrix()
    t0 = time.time()
    for n, i in enumerate(ids):
        img, gt = voc.load_image(i), voc.load_mask(i)
        p = infer_mod.predict_probs(model, img, head, ic)
        cm_none.update(p.argmax(0), gt)
        for k, params in enumerate(grid):
            cms[k].update(infer_mod.crf_argmax(img, p, params, ic.crf_min_prob, ic.crf_scale), gt)
        if (n + 1) % 20 == 0:
            print(f"{n + 1}/{len(ids)} images, {time.time() - t0:.0f} s", flush=True)
    rows = [{"crf": None, "miou": cm_none.compute()["miou"], "fg": cm_none.foreground_share()[0]}]
    rows += [{"crf": {"bi_w": g.bi_w, "bi_srgb": g.bi_srgb, "bi_sxy": g.bi_sxy}, "miou": cm.compute()["miou"],
              "fg": cm.foreground_share()[0]} for g, cm in zip(grid, cms)]
    fg_gt = cm_none.foreground_share()[1]
    out = a.results / "experiments" / f"infer_crf_sweep_{a.model.stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(a.model), "ids": len(ids), "every": a.every, "offset": a.offset,
                               "configfile": a.configfile, "seconds": time.time() - t0, "fg_gt": fg_gt,
                               "rows": rows}, indent=1))
    print(f"\n{a.model}: {len(ids)} training ids (every {a.every}th from {a.offset}), train GT, "
          f"{time.time() - t0:.0f} s; GT foreground {100 * fg_gt:.1f}%")
    print("| test-time CRF | mIoU | foreground |")
    print("|---|---:|---:|")
    for r in sorted(rows, key=lambda r: -r["miou"]):
        name = "none" if r["crf"] is None else ", ".join(f"{k} {v:g}" for k, v in r["crf"].items())
        print(f"| {name} | {100 * r['miou']:.1f} | {100 * r['fg']:.1f}% |")


if __name__ == "__main__":
    main()
