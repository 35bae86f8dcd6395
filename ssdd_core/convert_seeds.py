"""Convert seeds saved by other methods' code into the plain form ``seeds.source: precomputed`` reads.

PSA, IRN and the SSDD authors save their probability maps as NumPy-pickled dicts, which the
importer (:mod:`ssdd_core.seed_import`) never reads: unpickling runs code from the file. This
converter reads them only when told the files are trusted (``--trust-pickle``) and writes one
HDF5 file of ``prob`` (C+1, H, W) + ``labels`` (C,) per id, the importer's own layout, so the
pipeline itself stays pickle-free. Formats, as the authors' code writes them:

* ``psa-cam`` (jiwoon-ahn/psa ``infer_cls.py``, ``--out_cam``): ``{k: cam}`` with ``k`` the
  foreground index 0..19 (VOC class k + 1) of each image-level label and ``cam`` (H, W) float in
  [0, 1] (each map divided by its max). Background: PSA's ``(1 − max_c CAM_c)^α`` (``--bg-pow``,
  ``infer_aff.py``'s ``--alpha``, default 16).
* ``irn-cam`` (jiwoon-ahn/irn ``step/make_cam.py``): ``{"keys": k, "cam": strided, "high_res":
  (C, H, W)}``, ``keys`` the foreground indices 0..19 in channel order; ``high_res`` is used.
  Background: a constant score ``--bg-threshold`` (IRN's ``cam_eval_thres``, default 0.15).
* ``ssdd-aff`` (shimoda-uec/ssdd ``prepare_labels/make_aff_labels.py``, ``results/out_aff``):
  ``{0: bg, c: map}`` random-walk scores keyed by VOC class id (0 = background, c = 1..20).

Scores become probabilities by clamping at 0 and dividing by their sum over channels, so the
argmax (the importer's m^K0) is the method's own label map: the background-threshold argmax of
a CAM, the walk's argmax of ``out_aff``.

Usage: ``python -m ssdd_core.convert_seeds --from psa-cam --trust-pickle IN_DIR OUT_DIR``, then
``seeds: {source: precomputed, dir: OUT_DIR}``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from .io import ArtifactError, H5Writer

log = logging.getLogger("ssdd")
FORMATS = ("psa-cam", "irn-cam", "ssdd-aff")


def _load_dict(path: Path) -> dict:
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as e:  # a broken or foreign file
        raise ArtifactError(f"{path}: cannot read as a NumPy file ({e})") from e
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise ArtifactError(f"{path}: expected a pickled dict (the authors' format), got {type(obj).__name__}")
    return obj


def scores_from_dict(d: dict, fmt: str, where: str, bg_pow: float = 16.0,
                     bg_threshold: float = 0.15) -> tuple[np.ndarray, list[int]]:
    """One image's saved dict → (scores (C+1, H, W) float32, background first; labels (C,) VOC ids
    1..20 ascending).

    Raises:
        ArtifactError: a dict that is not in the format named (message names ``where``).
    """
    if fmt == "psa-cam":
        keys = sorted(int(k) for k in d)
        maps = [np.asarray(d[k], dtype=np.float32) for k in keys]
        labels = [k + 1 for k in keys]
    elif fmt == "irn-cam":
        if "keys" not in d or "high_res" not in d:
            raise ArtifactError(f"{where}: an irn-cam dict has 'keys' and 'high_res'; got {sorted(map(str, d))}")
        keys = [int(k) for k in np.asarray(d["keys"]).ravel()]
        hr = np.asarray(d["high_res"], dtype=np.float32)
        if hr.ndim != 3 or hr.shape[0] != len(keys):
            raise ArtifactError(f"{where}: 'high_res' {hr.shape} does not hold one map per key ({len(keys)})")
        order = np.argsort(keys)
        maps = [hr[i] for i in order]
        labels = [keys[i] + 1 for i in order]
    elif fmt == "ssdd-aff":
        if 0 not in d:
            raise ArtifactError(f"{where}: an ssdd-aff dict has key 0 (background); got {sorted(map(str, d))}")
        labels = sorted(int(k) for k in d if int(k) != 0)
        maps = [np.asarray(d[0], dtype=np.float32)] + [np.asarray(d[k], dtype=np.float32) for k in labels]
    else:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    if any(not 1 <= c <= 20 for c in labels) or len(set(labels)) != len(labels):
        raise ArtifactError(f"{where}: class keys must be distinct VOC classes, got {labels}")
    if not maps or any(m.ndim != 2 or m.shape != maps[0].shape for m in maps):
        raise ArtifactError(f"{where}: maps must all be (H, W) of one size; got {[m.shape for m in maps]}")
    if fmt != "ssdd-aff":
        fg = np.stack(maps) if maps else None
        bg = (np.power(1.0 - fg.max(0).clip(0, 1), bg_pow) if fmt == "psa-cam"
              else np.full(fg.shape[1:], bg_threshold, np.float32))
        maps = [bg.astype(np.float32)] + maps
    scores = np.stack(maps).astype(np.float32)
    if not np.isfinite(scores).all():
        raise ArtifactError(f"{where}: maps contain NaN or inf")
    return scores, labels


def to_probs(scores: np.ndarray) -> np.ndarray:
    """(C+1, H, W) scores → probabilities: clamped at 0, divided by the channel sum (uniform
    where every score is 0). The argmax is unchanged wherever a score is positive."""
    s = np.clip(scores, 0, None)
    tot = s.sum(0, keepdims=True)
    return np.where(tot > 0, s / np.maximum(tot, 1e-12), 1.0 / s.shape[0]).astype(np.float32)


def convert(src: str | Path, dst: str | Path, fmt: str, trust_pickle: bool = False, bg_pow: float = 16.0,
            bg_threshold: float = 0.15) -> int:
    """Convert every ``<id>.npy`` in ``src`` into ``dst/seeds.h5`` (written atomically).

    Returns:
        the number of ids converted.
    Raises:
        PermissionError: ``trust_pickle`` not set (the files are pickles: only trusted files).
        ArtifactError: no ``.npy`` files, or a file not in the format (naming it).
    """
    if not trust_pickle:
        raise PermissionError(f"{fmt} files are NumPy pickles, and loading a pickle runs code from the file: pass "
                              f"--trust-pickle only for files you made or trust")
    files = sorted(Path(src).glob("*.npy"))
    if not files:
        raise ArtifactError(f"{src}: no <id>.npy files to convert")
    Path(dst).mkdir(parents=True, exist_ok=True)
    with H5Writer(Path(dst) / "seeds.h5") as w:
        for p in files:
            scores, labels = scores_from_dict(_load_dict(p), fmt, str(p), bg_pow, bg_threshold)
            w.add(p.stem, prob=to_probs(scores), labels=np.asarray(labels, dtype=np.int64))
    log.info("convert_seeds: %d ids from %s (%s) to %s", len(files), src, fmt, Path(dst) / "seeds.h5")
    return len(files)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ssdd_core.convert_seeds", description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="fmt", choices=FORMATS, required=True, help="the format of the files in IN")
    ap.add_argument("--trust-pickle", action="store_true", help="the files are pickles: load them (trusted only)")
    ap.add_argument("--bg-pow", type=float, default=16.0, help="psa-cam background exponent α (PSA: 16)")
    ap.add_argument("--bg-threshold", type=float, default=0.15, help="irn-cam background score (IRN: 0.15)")
    ap.add_argument("src", metavar="IN", help="folder of <id>.npy files")
    ap.add_argument("dst", metavar="OUT", help="folder for seeds.h5 (config seeds.dir)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        n = convert(a.src, a.dst, a.fmt, a.trust_pickle, a.bg_pow, a.bg_threshold)
    except (PermissionError, ArtifactError) as e:
        print(f"convert_seeds: {e}", file=sys.stderr)
        return 2
    print(f"{n} seeds written to {Path(a.dst) / 'seeds.h5'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
