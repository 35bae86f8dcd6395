"""Where a dynamic training step's time goes (issue 29), part by part, on a finished run's data.

    python tools/profile_dynamic_step.py results --configfile config/voc2012_balanced.yaml [--steps 6]

Builds the dynamic model as the workflow does (from ``results/models/static.pt`` with ``init:
static``, else the classifier), draws real batches of the training set with m^D0, and times over
``--steps`` steps (after one warm-up step): data loading, the encoder + heads forward, the DD-Net
passes, the in-loop CRF, and backward + SGD. Run it alone: a second torch process on the same
cores distorts every figure.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_files import merged_config, run_masks  # noqa: E402

from ssdd_core import refinement  # noqa: E402
from ssdd_core.datasets import SegDataset  # noqa: E402
from ssdd_core.models import factory  # noqa: E402
from ssdd_core.ssdd import Biases  # noqa: E402
from ssdd_core.stages.context import StageContext  # noqa: E402
from ssdd_core.stages.refine import inloop_crf  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--configfile", nargs="*", default=[])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    cfg = merged_config(a.configfile)
    ctx = StageContext(cfg, a.threads, str(a.results / "labels" / "train.json"))
    d = cfg["dynamic"]
    d0 = run_masks(a.results, "D0")
    ids = sorted(i for i in ctx.labels if i in d0)
    static_pt = a.results / "models" / "static.pt"
    cls_pt = a.results / "models" / "cls.pt"
    model = factory.for_training(cfg, "dynamic", str(cls_pt) if cls_pt.exists() else None,
                                 str(static_pt) if d["init"] == "static" else None).train()
    ds = SegDataset(ctx.voc, ids, ctx.labels, d["crop"], seed=cfg["seed"], masks={"D0": d0},
                    resize_range=tuple(d["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    ds.set_epoch(1)
    parts: dict[str, float] = {}

    def timed(name, f):
        def g(*args, **kw):
            t0 = time.perf_counter()
            r = f(*args, **kw)
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0
            return r
        return g

    model.forward = timed("encoder + heads forward", model.forward)
    model.dd = timed("DD-Net passes", model.dd)
    crf = inloop_crf(cfg, a.threads)
    crf_call = type(crf).__call__
    type(crf).__call__ = timed("in-loop CRF", crf_call)
    step = refinement.make_dynamic_step(cfg["seg"]["seg_loss"], crf, Biases.from_config(d), d["alpha"],
                                        d["flag_ratio"], 0, None, True)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches = iter(torch.utils.data.DataLoader(ds, batch_size=d["batch"], shuffle=True))
    total = 0.0
    try:
        for n in range(a.steps + 1):
            if n == 1:  # the first step warms up; time the rest
                parts.clear()
                total = 0.0
            t0 = time.perf_counter()
            batch = timed("data", next)(batches)
            loss, _ = timed("step function", step)(model, batch, ctx.device)
            t1 = time.perf_counter()
            opt.zero_grad()
            loss.backward()
            opt.step()
            parts["backward + SGD"] = parts.get("backward + SGD", 0.0) + time.perf_counter() - t1
            total += time.perf_counter() - t0
    finally:
        type(crf).__call__ = crf_call
        crf.close()
    print(f"{a.threads} thread(s), batch {d['batch']}, crop {d['crop']}: {total / a.steps:.2f} s per step")
    for k, v in parts.items():
        print(f"  {k}: {v / a.steps:.3f} s" + ("  (contains the three parts above)" if k == "step function" else ""))


if __name__ == "__main__":
    main()
