"""Choose seg-training settings on held-out training images (never val): L_seg's form
(`seg.seg_loss`), learning rates, epochs, the dynamic stage's warm-up and biases.

Each variant (``--variant NAME:block.key=value,...``, JSON values) trains one model on 3 of every
4 training ids: the static-only seg model on m^K0 (``--model seg``, the baseline row, `baseline`
block) or the SSDD dynamic model on m^D0 (``--model dynamic``), and scores the test-time pipeline
(`infer` block) on the held-out 4th against the training GT, next to the labels themselves. The
choice is made on images the model did not see and that are not in the eval split.

Issue 18: after issue 17 made plain cross-entropy the default (the authors' code), 11 of the 18 val
classes of voc2012_mini scored 0 IoU for every model, all of them rare in its training images:

    python tools/experiments/seg_settings.py results results/experiments/seg_loss \\
        --configfile config/voc2012_mini.yaml \\
        --variant plain:seg.seg_loss=\\"plain\\" --variant balanced:seg.seg_loss=\\"balanced\\"

Issue 18, the dynamic model's start point (the classifier's encoder, the paper, or the static
stage's model, trained here on the same 3 of 4 ids):

    python tools/experiments/seg_settings.py results results/experiments/dynamic_init \\
        --configfile config/voc2012_mini.yaml --model dynamic \\
        --variant classifier:dynamic.init=\\"classifier\\" --variant static:dynamic.init=\\"static\\"

A dynamic variant also writes its per-epoch diagnostics on training crops
(``OUT/<variant>/diagnostics.json``, as ``results/diagnostics/dynamic.json`` of the workflow).

Needs a finished run's ``results/`` (labels, splits, masks/K0 or D0, models/cls.pt). Writes
``OUT/<variant>/`` (model, predictions, score JSON, per-image confusion), ``OUT/results.json`` and
prints a per-class table, each variant's held-out difference from the first with its image-level
paired bootstrap CI; a step whose output
exists is skipped, so an interrupted sweep resumes. A variant with ``init: static`` first trains
the static stage on the same 3 of 4 ids, cached for every OUT in
``RESULTS/experiments/static_held_out/`` (keyed by its config, ``--every`` and the input files).
With one run per variant the CI holds the trained models fixed, so training noise is not in it: on
voc2012_balanced a second seed moved a variant's held-out difference from +3.5 [+0.2, +5.5] to
−1.9 (docs/results.md, 2026-12-03). ``--seeds 0 1 2`` trains every variant once per seed (seed s
of every variant paired; the config's own seed in ``OUT/<variant>/``, another in
``OUT/<variant>@seed<s>/``) and adds each difference's per-seed values, mean and paired t-test
over seeds; the bootstrap CI is then that of the mean over seeds.

Costs per seg variant on voc2012_mini about 12 min of training (4 epochs on 777 ids) and 5 min of inference (260
ids) on a 2-core machine at ~1 s per classifier step; a dynamic variant about 2.5x the training.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from config_files import merged_config  # noqa: E402

from ssdd_core import stages  # noqa: E402
from ssdd_core.data import CLASS_NAMES  # noqa: E402
from ssdd_core.io import files_key, read_json, read_shard_ids  # noqa: E402
from ssdd_core.report import d2_minus_d0, read_confusion, significance_verdict  # noqa: E402
from ssdd_core.stats import miou_from_confusion, paired_bootstrap, paired_t  # noqa: E402
from ssdd_core.train import config_hash  # noqa: E402


def variant_config(configfile: list[str], sets: str) -> dict:
    """The config of a variant: ``configfile`` merged over config.yaml, then each ``block.key=value``
    (or top-level ``key=value``, e.g. ``seed=1`` for a second training run) of the comma-separated
    ``sets`` (JSON values). Raises KeyError naming a key the config does not have."""
    cfg = merged_config(configfile)
    for kv in filter(None, sets.split(",")):
        key, _, value = kv.partition("=")
        block, _, k = key.partition(".")
        where = cfg[block] if k else cfg
        if (k or block) not in where:
            raise KeyError(f"--variant {key!r}: the config has no such key")
        where[k or block] = json.loads(value)
    return cfg


def held_out_split(results: Path, out: Path, every: int) -> tuple[list[str], str]:
    """Per-shard id files of the training part (aligned with results/masks/K0/<shard>) and one id
    file of the held-out part (every ``every``-th labelled id, in sorted order)."""
    labels = read_json(results / "labels" / "train.json")["labels"]
    held = set(sorted(labels)[::every])
    out.mkdir(parents=True, exist_ok=True)
    train_files = []
    for f in sorted((results / "splits" / "train").glob("*.txt")):
        keep = [i for i in read_shard_ids(f) if i in labels and i not in held]
        dst = out / f"train_{f.stem}.txt"
        dst.write_text("".join(i + "\n" for i in keep))
        train_files.append(str(dst))
    held_file = out / "held_out.txt"
    held_file.write_text("".join(i + "\n" for i in sorted(held)))
    return train_files, str(held_file)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished run's results/")
    ap.add_argument("out", type=Path)
    ap.add_argument("--configfile", nargs="*", default=[], help="configs merged over config.yaml, in order")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME:block.key=value,...",
                    help="a named setting; values are JSON (strings quoted); repeatable")
    ap.add_argument("--model", choices=["seg", "dynamic"], default="seg",
                    help="seg: static-only seg model on m^K0 (baseline block); dynamic: SSDD's dynamic model on m^D0")
    ap.add_argument("--every", type=int, default=4, help="hold out every N-th training id")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="train every variant once per seed (default: the config's seed only)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    train_files, held = held_out_split(a.results, a.out, a.every)
    mask = "K0" if a.model == "seg" else "D0"
    def shard_dirs(m: str) -> list[str]:  # per-shard folders of mask m, aligned with train_files
        return [str(a.results / "masks" / m / Path(f).stem.removeprefix("train_")) for f in train_files]

    mask_dirs = shard_dirs(mask)
    base = merged_config(a.configfile)
    # the held-out training images, scored against the training GT with the test-time pipeline
    eval_cfg = {"root": base["data"]["root"], "gt_dir": base["data"]["gt_dir"], "split": held}
    rows = {}
    # reference: the labels themselves (m^K0 / m^D0) on the held-out ids
    labels_all = sorted(str(p) for p in (a.results / "masks" / mask).iterdir())
    splits_all = sorted(str(p) for p in (a.results / "splits" / "train").glob("*.txt"))
    held_ids = set(read_shard_ids(held))
    ref_files = []
    for f in splits_all:
        dst = a.out / f"held_{Path(f).stem}.txt"
        dst.write_text("".join(i + "\n" for i in read_shard_ids(f) if i in held_ids))
        ref_files.append(str(dst))
    rows[f"m^{mask} (labels)"] = stages.score(eval_cfg, ref_files, labels_all, str(a.out / f"{mask}_held_out.json"))
    seeds = a.seeds or [base["seed"]]
    runs = {}  # variant → its run folders' names, one per seed
    for spec, seed in ((v, s) for s in seeds for v in a.variant):
        variant, _, sets = spec.partition(":")
        name = run_name(variant, seed, base["seed"])
        if seed != base["seed"]:
            sets = ",".join(filter(None, [sets, f"seed={seed}"]))
        runs.setdefault(variant, []).append(name)
        cfg = variant_config(a.configfile, sets)
        cfg["eval"] = eval_cfg
        d = a.out / name
        d.mkdir(parents=True, exist_ok=True)
        model, t = d / f"{a.model}.pt", {}
        cls_pt, labels_json = str(a.results / "models" / "cls.pt"), str(a.results / "labels" / "train.json")
        static_pt = None
        if cfg["baseline" if a.model == "seg" else "dynamic"]["init"] == "static":
            # the static stage trained on the same 3 of 4 ids (not the run's static.pt, which saw
            # the held-out images), with the variant's config; one cache for every experiment
            # folder, keyed by that config, the held-out split and the input files
            key = config_hash([*(cfg[k] for k in ("model", "seg", "static", "seed")), a.every,
                               files_key([cls_pt, *shard_dirs("K0"), *shard_dirs("A0")])])
            cache = a.results / "experiments" / "static_held_out"
            cache.mkdir(parents=True, exist_ok=True)
            static_pt = str(cache / f"static_every{a.every}_{key}.pt")
            if not Path(static_pt).exists():
                t0 = time.time()
                stages.train_static(cfg, cls_pt, labels_json, train_files, shard_dirs("K0"), shard_dirs("A0"),
                                    static_pt, a.threads)
                t["static_train_s"] = time.time() - t0
        if not model.exists():
            t0 = time.time()
            if a.model == "seg":
                stages.train_seg(cfg, cls_pt, labels_json, train_files, mask_dirs, str(model), a.threads, static_pt)
            else:
                stages.train_dynamic(cfg, cls_pt, labels_json, train_files, mask_dirs, str(model), a.threads,
                                     str(d / "diagnostics.json"), static_pt)
            t["train_s"] = time.time() - t0
        if not (d / "pred").exists():
            t0 = time.time()
            stages.infer(cfg, a.model, str(model), held, str(d / "pred"), a.threads)
            t["infer_s"] = time.time() - t0
        if (d / "miou.json").exists():  # a resumed variant keeps the seconds its first run measured
            t = {**read_json(d / "miou.json").get("seconds", {}), **t}
        rows[name] = stages.score(eval_cfg, [held], [str(d / "pred")], str(d / "miou.json"),
                                  {"seconds": t, "settings": sets, "model": a.model},
                                  out_confusion=str(d / "confusion.h5"))
        (a.out / "results.json").write_text(json.dumps(rows, indent=2))
    n_train = {c: 0 for c in range(1, 21)}
    labels = read_json(a.results / "labels" / "train.json")["labels"]
    for i in (i for f in train_files for i in read_shard_ids(f)):
        for c in labels[i]:
            n_train[c] += 1
    names = list(rows)
    print(f"held-out training ids: {len(held_ids)}; trained on {sum(len(read_shard_ids(f)) for f in train_files)}")
    print("| class | train images | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for c, name in enumerate(CLASS_NAMES):
        cells = []
        for n in names:
            v = rows[n]["iou"][c]
            cells.append("–" if v is None else f"{100 * v:.1f}")
        print(f"| {name} | {n_train.get(c, '')} | " + " | ".join(cells) + " |")
    print("| **mIoU** | | " + " | ".join(f"**{100 * rows[n]['miou']:.1f}**" for n in names) + " |")
    print("| classes at 0 IoU | | " + " | ".join(
        str(int(np.sum([v == 0 for v in rows[n]["iou"] if v is not None]))) for n in names) + " |")
    if len(runs) > 1:
        print()
        print(paired_differences(a.out, runs))
    if a.model == "dynamic":
        n_ids = sum(len(read_shard_ids(f)) for f in train_files)
        print()
        print(dynamic_summary(a.out, [r for rs in runs.values() for r in rs], rows, a.configfile, n_ids))


def run_name(variant: str, seed: int, config_seed: int) -> str:
    """The folder of ``variant``'s run with training seed ``seed``: the variant's name for the
    config's own seed (so one-seed sweeps keep their folders), ``<variant>@seed<seed>`` otherwise."""
    return variant if seed == config_seed else f"{variant}@seed{seed}"


