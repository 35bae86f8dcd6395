"""Is the dynamic stage refining or drifting? (analysis for the dynamic-training issue; train GT only)

Runs a trained ``dynamic.pt`` the way one training iteration does (same crops, in-loop CRF
and integration, SSDD Eq. 11-14) on every N-th training id that has GT, without updating
anything, and reports against the training GT:

* for m^D0, m^K1 (main head, argmax over present labels), m^A1 (its CRF), m^D1, m^sub and
  m^D2: pixel accuracy, predicted foreground fraction, mIoU over the classes in GT and
  background IoU. m^D2 is what the main head learns from: if it is below m^D0, the dynamic
  stage feeds the model worse labels than the static one gave it;
* for each DD-Net output (d1 on m^K1 / m^A1, d2 on m^D0 / m^D1): mean and std of σ(d) and its
  ROC AUC for the pixels where that mask is wrong (0.5 = blind; std ≈ 0 = collapsed);
* where m^K1 ≠ m^A1, m^D0 ≠ m^D1 and m^D0 ≠ m^D2: how often each side is right (``advice``; the
  refinement can beat m^D0 only where m^D1 is right and m^D0 wrong);
* the same with other integration biases (``--bias b_dd,b_class,b_bg``, repeatable), to see
  whether Eq. 3 is decided by the DD-Nets or by the bias.

Usage (from the repository folder, as data paths in configs are relative to it):
    python tools/dynamic_diagnostics.py results --configfile config/voc2012_mini.yaml \
        [--model results/models/dynamic.pt] [--every 6] [--bias 0.4,1,0] [--bias=-0.1,1,0] > diag.json
The config must be the one the model was trained with (config.yaml, then each --configfile).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config_files import merged_config  # noqa: E402
from dd_diagnostics import roc_auc  # noqa: E402

from ssdd_core import stages  # noqa: E402
from ssdd_core.data import VOCRoot  # noqa: E402
from ssdd_core.datasets import SegDataset  # noqa: E402
from ssdd_core.io import id_map, read_json  # noqa: E402
from ssdd_core.metrics import ConfusionMatrix, advice_counts  # noqa: E402
from ssdd_core.models import factory  # noqa: E402
from ssdd_core.refinement import dynamic_masks  # noqa: E402
from ssdd_core.ssdd import Biases  # noqa: E402

MASKS = ("D0", "K1", "A1", "D1", "sub", "D2")
PAIRS = (("K1", "A1"), ("D0", "D1"), ("D0", "D2"))  # (knowledge, advice) of Eq. 3, and what m^D2 changed
DD = (("d1(K1)", "K1"), ("d1(A1)", "A1"), ("d2(D0)", "D0"), ("d2(D1)", "D1"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--configfile", action="append", default=[])
    ap.add_argument("--model", default=None, help="default RESULTS/models/dynamic.pt")
    ap.add_argument("--every", type=int, default=6, help="use every N-th training id")
    ap.add_argument("--bias", action="append", default=[], help="extra b_dd,b_class,b_bg to compare")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    cfg = merged_config(a.configfile)
    torch.set_num_threads(a.threads)
    res = Path(a.results)
    d = cfg["dynamic"]
    labels = read_json(res / "labels" / "train.json")["labels"]
    voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    splits = sorted(str(p) for p in (res / "splits" / "train").glob("*.txt"))
    d0 = id_map(splits, sorted(str(p) for p in (res / "masks" / "D0").iterdir()), ".png")
    ids = [i for i in sorted(i for i in labels if i in d0)[:: a.every] if voc.mask_path(i).exists()]
    if not ids:
        sys.exit(f"{res}: no training id with a GT mask under {voc.mask_path('x').parent}")
    gt = {i: str(voc.mask_path(i)) for i in ids}
    model = factory.load(cfg, "dynamic", a.model or str(res / "models" / "dynamic.pt"),
                         cfg["model"]["train_output_stride"])
    ds = SegDataset(voc, ids, labels, d["crop"], seed=cfg["seed"], masks={"D0": d0, "GT": gt},
                    resize_range=tuple(d["resize_range"]), dd_stride=cfg["seg"]["dd_stride"])
    crf = stages.inloop_crf({**cfg, "dynamic": {**d, "crf_workers": 0}})  # the training stage's CRF
    biases = [(d["b_dd"], d["b_class"], d["b_bg"])] + [tuple(float(x) for x in b.split(",")) for b in a.bias]
    cms = {b: {m: ConfusionMatrix() for m in MASKS} for b in biases}
    dd = {k: ([], []) for k, _ in DD}
    pairs = {b: {p: np.zeros(3, dtype=np.int64) for p in PAIRS} for b in biases}
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(ds, batch_size=d["batch"]):
            g = batch["GT"]
            out = model(batch["img"])
            for b in biases:
                r = dynamic_masks(model, out, batch["img_dd"].numpy(), batch["D0"], batch["y21"], crf, Biases(*b),
                                  d["flag_ratio"])
                r["D0"] = batch["D0"]
                for name in MASKS:
                    cms[b][name].update(r[name].numpy(), g.numpy())
                for k, a_ in PAIRS:
                    pairs[b][(k, a_)] += advice_counts(r[k].numpy(), r[a_].numpy(), g.numpy())
                if b == biases[0]:
                    for key, name in DD:
                        v = (g != 255) & (r[name] != 255)
                        dd[key][0].append(torch.sigmoid(r[key])[v].numpy())
                        dd[key][1].append((r[name] != g)[v].numpy())
    crf.close()
    out = {"ids": len(ids), "model": a.model or str(res / "models" / "dynamic.pt"), "masks": {}, "ddnets": {}}
    for b in biases:
        rows = {}
        for name, cm in cms[b].items():
            r, (fg_pred, fg_gt) = cm.compute(), cm.foreground_share()
            rows[name] = {"pixel_acc": r["pixel_accuracy"],
                          "fg_pred": fg_pred, "fg_gt": fg_gt,
                          "miou": r["miou"], "bg_iou": r["iou"][0]}
        out["masks"][",".join(f"{x:g}" for x in b)] = rows
        # where the knowledge and the advice of each integration differ: who is right (the
        # refinement can beat its knowledge only where the advice is right there)
        out.setdefault("advice", {})[",".join(f"{x:g}" for x in b)] = {
            f"{a_} vs {k}": {"differ_px": int(c[0]), "advice_right": float(c[1] / max(1, c[0])),
                             "knowledge_right": float(c[2] / max(1, c[0]))} for (k, a_), c in pairs[b].items()}
    for key, (s, w) in dd.items():
        s, w = np.concatenate(s), np.concatenate(w)
        out["ddnets"][key] = {"sigmoid_mean": float(s.mean()), "sigmoid_std": float(s.std()),
                              "wrong_rate": float(w.mean()), "auc_for_wrong": roc_auc(s, w)}
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
