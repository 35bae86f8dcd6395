"""Static refinement on weaker and stronger seeds (issue 20's measurement; train data only).

Exports the seeds of a finished PSA run in the formats of ``seeds.source: precomputed``
(``ssdd_core/seed_import.py``), runs the workflow on each as its own run directory up to
``results/seeds.json`` (import_seeds → CRF → static stage → integration → seed scores on the
training ids with train GT), and tabulates m^K0 / m^A0 / m^D0 per source with the rule times.

Sources (``--sources``):

* ``cam_png``: the CAM's own segmentation (argmax over the CAM of each present class and a constant
  background score ``cam.bg_threshold``; the CAM row of ``seeds.json``) as PNG label maps: a weak
  seed generator.
* ``psa_png``: the run's PSA m^K0 as PNG label maps: the strong one, in the same form as
  ``cam_png`` (the CRF's unary is then ``seeds.png_confidence`` for both).
* ``psa_h5``: the run's PSA p^K0 probabilities (``results/psa/*.h5`` as they are): m^K0 and m^A0
  equal the PSA run's, so its m^D0 differs from the run's only by the static model's
  initialisation (ImageNet weights here, the PSA classifier in the run).

    python tools/experiments/seed_sources.py results results/experiments/seed_sources \\
        --configfile config/voc2012_mini.yaml --sources cam_png psa_png

Each source runs in ``OUT/<source>/`` (its own ``results/``, ``logs/``, ``benchmarks/``); a finished
one is not redone (Snakemake sees its outputs), so an interrupted sweep resumes. Writes
``OUT/seed_sources.json`` and ``OUT/seed_sources.md``. Costs per source on voc2012_mini about 25 min
on a 2-core machine (CRF 8, static training 12, integration 3).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from config_files import merged_config  # noqa: E402

from ssdd_core import psa as psa_mod  # noqa: E402
from ssdd_core.io import load_mask_png, read_h5, read_h5_ids, read_json, save_mask  # noqa: E402

SOURCES = ("cam_png", "psa_png", "psa_h5")
SEED_RULES = ("train_cls", "cam", "aff_labels", "train_aff", "psa")
REFINE_RULES = ("import_seeds", "crf", "train_static", "integrate")


def export(source: str, results: Path, dst: Path, bg_threshold: float) -> int:
    """Write the seeds of ``source`` from a PSA run's ``results`` into ``dst``; returns the count."""
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    if source == "cam_png":
        for h5 in sorted((results / "cam").glob("*.h5")):
            for i in read_h5_ids(h5):
                out = dst / f"{i}.png"
                if not out.exists():
                    d = read_h5(h5, i)
                    save_mask(out, psa_mod.cam_label_map(d["cam"], d["labels"], bg_threshold))
                n += 1
    elif source == "psa_png":
        for png in sorted((results / "masks" / "K0").glob("*/*.png")):
            out = dst / png.name
            if not out.exists():
                save_mask(out, load_mask_png(png))
            n += 1
    elif source == "psa_h5":
        for h5 in sorted((results / "psa").glob("*.h5")):
            link = dst / h5.name
            if not link.exists():
                link.symlink_to(h5.resolve())
            n += len(read_h5_ids(h5))
    else:
        raise ValueError(f"unknown source {source!r}; one of {SOURCES}")
    return n


def seconds(bench: Path, rules) -> dict[str, float]:
    """Wall seconds per rule from Snakemake benchmark files (shards summed)."""
    out = {}
    for r in rules:
        files = [bench / f"{r}.tsv"] if (bench / f"{r}.tsv").exists() else sorted((bench / r).glob("*.tsv"))
        if files:
            out[r] = sum(float(f.read_text().splitlines()[1].split("\t")[0]) for f in files)
    return out


def abs_root(p: str) -> str:
    return str((REPO / p).resolve()) if not Path(p).is_absolute() else p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a finished PSA run's results/ (cam/, psa/, masks/K0, seeds.json)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--configfile", nargs="*", default=[], help="configs merged over config.yaml, in order")
    ap.add_argument("--sources", nargs="+", default=["cam_png", "psa_png"], choices=SOURCES)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--benchmarks", type=Path, default=REPO / "benchmarks",
                    help="the PSA run's benchmarks/ (for the time the seed chain took)")
    a = ap.parse_args()
    cfg = merged_config(a.configfile)
    a.out = a.out.resolve()
    configfiles = [str(REPO / "config.yaml")] + [str(Path(f).resolve()) for f in a.configfile]
    rows = {"psa_run": {"seeds": read_json(a.results / "seeds.json")["summary"],
                        "seconds": seconds(a.benchmarks, SEED_RULES + ("crf", "train_static", "integrate"))}}
    for src in a.sources:
        run = a.out / src
        n = export(src, a.results, run / "seeds", cfg["cam"]["bg_threshold"])
        seeds = {"source": "precomputed", "dir": str(run / "seeds")}
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(run),
               "--cores", str(a.cores), "results/seeds.json", "--configfile", *configfiles, "--config",
               f"seeds={seeds!r}", f"data={{'root': {abs_root(cfg['data']['root'])!r}}}",
               f"eval={{'root': {abs_root(cfg['eval']['root'])!r}}}"]
        print(f"{src}: {n} seeds → {run}\n  {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
        rows[src] = {"n_seeds": n, "seeds": read_json(run / "results" / "seeds.json")["summary"],
                     "integration": read_json(run / "results" / "seeds.json").get("integration"),
                     "seconds": seconds(run / "benchmarks", REFINE_RULES)}
        (a.out / "seed_sources.json").write_text(json.dumps(rows, indent=2))
    lines = ["| seeds | m^K0 | m^A0 | m^D0 | m^D0 − m^K0 | static model starts from | seed rules (s) |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, r in rows.items():
        s = r["seeds"]
        init = "PSA classifier" if name == "psa_run" else "ImageNet"
        rules = SEED_RULES if name == "psa_run" else ("import_seeds",)
        t = sum(r["seconds"].get(k, np.nan) for k in rules)
        lines.append(f"| {name} | {100 * s['K0']:.1f} | {100 * s['A0']:.1f} | {100 * s['D0']:.1f} "
                     f"| {100 * (s['D0'] - s['K0']):+.1f} | {init} | {t:.0f} |")
    (a.out / "seed_sources.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