def paired_differences(out: Path, runs: dict[str, list[str]] | list[str], n_boot: int = 10000) -> str:
    """Each variant against the first: the held-out mIoU difference per seed (run s of a variant
    paired with run s of the first), their mean, the paired t-test over seeds (p; none with one
    seed) and the image-level paired bootstrap 95% CI of the mean over seeds
    (:func:`ssdd_core.stats.paired_bootstrap` over ``OUT/<run>/confusion.h5``).

    Args:
        runs: variant → its run folders in seed order (every variant the same number), or a list
            of variants with one run each (folder = name).
    Returns: a Markdown table.
    Raises:
        ValueError: variants with different numbers of runs, or runs scored on other ids."""
    if not isinstance(runs, dict):
        runs = {v: [v] for v in runs}
    ref, *others = runs
    if len({len(r) for r in runs.values()}) != 1:
        raise ValueError(f"seg_settings: every variant needs the same number of seeds, got {runs}")

    ids_ref = None  # the ids of the reference's first run, read with it

    def stack(name):  # (runs, N, K, K) confusions of a variant, every run on the reference's ids
        nonlocal ids_ref
        mats = []
        for f in runs[name]:
            ids, c = read_confusion(str(out / f / "confusion.h5"))
            ids_ref = ids if ids_ref is None else ids_ref
            if ids != ids_ref:
                raise ValueError(f"{out / f / 'confusion.h5'}: scored on other ids than {runs[ref][0]}")
            mats.append(c)
        return np.stack(mats)

    c_ref = stack(ref)
    m_ref = [float(miou_from_confusion(x.sum(0))) for x in c_ref]
    n = len(runs[ref])
    seeds = f"{n} seed{'s' if n > 1 else ''}"
    lines = [f"| variant − {ref} | per seed | mean | p (paired t over {seeds}) | 95% CI (images) | |",
             "|---|---|---:|---:|---|---|"]
    for name in others:
        c = stack(name)
        m = [float(miou_from_confusion(x.sum(0))) for x in c]
        per = [b - a for a, b in zip(m_ref, m)]
        t = paired_t(m_ref, m)
        b = paired_bootstrap(c_ref, c, n_boot=n_boot)
        lines.append(f"| {name} | {' '.join(f'{100 * v:+.1f}' for v in per)} | {100 * b['diff']:+.1f} | "
                     f"{'–' if t['p'] is None else format(t['p'], '.3f')} | "
                     f"[{100 * b['ci95'][0]:+.1f}, {100 * b['ci95'][1]:+.1f}] | "
                     f"{significance_verdict(b, t['p'], n)} |")
    return "\n".join(lines)


