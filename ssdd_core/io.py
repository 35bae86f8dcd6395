"""Artifact IO: atomic writes, paletted PNG masks, HDF5 shards, checkpoints, JSON.

Every writer in the project goes through :func:`atomic_path`: the data is written to a
temporary file in the destination directory and moved over the destination with
``os.replace``, so a killed job never leaves a half-written file that looks finished.
Nothing here unpickles data: checkpoints load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import h5py
import numpy as np
from PIL import Image

__all__ = [
    "atomic_path", "atomic_dir", "voc_palette", "save_mask", "load_mask_png", "write_json",
    "read_json", "H5Writer", "read_h5", "read_h5_ids", "save_checkpoint", "load_checkpoint",
    "ArtifactError",
]


class ArtifactError(RuntimeError):
    """A pipeline artifact (HDF5 shard, checkpoint, mask) is missing, truncated or inconsistent."""


def _remove_stale_temps(path: Path) -> None:
    """Remove temporaries of ``path`` left by a killed earlier writer (SIGKILL skips cleanup).

    Only one job writes a given output at a time (Snakemake guarantees it), so any
    ``.{name}.*.tmp`` next to it is a leftover.
    """
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched, so a
    finished artifact is never replaced by a partial one.

    Args:
        path: final destination. Its parent directory is created if needed.
        suffix: suffix of the temporary file (default: the suffix of ``path``, so that
            libraries that pick a format from the extension keep working).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=(suffix if suffix is not None else path.suffix) + ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files: use the usual mode
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path``.

    Used for per-shard mask folders: the folder appears complete or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map as a flat list of 768 ints (256 RGB triples).

    Label 0 is black, 255 (ignore) is (224, 224, 192), as in the VOC devkit.
    """
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.extend([r, g, b])
    return pal


_PALETTE = voc_palette()


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a label map as a paletted (mode "P") PNG with the VOC palette, atomically.

    Args:
        path: destination ``.png``.
        mask: (H, W) integer array, values 0..20 or 255.
    Raises:
        ValueError: if ``mask`` is not 2-D or has values outside 0..255.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: mask must be 2-D, got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"{path}: mask values must lie in 0..255")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(_PALETTE)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def load_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG (paletted or grayscale) as (H, W) uint8 label indices.

    Raises:
        FileNotFoundError: if the file does not exist.
        ArtifactError: if the file cannot be decoded, is an RGB colour image, or is a 16/32-bit
            grayscale PNG with values outside 0..255.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise ArtifactError(f"{path}: expected a paletted or grayscale label PNG, got mode {img.mode}")
            arr = np.array(img)
    except ArtifactError:
        raise
    except Exception as e:  # PIL raises several types for broken files
        raise ArtifactError(f"{path}: cannot read mask ({e})") from e
    if arr.dtype != np.uint8:  # mode I / I;16: check the range before the cast (256 would become 0)
        bad = np.unique(arr[(arr < 0) | (arr > 255)])
        if bad.size:
            raise ArtifactError(f"{path}: label values outside 0..255 in a {arr.dtype} PNG: {bad.tolist()[:10]}")
    return arr.astype(np.uint8)


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


class H5Writer:
    """Write one HDF5 shard atomically: one group per image id.

    Each id becomes a group holding named datasets (float maps stored as float16 with
    lzf compression unless they are integer arrays). Use as a context manager; the file
    appears at ``path`` only when the block exits without error.

    Example:
        with H5Writer("results/cam/000.h5") as w:
            w.add("2007_000032", cam=cam, labels=np.array([1, 15]))
    """

    def __init__(self, path: str | os.PathLike, float_dtype=np.float16):
        self.path = Path(path)
        self.float_dtype = float_dtype
        self._ctx = None
        self._f = None

    def __enter__(self):
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._f = h5py.File(tmp, "w")
        return self

    def add(self, image_id: str, **arrays: np.ndarray) -> None:
        if image_id in self._f:
            raise ValueError(f"{self.path}: id {image_id} written twice")
        g = self._f.create_group(image_id)
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            if np.issubdtype(arr.dtype, np.floating):
                arr = arr.astype(self.float_dtype)
            kw = {"compression": "lzf"} if arr.ndim >= 2 else {}
            g.create_dataset(name, data=arr, **kw)

    def __exit__(self, exc_type, exc, tb):
        self._f.close()
        return self._ctx.__exit__(exc_type, exc, tb)


def read_h5_ids(path: str | os.PathLike) -> list[str]:
    """Ids stored in an HDF5 shard (sorted)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"HDF5 shard not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            return sorted(f.keys())
    except OSError as e:
        raise ArtifactError(f"{path}: cannot open HDF5 shard ({e})") from e


def read_h5(path: str | os.PathLike, image_id: str) -> dict[str, np.ndarray]:
    """All datasets of one id from an HDF5 shard, floats as float32.

    Raises:
        ArtifactError: if the file is missing or unreadable, or does not hold ``image_id``.
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"HDF5 shard not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if image_id not in f:
                raise ArtifactError(f"{path}: no entry for id {image_id!r} (shard holds {len(f)} ids)")
            out = {}
            for k, ds in f[image_id].items():
                a = ds[()]
                out[k] = a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a
            return out
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read HDF5 shard ({e})") from e


def save_checkpoint(path: str | os.PathLike, state: Mapping) -> None:
    """Save a checkpoint (a dict of tensors / numbers / strings / nested dicts) atomically.

    Raises:
        ValueError: if any floating tensor in ``state`` is not finite (a NaN checkpoint is
            never written).
    """
    import torch

    def check(obj, where):
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not torch.isfinite(obj).all():
                raise ValueError(f"refusing to write {path}: non-finite values in {where}")
        elif isinstance(obj, Mapping):
            for k, v in obj.items():
                check(v, f"{where}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                check(v, f"{where}[{i}]")

    check(state, "state")
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (never unpickles arbitrary objects).

    Raises:
        FileNotFoundError: if the file does not exist.
        ArtifactError: if the file is truncated or not a torch checkpoint.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ArtifactError(f"{path}: cannot load checkpoint (truncated or not a weights-only "
                            f"torch file): {e}") from e


def read_shard_ids(path) -> list[str]:
    """The ids of a shard's id file (one per line, blank lines skipped)."""
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]


def id_map(split_files: Sequence[str], dirs_or_files: Sequence[str], suffix: str = "") -> dict[str, str]:
    """id → artifact path, from aligned lists of shard id files and shard artifacts.

    With ``suffix`` (e.g. ``.png``) the artifact is a folder and the path is folder/id+suffix;
    without, the artifact file itself (an HDF5 shard).
    """
    out = {}
    for sf, d in zip(split_files, dirs_or_files):
        for i in read_shard_ids(sf):
            out[i] = str(Path(d) / f"{i}{suffix}") if suffix else str(d)
    return out


def files_key(paths) -> list:
    """(path, size, mtime) of input files: part of a resume key, so a resume state is never
    applied after an input changed."""
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out
