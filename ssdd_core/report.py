"""Figures and tables for ``snakemake --report``: IoU bars, seed table, loss curves, gallery."""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .data import CLASS_NAMES, VOCRoot
from .io import atomic_path, load_mask_png, read_h5, read_json, voc_palette, write_json

log = logging.getLogger("ssdd")

_EPOCH = re.compile(r"epoch (\d+)/(\d+): (.*)$")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out):
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def iou_bars(miou_json: str, baseline_json: str, out_png: str) -> None:
    """Per-class IoU, baseline vs SSDD, for classes with GT pixels (bar chart PNG)."""
    plt = _plt()
    s, b = read_json(miou_json), read_json(baseline_json)
    cls = [c for c in s["classes_in_gt"]]
    x = np.arange(len(cls))
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(cls) + 2), 3.8))
    ax.bar(x - 0.2, [100 * (b["iou"][c] or 0) for c in cls], 0.4, label=f"baseline ({100 * b['miou']:.1f})")
    ax.bar(x + 0.2, [100 * (s["iou"][c] or 0) for c in cls], 0.4, label=f"SSDD ({100 * s['miou']:.1f})")
    ax.set_xticks(x, [CLASS_NAMES[c] for c in cls], rotation=60, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_title(f"{s['split']}: {s['n_images']} images")
    ax.legend()
    _save(fig, out_png)


def seeds_table(seeds_json: str, out_csv: str, sweep_json: str | None = None) -> None:
    """Seed quality (train mIoU of CAM, m^K0, m^A0, m^D0) and per-class IoU as CSV."""
    d = read_json(seeds_json)
    names = [n for n in ("CAM", "K0", "A0", "D0") if n in d]
    with atomic_path(out_csv) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class"] + names)
            w.writerow(["mIoU"] + [f"{100 * d[n]['miou']:.2f}" for n in names])
            for c, cname in enumerate(CLASS_NAMES):
                vals = [d[n]["iou"][c] for n in names]
                if all(v is None for v in vals):
                    continue
                w.writerow([cname] + ["" if v is None else f"{100 * v:.2f}" for v in vals])


def parse_epoch_losses(log_path: str) -> list[dict]:
    """Per-epoch loss lines of a training log ("epoch i/n: k=v ..."); the last line of each
    epoch wins (a resumed run logs the epochs it redid)."""
    rows = {}
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = _EPOCH.search(line)
        if not m or "%|" in line:
            continue
        vals = {}
        for tok in m.group(3).split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                try:
                    vals[k] = float(v)
                except ValueError:
                    pass
        rows[int(m.group(1))] = vals
    return [{"epoch": e, **rows[e]} for e in sorted(rows)]


def loss_curves(logs: Mapping[str, str], out_png: str) -> None:
    """One panel per training rule: every logged loss term against the epoch."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(logs), figsize=(3.3 * len(logs), 2.8), squeeze=False)
    for ax, (name, path) in zip(axes[0], logs.items()):
        rows = parse_epoch_losses(path)
        keys = [k for k in (rows[0] if rows else {}) if k != "epoch" and not k.startswith(("kept", "d2_eq"))]
        for k in keys:
            ax.plot([r["epoch"] for r in rows], [r.get(k, np.nan) for r in rows], marker="o", label=k)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if keys:
            ax.legend(fontsize=7)
    _save(fig, out_png)


def dynamic_epochs(diag_json: str, out_png: str) -> None:
    """The dynamic stage per epoch (``results/diagnostics/dynamic.json``): left, the mIoU against
    the training GT of m^D0 and of m^K1 / m^A1 / m^D1 / m^D2 on the training crops; right, where
    m^K1 ≠ m^A1, the fraction of pixels where the advice m^A1 is right and where m^K1 is (the
    paper's precondition: the first above the second); third, the share of pixels each mask calls
    foreground against the GT's (empty for diagnostics written before it was recorded). Epoch 0
    is the start point before any update. An empty panel says the diagnostics were off or no
    training id had GT."""
    plt = _plt()
    d = read_json(diag_json)
    rows = d.get("epochs", [])
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12, 3))
    ep = [r["epoch"] for r in rows]
    for m, style in (("D0", "k--"), ("K1", "o-"), ("A1", "s-"), ("D1", "^-"), ("D2", "D-")):
        a1.plot(ep, [100 * (r["miou"][m] if r["miou"][m] is not None else np.nan) for r in rows], style,
                label=f"m^{m}")
    a1.set_xlabel("epoch (0: start point)")
    a1.set_ylabel("mIoU on training crops (train GT)")
    a1.set_title(f"dynamic stage ({d.get('ids', 0)} ids with GT)", fontsize=9)
    for key, label in (("a1_right", "m^A1 right"), ("k1_right", "m^K1 right")):
        a2.plot(ep, [100 * (r[key] if r[key] is not None else np.nan) for r in rows], "o-", label=label)
    a2.set_xlabel("epoch")
    a2.set_ylabel("% of pixels where m^K1 ≠ m^A1")
    fg_rows = [r for r in rows if r.get("fg")]
    fg_ep = [r["epoch"] for r in fg_rows]
    if fg_rows:
        a3.plot(fg_ep, [100 * (r["fg_gt"] if r["fg_gt"] is not None else np.nan) for r in fg_rows], "k:", label="GT")
    for m, style in (("D0", "k--"), ("K1", "o-"), ("D2", "D-")):
        if fg_rows:
            a3.plot(fg_ep, [100 * (r["fg"][m] if r["fg"][m] is not None else np.nan) for r in fg_rows], style,
                    label=f"m^{m}")
    a3.set_xlabel("epoch")
    a3.set_ylabel("% of pixels called foreground")
    for ax in (a1, a2, a3):
        if ax.lines:
            ax.legend(fontsize=7)
    _save(fig, out_png)


def _color(mask: np.ndarray) -> np.ndarray:
    pal = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
    return pal[mask]


def gallery(train_voc: VOCRoot, train_rows: Sequence[dict], eval_voc: VOCRoot, eval_rows: Sequence[dict],
            out_png: str) -> None:
    """Qualitative figure (paper Fig. 7/8 style).

    Args:
        train_rows: dicts with ``id`` and paths ``K0``, ``A0``, ``D0`` (PNG) and ``dd`` (HDF5 of
            d^K0 / d^A0): columns image | m^K0 | m^A0 | σ(d^K) | σ(d^A) | m^D0 | GT.
        eval_rows: dicts with ``id`` and prediction PNGs ``baseline``, ``ssdd``: columns
            image | baseline | SSDD | GT.
    """
    from .infer import upsample_dd  # torch: only the gallery needs it

    plt = _plt()
    ncol = 7
    n = len(train_rows) + len(eval_rows)
    fig, axes = plt.subplots(n, ncol, figsize=(1.9 * ncol, 1.5 * n), squeeze=False)
    def sig(z):
        return 1 / (1 + np.exp(-z))

    for r, row in enumerate(train_rows):
        i = row["id"]
        dd = read_h5(row["dd"], i)
        mk = load_mask_png(row["K0"])
        cols = [("image", train_voc.load_image(i)), ("m^K0", _color(mk)),
                ("m^A0", _color(load_mask_png(row["A0"]))), ("σ(d^K0)", sig(upsample_dd(dd["d_k"], mk.shape))),
                ("σ(d^A0)", sig(upsample_dd(dd["d_a"], mk.shape))), ("m^D0", _color(load_mask_png(row["D0"]))),
                ("GT (train)", _color(train_voc.load_mask(i)))]
        for c, (title, im) in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(im, cmap="magma", vmin=0, vmax=1) if im.ndim == 2 else ax.imshow(im)
            ax.set_title(title if r == 0 else "", fontsize=8)
            ax.set_ylabel(i if c == 0 else "", fontsize=6)
    for k, row in enumerate(eval_rows):
        r = len(train_rows) + k
        i = row["id"]
        cols = [("image (val)", eval_voc.load_image(i)), ("baseline", _color(load_mask_png(row["baseline"]))),
                ("SSDD", _color(load_mask_png(row["ssdd"]))), ("GT (val)", _color(eval_voc.load_mask(i)))]
        for c in range(ncol):
            ax = axes[r, c]
            if c < len(cols):
                ax.imshow(cols[c][1])
                ax.set_title(cols[c][0] if k == 0 else "", fontsize=8)
            ax.set_ylabel(i if c == 0 else "", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    _save(fig, out_png)


def gallery_from_artifacts(cfg, ids_files, k0, a0, d0, dd, eval_ids_files, pred_base, pred_ssdd,
                           n_train: int, n_eval: int, out_png: str) -> None:
    """Pick ``n_train`` training and ``n_eval`` evaluation ids (evenly spread, deterministic)
    and draw :func:`gallery` from the pipeline's artifacts."""
    from .io import id_map

    def spread(ids, n):
        ids = sorted(ids)
        return [ids[round(k * (len(ids) - 1) / max(1, n - 1))] for k in range(min(n, len(ids)))] if ids else []

    mk, ma, md = id_map(ids_files, k0, ".png"), id_map(ids_files, a0, ".png"), id_map(ids_files, d0, ".png")
    dmap = id_map(ids_files, dd)
    train_voc = VOCRoot(cfg["data"]["root"], cfg["data"]["gt_dir"])
    have = [i for i in mk if Path(md[i]).exists() and train_voc.mask_path(i).exists()]
    rows = [{"id": i, "K0": mk[i], "A0": ma[i], "D0": md[i], "dd": dmap[i]} for i in spread(have, n_train)]
    pb, ps = id_map(eval_ids_files, pred_base, ".png"), id_map(eval_ids_files, pred_ssdd, ".png")
    eval_voc = VOCRoot(cfg["eval"]["root"], cfg["eval"]["gt_dir"])
    erows = [{"id": i, "baseline": pb[i], "ssdd": ps[i]} for i in spread(list(ps), n_eval)]
    gallery(train_voc, rows, eval_voc, erows, out_png)


def sweep_plot(sweep_json: str, out_png: str) -> None:
    """K0 / A0 / D0 train mIoU against the CRF bilateral weight."""
    plt = _plt()
    rows = read_json(sweep_json)["rows"]
    w = [r["bi_w"] for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for k in ("K0", "A0", "D0"):
        ax.plot(w, [100 * r[k] for r in rows], marker="o", label=k)
    ax.set_xlabel("bilateral CRF weight (bi_w)")
    ax.set_ylabel("train mIoU (%)")
    ax.legend()
    _save(fig, out_png)


# Published VOC 2012 *val* mIoU (%) of related systems, as their papers report them (context
# only: full VOC 2012 with 10,582 train_aug images, ResNet-38/101 or larger backbones, GPU
# schedules; not comparable to a CPU preset on a subset). (system, backbone, mIoU, source).
PUBLISHED_VAL_MIOU = [
    ("PSA / AffinityNet (baseline of SSDD)", "ResNet-38", 61.7, "SSDD, ICCV 2019, Table 1 (seed 000)"),
    ("SSDD", "ResNet-38", 64.9, "SSDD, ICCV 2019, Table 1 (seed 000)"),
    ("AuxSegNet", "ResNet-38", 69.0, "AuxSegNet supplement, Table 1 (seed 004)"),
    ("W-OoD", "ResNet-101", 69.8, "W-OoD, CVPR 2022, appendix Table A3 (seed 002)"),
    ("W-OoD", "WideResNet-38", 70.7, "W-OoD, CVPR 2022, appendix Table A3 (seed 002)"),
    ("SEAM + ISL/FSL (mean of 5 runs)", "ResNet-38", 66.7,
     "High-fidelity pseudo-labels, supplement Table 7, reproduced column (seed 003)"),
    ("Spatial-BCE + ISL/FSL (mean of 5 runs)", "ResNet-101", 70.1,
     "High-fidelity pseudo-labels, supplement Table 7, reproduced column (seed 003)"),
]


def published_csv(out_csv: str) -> None:
    """:data:`PUBLISHED_VAL_MIOU` as CSV (the report's context table)."""
    with atomic_path(out_csv) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["system", "backbone", "VOC 2012 val mIoU (published)", "source"])
            w.writerows(PUBLISHED_VAL_MIOU)


def published_table() -> str:
    """The published context rows (:data:`PUBLISHED_VAL_MIOU`) as a markdown section."""
    lines = ["## Published results, for context (not measured here)", "",
             "PASCAL VOC 2012 val mIoU as the papers report it: full VOC 2012 (10,582 train_aug images, "
             "1,449 val), large backbones and GPU schedules. Not comparable with the rows above.", "",
             "| system | backbone | val mIoU | source |", "| --- | --- | ---: | --- |"]
    lines += [f"| {n} | {b} | {v:.1f} | {s} |" for n, b, v, s in PUBLISHED_VAL_MIOU]
    return "\n".join(lines) + "\n"


ABLATION_ROWS = {
    "K0": "seg model on m^K0 (PSA baseline)",
    "A0": "seg model on m^A0 (PSA + CRF)",
    "D0": "seg model on m^D0 (static region refinement)",
    "DYN0": "SSDD model, refinement off (m^D0 in every seg loss: the control)",
    "SSDD": "SSDD (static + dynamic region refinement)",
}


# the animal classes on which the paper reports its largest gains over PSA (SSDD §5, Table 1)
ANIMAL_CLASSES = ("cat", "cow", "dog", "horse", "sheep")


def _mean_std(x: Sequence[float]) -> tuple[float, float | None]:
    a = np.asarray(x, dtype=np.float64)
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else None)


def confusion_path(score_json: str) -> str:
    """The per-image confusion file the ``score`` rule writes beside a score JSON:
    ``results/miou_x.json`` → ``results/confusion/miou_x.h5``."""
    p = Path(score_json)
    return str(p.parent / "confusion" / (p.stem + ".h5"))


def read_confusion(path: str) -> tuple[list[str], np.ndarray]:
    """(ids, (N, K, K) int64 per-image confusion matrices) of a ``score`` rule's HDF5.

    Raises:
        ArtifactError: a missing or unreadable file (naming it)."""
    import h5py

    from .io import ArtifactError

    try:
        with h5py.File(path, "r") as f:
            return [i.decode() for i in f["ids"][()]], f["confusion"][()].astype(np.int64)
    except (OSError, KeyError) as e:
        raise ArtifactError(f"{path}: cannot read per-image confusion matrices ({e})") from e


# (row, reference) pairs compared in the ablation table: every row against K0, SSDD also against
# the control DYN0 (the refinement's own contribution) and D0 (issue 30)
COMPARISONS = (("A0", "K0"), ("D0", "K0"), ("DYN0", "K0"), ("SSDD", "K0"), ("SSDD", "DYN0"), ("SSDD", "D0"))


def compare_rows(miou: Mapping[str, Sequence[float]], confusions: Mapping[str, Sequence[str]] | None,
                 n_boot: int = 10000) -> list[dict]:
    """The :data:`COMPARISONS` present in ``miou`` (row → per-run mIoU): paired t-test over runs
    and, with ``confusions`` (row → per-run confusion files), the image-level paired bootstrap
    95% CI (:mod:`ssdd_core.stats`), and their :func:`significance_verdict` (``verdict``).

    Raises:
        ValueError: two rows' runs scored on different image ids."""
    from . import stats

    conf = {}
    out = []
    for row, ref in COMPARISONS:
        if row not in miou or ref not in miou:
            continue
        c = {"row": row, "reference": ref, **stats.paired_t(miou[ref], miou[row])}
        if confusions and row in confusions and ref in confusions:
            for name in (row, ref):
                if name not in conf:
                    read = [read_confusion(p) for p in confusions[name]]
                    conf[name] = (read[0][0], np.stack([m for _, m in read]))
                    if any(ids != read[0][0] for ids, _ in read):
                        raise ValueError(f"ablation: the runs of row {name} were scored on different images")
            if conf[row][0] != conf[ref][0]:
                raise ValueError(f"ablation: rows {row} and {ref} were scored on different images")
            c["bootstrap"] = stats.paired_bootstrap(conf[ref][1], conf[row][1], n_boot=n_boot)
        c["verdict"] = significance_verdict(c.get("bootstrap"), c["p"], c["n"])
        out.append(c)
    return out


def significance_verdict(bootstrap: Mapping | None, p: float | None, runs: int, alpha: float = 0.05) -> str:
    """The words the ablation table puts beside a difference (issue 30 item 2).

    "significant at 5%" only when the image-level bootstrap CI excludes 0, and then qualified by
    what else is known: the image bootstrap holds the trained models fixed, so it does not cover
    training noise, which moved held-out mIoU by 2–3 points between two seeds here (docs/results.md,
    2026-12-03 session 4: one variant's image CI excluded 0 on seed 0 and the sign reversed on seed 1).
    So a difference is called significant over images *and* runs only when the paired t-test over
    the runs also gives p < ``alpha``.

    Args:
        bootstrap: :func:`ssdd_core.stats.paired_bootstrap`'s dict (``significant``) or None.
        p: the paired t-test's two-sided p over runs (None with fewer than 2 runs).
        runs: the number of paired runs.
    Returns:
        "no CI", "difference not shown", "significant at 5% (images and runs)",
        "significant at 5% over images; 1 run, training noise not covered" or
        "significant at 5% over images, not over runs (p = 0.123)".
    """
    if not bootstrap:
        return "no CI"
    if not bootstrap["significant"]:
        return "difference not shown"
    if runs < 2 or p is None:
        return "significant at 5% over images; 1 run, training noise not covered"
    if p < alpha:
        return "significant at 5% (images and runs)"
    return f"significant at 5% over images, not over runs (p = {p:.3f})"


def d2_minus_d0(miou: Mapping[str, float | None]) -> float | None:
    """m^D2 − m^D0 of one diagnostics epoch's ``miou`` (mask → mIoU); None when either is unscored."""
    return None if miou.get("D2") is None or miou.get("D0") is None else miou["D2"] - miou["D0"]


def dynamic_runs(diagnostics: Mapping[str, Sequence[str]], target: float = 0.01) -> tuple[list[str], dict]:
    """Did the dynamic stage refine its labels, run by run? (issue 30's m^D2 target; DESIGN §3.6)

    Args:
        diagnostics: row (``SSDD``, ``DYN0``) → its runs' per-epoch diagnostics JSONs
            (:class:`ssdd_core.refinement.DynamicDiagnostics`, ``results/diagnostics/<dyn><rep>.json``).
        target: the margin m^D2 must beat m^D0 by at the last epoch (mIoU as a fraction; 0.01 = 1 point).
    Returns:
        (markdown lines, JSON object): per row and run the last epoch's mIoU on training crops of
        m^D0, m^K1, m^D2, m^D2 − m^D0, where m^K1 ≠ m^A1 how often the advice m^A1 / the
        knowledge m^K1 is right, and m^D2 − m^D0 at every epoch (the curve; epoch 0 = the start
        point); per row how many runs meet ``m^D2 ≥ m^D0 + target``. In DYN0 m^D2 is computed for
        the diagnostics only; its seg losses see m^D0.
    Raises:
        ArtifactError: a diagnostics file that is missing or has no epochs (naming it).
    """
    from .io import ArtifactError

    def f1(v):
        return "–" if v is None else f"{100 * v:.1f}"

    lines = [f"Dynamic stage on its training crops with GT, last epoch, per run (target m^D2 ≥ m^D0 + "
             f"{100 * target:g}); m^D2 − m^D0 per epoch from epoch 0 (the start point):", "",
             "| row | run | m^D0 | m^K1 | m^D2 | m^D2 − m^D0 | advice right / knowledge right (where m^K1 ≠ m^A1) "
             "| m^D2 − m^D0 per epoch |", "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    out = {}
    for row, paths in diagnostics.items():
        runs = []
        for r, path in enumerate(paths):
            try:
                epochs = read_json(path)["epochs"]
                last = epochs[-1]
            except (OSError, ValueError, KeyError, IndexError) as e:
                raise ArtifactError(f"{path}: not a dynamic-stage diagnostics file with epochs ({e})") from e
            mi = last["miou"]
            gap = d2_minus_d0(mi)
            curve = [d2_minus_d0(e["miou"]) for e in epochs]
            runs.append({"run": r, "file": str(path), "epoch": last["epoch"], "D0": mi.get("D0"), "K1": mi.get("K1"),
                         "D2": mi.get("D2"), "d2_minus_d0": gap, "a1_right": last.get("a1_right"),
                         "k1_right": last.get("k1_right"), "d2_minus_d0_per_epoch": curve,
                         "meets_target": None if gap is None else bool(gap >= target - 1e-12)})
            ak = ("–" if last.get("a1_right") is None
                  else f"{100 * last['a1_right']:.0f}% / {100 * last['k1_right']:.0f}%")
            lines.append(f"| {row} | {r} | {f1(mi.get('D0'))} | {f1(mi.get('K1'))} | {f1(mi.get('D2'))} | "
                         f"{'–' if gap is None else f'{100 * gap:+.1f}'} | {ak} | "
                         + " ".join("–" if v is None else f"{100 * v:+.1f}" for v in curve) + " |")
        met = sum(bool(x["meets_target"]) for x in runs)
        out[row] = {"runs": runs, "runs_meeting_target": met}
        lines.append(f"| {row} | target met | | | | {met} of {len(runs)} runs | | |")
    return lines, {"target": target, "rows": out}


def ablation_table(rows: Mapping[str, Sequence[str]], out_md: str, out_json: str, extra: dict | None = None,
                   confusions: Mapping[str, Sequence[str]] | None = None, repeats_cover: str | None = None,
                   n_boot: int = 10000, diagnostics: Mapping[str, Sequence[str]] | None = None) -> dict:
    """The ablation rows of paper Table 1 / Fig. 8 on the eval split, mean ± std over runs.

    Args:
        rows: row name (``K0``, ``A0``, ``D0``, ``SSDD``; the first one is the reference of the
            gain columns) → the score JSONs of its runs (``stages.score``), run r of every row
            trained with the same seed, so the gains are paired per run.
        out_md, out_json: the markdown table (ending with :func:`published_table`) and the
            numbers: per row the per-run mIoU and per-class IoU, their mean and sample std
            (ddof 1; null with one run), and the paired gain over the reference row.
        extra: more keys for the JSON (the workflow adds ``provenance``).
        confusions: row → per-run per-image confusion files (``score``'s HDF5): adds the
            image-level paired bootstrap CI to each comparison (:func:`compare_rows`).
        repeats_cover: what a repeat reruns, for the table's header.
        diagnostics: row → per-run dynamic-stage diagnostics JSONs (SSDD, DYN0): adds the
            per-run m^D0 / m^K1 / m^D2 section and its curve (:func:`dynamic_runs`).
    Returns: the JSON object written.
    Raises:
        ValueError: rows with different numbers of runs, or runs scored on different splits /
            image counts (they would not be comparable).
    """
    data = {name: [read_json(p) for p in paths] for name, paths in rows.items()}
    n_runs = {len(v) for v in data.values()}
    if len(n_runs) != 1 or 0 in n_runs:
        raise ValueError(f"ablation: every row needs the same number of runs, got "
                         f"{ {k: len(v) for k, v in data.items()} }")
    where = {(r["split"], r["n_images"]) for runs in data.values() for r in runs}
    if len(where) != 1:
        raise ValueError(f"ablation: runs scored on different eval sets {sorted(where)}: "
                         f"{ {k: list(v) for k, v in rows.items()} }")
    split, n_images = where.pop()
    ref = next(iter(data))
    ref_miou = np.array([r["miou"] for r in data[ref]], dtype=np.float64)
    out = {"split": split, "n_images": n_images, "runs": n_runs.pop(), "reference": ref, "rows": {}}
    for name, runs in data.items():
        miou = np.array([r["miou"] for r in runs], dtype=np.float64)
        iou = np.array([[np.nan if v is None else v for v in r["iou"]] for r in runs], dtype=np.float64)
        gain = miou - ref_miou
        m, s = _mean_std(miou)
        gm, gs = _mean_std(gain)
        out["rows"][name] = {
            "what": ABLATION_ROWS.get(name, name), "files": list(rows[name]),
            "miou_runs": miou.tolist(), "miou_mean": m, "miou_std": s,
            "gain_runs": gain.tolist(), "gain_mean": gm, "gain_std": gs,
            # a gain smaller than its own run-to-run std is not told apart from noise
            "gain_within_std": None if gs is None else bool(abs(gm) <= gs),
            "iou_mean": [None if np.isnan(c).all() else float(np.nanmean(c)) for c in iou.T],
        }
    out["comparisons"] = compare_rows({k: r["miou_runs"] for k, r in out["rows"].items()}, confusions, n_boot)
    out["repeats_cover"] = repeats_cover

    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"

    def pm(m, s):
        return pct(m) + ("" if s is None else f" ± {pct(s)}")

    lines = [f"# Ablation on {split} ({n_images} images, {out['runs']} run(s) per row)", "",
             *([f"Repeats rerun {repeats_cover}.", ""] if repeats_cover else []),
             f"mIoU over the classes in GT; mean ± sample std over runs; gain = row − {ref} per run "
             "(same seed), mean ± std.", "",
             f"| row | model | mIoU | gain vs {ref} | |", "| --- | --- | ---: | ---: | --- |"]
    for name, r in out["rows"].items():
        note = ("" if name == ref else "1 run: noise unknown" if r["gain_std"] is None
                else "within run-to-run noise" if r["gain_within_std"] else "larger than its std")
        gain = "" if name == ref else ("+" if r["gain_mean"] >= 0 else "") + pm(r["gain_mean"], r["gain_std"])
        lines.append(f"| {name} | {r['what']} | {pm(r['miou_mean'], r['miou_std'])} | {gain} | {note} |")
    lines += ["", "Differences (row − reference): paired t-test over runs; 95% CI from an image-level paired "
              f"bootstrap ({n_boot} resamples of the {n_images} eval images, mean over runs). Significant at 5% "
              "only when the CI excludes 0; the bootstrap holds the trained models fixed, so \"images and runs\" "
              "also needs the paired t-test's p < 0.05 over the runs (training noise).", "",
              "| row − reference | mean | p (paired t) | 95% CI | |", "| --- | ---: | ---: | ---: | --- |"]
    for c in out["comparisons"]:
        b = c.get("bootstrap")
        ci = "–" if not b else f"[{100 * b['ci95'][0]:+.1f}, {100 * b['ci95'][1]:+.1f}]"
        p = "–" if c["p"] is None else f"{c['p']:.3f}"
        lines.append(f"| {c['row']} − {c['reference']} | {100 * c['mean_diff']:+.1f} | {p} | {ci} | {c['verdict']} |")
    if diagnostics:
        diag_lines, out["dynamic_diagnostics"] = dynamic_runs(diagnostics)
        lines += ["", *diag_lines]
    names = list(out["rows"])
    last = names[-1]
    lines += ["", f"Per class (IoU, mean over runs; gain = {last} − {ref}, paper Table 1):", "",
              "| class | " + " | ".join(names) + " | gain |", "| --- |" + " ---: |" * (len(names) + 1)]
    gains = {}  # class index → last − ref IoU (None where either is unscored)
    for c, cname in enumerate(CLASS_NAMES):
        vals = [out["rows"][n]["iou_mean"][c] for n in names]
        a, b = out["rows"][ref]["iou_mean"][c], out["rows"][last]["iou_mean"][c]
        gains[c] = None if a is None or b is None else b - a
        if all(v is None for v in vals):
            continue
        g = "–" if gains[c] is None else f"{100 * gains[c]:+.1f}"
        lines.append(f"| {cname} | " + " | ".join(pct(v) for v in vals) + f" | {g} |")
    # SSDD §5 (Table 1): over 10 points gained on cat, cow, horse and sheep against PSA, all animals
    animal = {c: gains[c] for c in (CLASS_NAMES.index(n) for n in ANIMAL_CLASSES)}
    scored = [g for g in animal.values() if g is not None]
    out["animal_gains"] = {CLASS_NAMES[c]: g for c, g in animal.items()}
    lines += ["", f"Animal classes ({last} − {ref}; the paper's largest gains, SSDD §5): " + ", ".join(
        f"{CLASS_NAMES[c]} {'–' if g is None else f'{100 * g:+.1f}'}" for c, g in animal.items())
        + f"; {sum(g > 0 for g in scored)} of {len(scored)} positive."]
    text = "\n".join(lines) + "\n\n" + published_table()
    with atomic_path(out_md) as tmp:
        Path(tmp).write_text(text)
    write_json(out_json, {**out, "published_val_miou": [
        {"system": n, "backbone": b, "miou": v, "source": s} for n, b, v, s in PUBLISHED_VAL_MIOU], **(extra or {})})
    return out


def table1(miou_json: str, baseline_json: str, out_md: str) -> str:
    """Per-class IoU of the baseline, SSDD and the gain, like the paper's Table 1 (markdown)."""
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


def run_summary(results_dir: str = "results", since: float = 0.0) -> str:
    """What a run just wrote (Snakemake's ``onsuccess``): the scores of every ``results/*.json``
    modified at or after ``since`` (epoch seconds), and where the tables and the report are.

    Returns:
        the text to print (a line saying so when no score was written).
    """
    root = Path(results_dir)
    lines = []
    for p in sorted(root.glob("*.json")):
        if p.stat().st_mtime < since:
            continue
        try:
            d = read_json(p)
        except Exception:  # not ours to judge here
            continue
        if "miou" in d and d["miou"] is not None:
            lines.append(f"  {p}: mIoU {100 * d['miou']:.1f} over {d.get('n_images')} {d.get('split', '')} images "
                         f"(model {d.get('model', '?')})")
        elif "summary" in d:
            rows = ", ".join(f"{k} {100 * v:.1f}" for k, v in d["summary"].items() if v is not None)
            lines.append(f"  {p}: seed mIoU on training ids with GT: {rows}")
        elif "rows" in d and isinstance(d["rows"], dict) and d.get("runs"):
            rows = ", ".join(f"{k} {100 * r['miou_mean']:.1f}" for k, r in d["rows"].items())
            lines.append(f"  {p}: ablation ({d['runs']} run(s), {d.get('n_images')} images): {rows}")
    if not lines:
        return "ssdd-pipeline: no score was written in this run."
    where = [f"  {q}" for q in ("results/table1.md", "results/ablation.md") if (root / Path(q).name).exists()]
    return "\n".join(["ssdd-pipeline: scores written in this run", *lines,
                      "Per-class tables (per-class IoU also under iou_by_class in each JSON):", *where,
                      "Report: snakemake --report report.html (figures in results/report/)"])