def dynamic_summary(out: Path, variants: list[str], rows: dict, configfile: list[str], n_ids: int) -> str:
    """The equal-wall-time view of dynamic variants (issues 29, 30): per variant its training
    steps, seconds and s/step, the seconds of its held-out static stage when this run trained
    it (a cached one costs nothing), the held-out mIoU, and the last epoch's masks on training crops
    (``OUT/<variant>/diagnostics.json``): m^D0, m^K1, m^D2, m^D2 − m^D0 (mIoU) and the
    foreground share of m^K1 against the GT's. A Markdown table; ``–`` where a part is missing
    (a variant whose training ran before seconds were recorded, a cached static stage)."""
    head = ("| variant | epochs | steps | train s | s/step | static s | held-out mIoU | m^D0 | m^K1 | m^D2 | "
            "m^D2 − m^D0 | m^K1 fg / GT fg |")
    lines = [head, "|---|" + "---:|" * 11]
    fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    f1 = lambda v: fmt(None if v is None else 100 * v, ".1f")  # noqa: E731
    for name in variants:
        d = variant_config(configfile, rows[name].get("settings", ""))["dynamic"]
        steps = max(1, n_ids // d["batch"]) * d["epochs"]
        secs = rows[name].get("seconds", {}).get("train_s")
        static_s = rows[name].get("seconds", {}).get("static_train_s")
        diag = out / name / "diagnostics.json"
        epochs = read_json(diag)["epochs"] if diag.exists() else []
        last = epochs[-1] if epochs else None
        mi = (last or {}).get("miou", {})
        gap = d2_minus_d0(mi)
        fg = "–" if last is None else f"{100 * last['fg']['K1']:.0f}% / {100 * last['fg_gt']:.0f}%"
        per = None if secs is None else secs / steps
        lines.append(f"| {name} | {d['epochs']} | {steps} | {fmt(secs, '.0f')} | {fmt(per, '.2f')} | "
                     f"{fmt(static_s, '.0f')} | {f1(rows[name]['miou'])} | "
                     f"{f1(mi.get('D0'))} | {f1(mi.get('K1'))} | {f1(mi.get('D2'))} | "
                     f"{fmt(None if gap is None else 100 * gap, '+.1f')} | {fg} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
