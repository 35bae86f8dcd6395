"""Seeds from another method: read, validate and convert precomputed seeds into p^K0 / m^K0.

SSDD refines any pair of masks before and after a refinement step (DESIGN §3.4); the paper
starts from PSA's random walk. ``seeds.source: precomputed`` replaces the PSA chain with
:func:`import_seeds`, which writes the same artifacts the ``psa`` rule writes (an HDF5 shard of
p^K0 ``prob`` (C+1, H, W) over background + the present labels, ``labels`` (C,), and m^K0 PNGs),
so the CRF, SSDD's static and dynamic stages, the ablation rows and scoring run unchanged.

A seed folder holds, per training id, any of:

* ``<id>.png``: a label map (paletted or grayscale PNG, 0..20, 255 = ignore). Taken as m^K0 as
  it is.
* ``<id>.npy``: float probabilities (C+1, H, W): background first, then the image's
  image-level labels in ascending class order (no pickle: a plain array).
* ``*.h5`` (any names, read together): one group per id with ``prob`` (C+1, H, W) and
  ``labels`` (C,) VOC class ids 1..20, the layout of ``results/psa/*.h5``.

With probabilities only, m^K0 is their argmax; with a label map only, p^K0 gives the seed label
probability ``png_confidence`` and spreads the rest evenly over the other present labels (the
``gt_prob`` unary of the dense-CRF library), and ignore pixels get a uniform distribution;
with both, m^K0 is the PNG and p^K0 the probabilities.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .io import ArtifactError, H5Writer, atomic_dir, load_mask_png, read_h5, read_h5_ids, save_mask

log = logging.getLogger("ssdd")

IGNORE = 255
PROB_SUM_TOLERANCE = 1e-2  # float16 storage rounds each channel by up to ~5e-4


@dataclass
class SeedFolder:
    """Index of a seed folder: which ids have a label map, probabilities (NPY) or an HDF5 entry.

    Raises:
        ArtifactError: the folder does not exist, or an id is in two HDF5 files.
    """

    root: Path
    pngs: dict[str, Path] = field(default_factory=dict)
    npys: dict[str, Path] = field(default_factory=dict)
    h5: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def scan(cls, root: str | Path) -> "SeedFolder":
        root = Path(root)
        if not root.is_dir():
            raise ArtifactError(f"seed folder not found: {root} (config seeds.dir)")
        f = cls(root)
        for p in sorted(root.iterdir()):
            if p.suffix == ".png":
                f.pngs[p.stem] = p
            elif p.suffix == ".npy":
                f.npys[p.stem] = p
            elif p.suffix == ".h5":
                for i in read_h5_ids(p):
                    if i in f.h5:
                        raise ArtifactError(f"{p}: id {i} is also in {f.h5[i]}; each id may be in one HDF5 file")
                    f.h5[i] = p
        return f

    def has(self, image_id: str) -> bool:
        return image_id in self.pngs or image_id in self.npys or image_id in self.h5


def _check_probs(prob: np.ndarray, where: str, size: tuple[int, int], n_labels: int) -> np.ndarray:
    prob = np.asarray(prob)
    if prob.ndim != 3 or not np.issubdtype(prob.dtype, np.floating):
        raise ArtifactError(f"{where}: probabilities must be a float (C+1, H, W) array, got {prob.dtype} "
                            f"{prob.shape}")
    if prob.shape[1:] != size:
        raise ArtifactError(f"{where}: map size {prob.shape[1:]} differs from its image's {size} (H, W)")
    if prob.shape[0] != n_labels + 1:
        raise ArtifactError(f"{where}: {prob.shape[0]} channels for background + {n_labels} labels; expected "
                            f"{n_labels + 1}")
    prob = prob.astype(np.float32)
    if not np.isfinite(prob).all():
        raise ArtifactError(f"{where}: probabilities contain NaN or inf")
    if prob.min() < 0:
        raise ArtifactError(f"{where}: negative probabilities (min {prob.min():.4g})")
    s = prob.sum(0)
    worst = float(np.abs(s - 1).max())
    if worst > PROB_SUM_TOLERANCE:
        raise ArtifactError(f"{where}: probabilities do not sum to 1 over channels (off by up to {worst:.3g}; "
                            f"tolerance {PROB_SUM_TOLERANCE})")
    return prob


def _check_labels(mask: np.ndarray, where: str, size: tuple[int, int]) -> np.ndarray:
    if mask.shape != size:
        raise ArtifactError(f"{where}: map size {mask.shape} differs from its image's {size} (H, W)")
    bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(21), IGNORE])
    if bad.size:
        raise ArtifactError(f"{where}: labels outside 0..20 and 255: {bad.tolist()[:10]}")
    return mask


def probs_from_labels(mask: np.ndarray, labels: Sequence[int], confidence: float) -> np.ndarray:
    """p^K0 for a seed given as a label map, for the CRF's unary (dense-CRF ``gt_prob`` style).

    Args:
        mask: (H, W) uint8 labels 0..20 / 255; every label in it except 0 and 255 must be in
            ``labels``.
        labels: (C,) present foreground classes, ascending.
        confidence: probability of the seed label, in (1 / (C+1), 1]; the rest is shared evenly
            by the other C channels. Ignore pixels get 1 / (C+1) everywhere.
    Returns:
        (C+1, H, W) float32 probabilities (background first), summing to 1 per pixel.
    Raises:
        ValueError: ``confidence`` out of range, or a mask label not in ``labels``.
    """
    n = len(labels) + 1
    if not 1.0 / n < confidence <= 1.0 and n > 1:
        raise ValueError(f"confidence {confidence} must lie in (1/{n}, 1] for {n} channels")
    lut = np.full(256, -1, dtype=np.int64)
    lut[0] = 0
    for k, c in enumerate(labels, start=1):
        lut[int(c)] = k
    idx = lut[mask]
    missing = np.unique(mask[(idx < 0) & (mask != IGNORE)])
    if missing.size:
        raise ValueError(f"mask labels {missing.tolist()} are not among the present labels {list(labels)}")
    rest = (1.0 - confidence) / max(1, n - 1)
    prob = np.full((n, *mask.shape), rest, dtype=np.float32)
    hit = idx >= 0
    np.put_along_axis(prob, np.where(hit, idx, 0)[None], np.where(hit, confidence, rest)[None].astype(np.float32),
                      axis=0)
    prob[:, ~hit] = 1.0 / n
    return prob


def load_seed(folder: SeedFolder, image_id: str, image_labels: Sequence[int], size: tuple[int, int],
              confidence: float) -> dict:
    """One id's seed as p^K0 and m^K0, validated.

    Args:
        image_labels: the image-level labels (1..20) of ``labels/train.json``.
        size: the image's (H, W).
    Returns:
        dict with ``prob`` (C+1, H, W) float32, ``labels`` (C,) int64 ascending, ``mask`` (H, W)
        uint8 m^K0, ``extra`` (sorted classes in the seed that the image-level labels do not
        have; they are kept) and ``dropped`` (image-level classes an HDF5 entry's ``labels``
        leave out: they get no channel), both counted by :func:`import_seeds`.
    Raises:
        ArtifactError: no seed for the id, or a seed that fails a check (naming the file).
    """
    if not folder.has(image_id):
        raise ArtifactError(f"{folder.root}: no seed for training id {image_id} "
                            f"(expected {image_id}.png, {image_id}.npy or an entry in a *.h5 file)")
    labels = sorted(int(c) for c in image_labels)
    mask = prob = None
    extra: set[int] = set()
    dropped: list[int] = []
    if image_id in folder.h5:
        where = f"{folder.h5[image_id]} [{image_id}]"
        d = read_h5(folder.h5[image_id], image_id)
        if "prob" not in d:
            raise ArtifactError(f"{where}: no 'prob' dataset (C+1, H, W)")
        h5_labels = [int(c) for c in np.asarray(d.get("labels", labels)).ravel()]
        bad = [c for c in h5_labels if not 1 <= c <= 20]
        if bad or h5_labels != sorted(set(h5_labels)):
            raise ArtifactError(f"{where}: 'labels' must be distinct ascending VOC classes 1..20, got {h5_labels}")
        extra |= set(h5_labels) - set(labels)
        dropped = sorted(set(labels) - set(h5_labels))
        labels = h5_labels if not extra else sorted(set(labels) | set(h5_labels))
        prob = _check_probs(d["prob"], where, size, len(h5_labels))
        if h5_labels != labels:  # extra classes: the union; image labels without a channel get 0
            full = np.zeros((len(labels) + 1, *size), dtype=np.float32)
            full[[0] + [labels.index(c) + 1 for c in h5_labels]] = prob
            prob = full
    elif image_id in folder.npys:
        where = str(folder.npys[image_id])
        try:
            arr = np.load(folder.npys[image_id], allow_pickle=False)
        except ValueError as e:
            raise ArtifactError(f"{where}: not a plain NPY array ({e}); pickled dicts are not read") from e
        prob = _check_probs(arr, where, size, len(labels))
    if image_id in folder.pngs:
        where = str(folder.pngs[image_id])
        mask = _check_labels(load_mask_png(folder.pngs[image_id]), where, size)
        in_png = {int(c) for c in np.unique(mask)} - {0, IGNORE}
        new = in_png - set(labels)
        if new:
            extra |= new
            if prob is not None:
                raise ArtifactError(f"{where}: classes {sorted(new)} are in the label map but have no channel in "
                                    f"the probabilities given with it")
            labels = sorted(set(labels) | new)
    if prob is None:
        prob = probs_from_labels(mask, labels, confidence)
    if mask is None:
        mask = np.array([0, *labels], dtype=np.uint8)[prob.argmax(0)]  # as psa.full_label_map
    return {"prob": prob, "labels": np.asarray(labels, dtype=np.int64), "mask": mask, "extra": sorted(extra),
            "dropped": dropped}


def import_seeds(seed_dir: str, ids: Sequence[str], image_labels: Mapping[str, Sequence[int]],
                 image_size, out_h5: str, out_dir: str, confidence: float = 0.7) -> dict:
    """Validate and convert the seeds of one shard into p^K0 (HDF5) and m^K0 (PNGs).

    Args:
        seed_dir: the seed folder (module docstring).
        ids: the shard's training ids that have image-level labels.
        image_size: callable id → (H, W) of the image.
        out_h5, out_dir: the ``psa`` rule's outputs; both are written atomically, so nothing is
            left for a shard that fails.
    Returns: counts: ``n``, ``from_png`` / ``from_npy`` / ``from_h5``, ``extra_class_images``,
        ``dropped_class_images``.
    Raises:
        ArtifactError: the first seed that fails a check, naming its file.
    """
    folder = SeedFolder.scan(seed_dir)
    missing = [i for i in ids if not folder.has(i)]
    if missing:
        raise ArtifactError(f"{seed_dir}: no seed for {len(missing)} of {len(ids)} training ids, e.g. "
                            f"{', '.join(missing[:5])}")
    stats = {"n": 0, "from_png": 0, "from_npy": 0, "from_h5": 0, "extra_class_images": 0, "dropped_class_images": 0}
    with H5Writer(out_h5) as w, atomic_dir(out_dir) as tmpdir:
        for i in ids:
            s = load_seed(folder, i, image_labels[i], tuple(image_size(i)), confidence)
            if s["extra"]:
                stats["extra_class_images"] += 1
                log.warning("%s: seed has classes %s that its image-level labels %s do not; kept", i, s["extra"],
                            sorted(image_labels[i]))
            if s["dropped"]:
                stats["dropped_class_images"] += 1
                log.warning("%s: the seed's labels leave out image-level classes %s; they get no channel", i,
                            s["dropped"])
            w.add(i, prob=s["prob"], labels=s["labels"])
            save_mask(Path(tmpdir) / f"{i}.png", s["mask"])
            stats["n"] += 1
            stats["from_png"] += i in folder.pngs
            stats["from_npy"] += i in folder.npys
            stats["from_h5"] += i in folder.h5
    if stats["extra_class_images"]:
        log.warning("import_seeds: %d of %d seeds have classes outside their image-level labels",
                    stats["extra_class_images"], stats["n"])
    if stats["dropped_class_images"]:
        log.warning("import_seeds: %d of %d seeds leave out classes of their image-level labels",
                    stats["dropped_class_images"], stats["n"])
    log.info("import_seeds: %s", stats)
    return stats
