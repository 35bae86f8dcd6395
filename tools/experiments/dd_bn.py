"""Choose the DD-Net batch-norm mode (`seg.dd_bn`) on training data (issue 17, fix 5; never val).

For each mode, trains the static model (DESIGN §3.5, Eq. 6-9) from a finished run's classifier
and m^K0 / m^A0, integrates every training shard into m^D0 (Eq. 3, 4, 10) and measures, on the
training ids with train GT:

* m^D0 mIoU (against m^K0 and m^A0), and how m^D0 chose where m^K0 ≠ m^A0;
* the DD-Net ROC AUCs of ``tools/dd_diagnostics.py`` (does σ(d) find the pixels a mask gets
  wrong; everywhere and where the two masks differ).

    python tools/experiments/dd_bn.py results /tmp/dd_bn --configfile config/voc2012_mini.yaml \
        --modes batch frozen

Each mode's artifacts go to ``OUT/<mode>/`` (models/static.pt, masks/D0, dd0); a step whose
output exists is not redone, so an interrupted sweep resumes. Writes ``OUT/dd_bn.json`` and
prints a table. Costs one static training and one integration per mode (about 15 min per mode on
voc2012_mini on a 2-core machine at ~1 s per classifier step).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config_files import merged_config  # noqa: E402
from dd_diagnostics import dd_auc  # noqa: E402

from ssdd_core import stages  # noqa: E402
from ssdd_core.io import read_json  # noqa: E402


def run_mode(cfg: dict, results: Path, out: Path, threads: int) -> dict:
    """Static training + integration + scores for one config, artifacts under ``out``."""
    shards = sorted(p.stem for p in (results / "splits" / "train").glob("*.txt"))
    splits = [str(results / "splits" / "train" / f"{s}.txt") for s in shards]
    k0 = [str(results / "masks" / "K0" / s) for s in shards]
    a0 = [str(results / "masks" / "A0" / s) for s in shards]
    labels = str(results / "labels" / "train.json")
    model = out / "models" / "static.pt"
    t = {}
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        stages.train_static(cfg, str(results / "models" / "cls.pt"), labels, splits, k0, a0, str(model), threads)
        t["train_static_s"] = time.time() - t0
    for name, dirs in (("K0", k0), ("A0", a0)):  # dd_diagnostics reads OUT/masks/{K0,A0}
        (out / "masks").mkdir(parents=True, exist_ok=True)
        link = out / "masks" / name
        if not link.exists():
            link.symlink_to(Path(dirs[0]).parent.resolve(), target_is_directory=True)
    t0 = time.time()
    for s, split, k, a in zip(shards, splits, k0, a0):
        d0, h5 = out / "masks" / "D0" / s, out / "dd0" / f"{s}.h5"
        if not (d0.exists() and h5.exists()):
            h5.parent.mkdir(parents=True, exist_ok=True)
            stages.integrate(cfg, str(model), labels, split, k, a, str(d0), str(h5), threads)
    t["integrate_s"] = time.time() - t0
    d0 = [str(out / "masks" / "D0" / s) for s in shards]
    stages.score_seeds(cfg, splits, {"K0": k0, "A0": a0, "D0": d0}, [], str(out / "seeds.json"))
    seeds = read_json(out / "seeds.json")
    auc = dd_auc(out, cfg["data"]["root"], cfg["data"]["gt_dir"])
    return {"seeds": seeds["summary"], "integration": seeds.get("integration"), "dd": auc, "seconds": t}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished run's results/ (models/cls.pt, masks/K0, masks/A0)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--configfile", nargs="*", default=[], help="configs merged over config.yaml, in order")
    ap.add_argument("--modes", nargs="+", default=["batch", "frozen"], choices=["batch", "frozen"])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rows = {}
    for mode in a.modes:
        cfg = merged_config(a.configfile)
        cfg["seg"]["dd_bn"] = mode
        rows[mode] = run_mode(cfg, a.results, a.out / mode, a.threads)
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "dd_bn.json").write_text(json.dumps(rows, indent=2))
    print("| dd_bn | m^K0 | m^A0 | m^D0 | D right where K≠A | AUC d^K (K wrong) | AUC d^A (A wrong) "
          "| same, where K≠A | AUC d^K−d^A (A right, K≠A) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, r in rows.items():
        s, d, g = r["seeds"], r["dd"], (r["integration"] or {}).get("of_differing", {})
        print(f"| {mode} | {100 * s['K0']:.1f} | {100 * s['A0']:.1f} | {100 * s['D0']:.1f} "
              f"| {100 * g.get('D_right', float('nan')):.1f}% | {d['auc_dK_for_K_wrong']:.3f} "
              f"| {d['auc_dA_for_A_wrong']:.3f} | {d['auc_dK_for_K_wrong_where_K_ne_A']:.3f} / "
              f"{d['auc_dA_for_A_wrong_where_K_ne_A']:.3f} | {d['auc_dK_minus_dA_for_A_right_where_K_ne_A']:.3f} |")


if __name__ == "__main__":
    main()
