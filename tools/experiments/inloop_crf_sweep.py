"""Is the dynamic stage's advice right? The in-loop CRF (m^A1 = CRF(m^K1)) over a grid of settings,
on training crops with train GT (issue 30; never val).

SSDD's refinement helps only where its advice m^A1 is right more often than the mask it changes
(the paper's |S^{A,T}| > |S^{A,F}|). The workflow's ``results/diagnostics/dynamic.json`` measures
that for the one ``crf`` the run used; this tool measures it for many, on the same kind of crops:

    python tools/experiments/inloop_crf_sweep.py results --configfile config/voc2012_balanced.yaml \\
        --model results/models/dynamic.pt --bi-w 3 10 --bi-srgb 5 13 --iters 3 10

``--model``: a trained dynamic model (``results/models/dynamic.pt``); without it, the dynamic
stage's start point (``results/models/static.pt`` with ``dynamic.init: static``, as the workflow
builds it). The crops are those of the dynamic stage (its crop, resize range, augmentation of
``--epoch``) of every ``--every``-th training id with GT (from ``--offset``). The main head's logits
are computed once per batch as the step computes them (training mode; batch norm is frozen, so
the seg heads give what they give in eval mode) and every
setting's CRF runs on the same softmax at the DD resolution over the present labels, exactly
:class:`~ssdd_core.refinement.InLoopCRF`. Reports per setting the mIoU of m^K1 and m^A1 against GT,
the share of pixels where they differ, and there how often each is right; writes
``<results>/experiments/inloop_crf_sweep.json``.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config_files import merged_config, run_masks  # noqa: E402

from ssdd_core.crf import CRFParams  # noqa: E402
from ssdd_core.datasets import SegDataset  # noqa: E402
from ssdd_core.metrics import ConfusionMatrix, advice_counts  # noqa: E402
from ssdd_core.models import factory  # noqa: E402
from ssdd_core.refinement import InLoopCRF, present_argmax  # noqa: E402
from ssdd_core.stages.context import StageContext  # noqa: E402


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished run's results/ (labels, splits, masks/D0, models)")
    ap.add_argument("--configfile", nargs="*", default=[], help="configs merged over config.yaml, in order")
    ap.add_argument("--model", type=Path, help="a trained dynamic model; default: the stage's start point")
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--epoch", type=int, default=1, help="the dataset epoch whose augmentation draws the crops")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bi-w", type=float, nargs="*")
    ap.add_argument("--bi-srgb", type=float, nargs="*")
    ap.add_argument("--bi-sxy", type=float, nargs="*")
    ap.add_argument("--gauss-sxy", type=float, nargs="*")
    ap.add_argument("--iters", type=int, nargs="*", help="default: dynamic.crf_iters")
    ap.add_argument("--kernel-scale", type=float, nargs="*", help="default: dynamic.crf_kernel_scale")
    a = ap.parse_args()
    cfg = merged_config(a.configfile)
    ctx = StageContext(cfg, a.threads, str(a.results / "labels" / "train.json"))
    d = cfg["dynamic"]
    d0 = run_masks(a.results, "D0")
    ids = [i for i in sorted(i for i in ctx.labels if i in d0) if ctx.voc.mask_path(i).exists()]
    ids = ids[a.offset::a.every]
    if not ids:
        sys.exit(f"{a.results}: no training id with GT in this slice")
    gt = {i: str(ctx.voc.mask_path(i)) for i in ids}
    if a.model is not None:
        model = factory.load(cfg, "dynamic", str(a.model), cfg["model"]["train_output_stride"], ctx.device)
        what = str(a.model)
    else:
        static_pt = a.results / "models" / "static.pt"
        cls_pt = a.results / "models" / "cls.pt"
        model = factory.for_training(cfg, "dynamic", str(cls_pt) if cls_pt.exists() else None,
                                     str(static_pt) if d["init"] == "static" else None).to(ctx.device)
        what = "start point (" + (str(static_pt) if d["init"] == "static" else "classifier") + ")"
    model.train()
    ds = SegDataset(ctx.voc, ids, ctx.labels, d["crop"], seed=cfg["seed"], masks={"D0": d0, "GT": gt},
                    resize_range=tuple(d["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    ds.set_epoch(a.epoch)

    base = dict(cfg["crf"], iters=d["crf_iters"])
    grid = {"bi_w": a.bi_w, "bi_srgb": a.bi_srgb, "bi_sxy": a.bi_sxy, "gauss_sxy": a.gauss_sxy, "iters": a.iters}
    axes = {k: v for k, v in grid.items() if v}
    scales = a.kernel_scale or [float(d["crf_kernel_scale"])]
    settings = []
    for combo in itertools.product(*axes.values()):
        for s in scales:
            settings.append((dict(base, **dict(zip(axes, combo))), s))
    crfs = [InLoopCRF(CRFParams.from_config(p), 0, s) for p, s in settings]
    cm_k1, cm_d0 = ConfusionMatrix(), ConfusionMatrix()
    cm_a1 = [ConfusionMatrix() for _ in settings]
    counts = np.zeros((len(settings), 3), dtype=np.int64)
    t0 = time.time()
    torch.manual_seed(cfg["seed"])
    loader = torch.utils.data.DataLoader(ds, batch_size=d["batch"], shuffle=False)
    with torch.no_grad():
        for batch in loader:
            y21 = batch["y21"].to(ctx.device)
            lm = model(batch["img"].to(ctx.device), heads=("main",))["logits/main"]
            if lm.shape[-2:] != batch["GT"].shape[-2:]:
                sys.exit(f"main-head logits {tuple(lm.shape[-2:])} are not on the DD grid "
                         f"{tuple(batch['GT'].shape[-2:])}: another seg.dd_stride?")
            k1 = present_argmax(lm, y21).cpu().numpy()
            prob = F.softmax(lm.float(), 1)
            g, md0 = batch["GT"].numpy(), batch["D0"].numpy()
            for b in range(g.shape[0]):
                cm_k1.update(k1[b], g[b])
                cm_d0.update(np.where(md0[b] == 255, 0, md0[b]), np.where(md0[b] == 255, 255, g[b]))
            for n, crf in enumerate(crfs):
                a1 = crf(batch["img_dd"].numpy(), prob, y21).cpu().numpy()
                for b in range(g.shape[0]):
                    cm_a1[n].update(a1[b], g[b])
                counts[n] += advice_counts(k1, a1, g)
    rows = []
    for (p, s), cm, c in zip(settings, cm_a1, counts):
        n = int(c[0])
        rows.append({"crf": p, "kernel_scale": s, "A1_miou": cm.compute()["miou"],
                     "differ_px": n, "a1_right": float(c[1] / n) if n else None,
                     "k1_right": float(c[2] / n) if n else None})
    ref = {"K1_miou": cm_k1.compute()["miou"], "D0_miou": cm_d0.compute()["miou"]}
    out = a.results / "experiments" / "inloop_crf_sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": what, "crops": len(ids), "epoch": a.epoch, "every": a.every,
                               "offset": a.offset, "seconds": time.time() - t0, **ref, "settings": rows},
                              indent=2))
    print(f"{what}: {len(ids)} training crops with GT (every {a.every}th from {a.offset}), "
          f"{time.time() - t0:.0f} s; m^D0 {100 * ref['D0_miou']:.1f}, m^K1 {100 * ref['K1_miou']:.1f} mIoU")
    print("| crf | kernel scale | m^A1 mIoU | m^A1 − m^K1 | differ px | A1 right | K1 right |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -(r["A1_miou"] or 0)):
        keys = ", ".join(f"{k} {r['crf'][k]:g}" for k in axes) or "config"
        print(f"| {keys} | {r['kernel_scale']:g} | {100 * r['A1_miou']:.1f} | "
              f"{100 * (r['A1_miou'] - ref['K1_miou']):+.1f} | {r['differ_px']} | {_pct(r['a1_right'])} | "
              f"{_pct(r['k1_right'])} |")


if __name__ == "__main__":
    main()
