"""Figures and tables for ``snakemake --report``: IoU bars, seed table, loss curves, gallery."""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .data import CLASS_NAMES, VOCRoot
from .io import atomic_path, load_mask_png, read_h5, read_json, voc_palette

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
    plt = _plt()
    ncol = 7
    n = len(train_rows) + len(eval_rows)
    fig, axes = plt.subplots(n, ncol, figsize=(1.9 * ncol, 1.5 * n), squeeze=False)
    sig = lambda z: 1 / (1 + np.exp(-z))
    for r, row in enumerate(train_rows):
        i = row["id"]
        dd = read_h5(row["dd"], i)
        cols = [("image", train_voc.load_image(i)), ("m^K0", _color(load_mask_png(row["K0"]))),
                ("m^A0", _color(load_mask_png(row["A0"]))), ("σ(d^K0)", sig(dd["d_k"])),
                ("σ(d^A0)", sig(dd["d_a"])), ("m^D0", _color(load_mask_png(row["D0"]))),
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
    from .stages import id_map

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
