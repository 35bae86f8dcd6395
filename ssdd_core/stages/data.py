"""Id lists and image-level labels (DESIGN §3.1)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..data import VOCRoot, image_label_table
from ..io import atomic_path, read_shard_ids, write_json

log = logging.getLogger("ssdd")


def split_ids(root: str, split: str, out_files: Sequence[str], check_images: bool = True) -> int:
    """Split a list's ids into ``len(out_files)`` contiguous shards (written atomically).

    Raises:
        DataError: missing root / list, or an id whose JPEG is missing.
    """
    voc = VOCRoot(root)
    ids = voc.read_ids(split)
    if check_images:
        voc.check_ids(ids)
    n = len(out_files)
    for k, f in enumerate(out_files):
        part = ids[k * len(ids) // n:(k + 1) * len(ids) // n]
        with atomic_path(f) as tmp:
            Path(tmp).write_text("".join(i + "\n" for i in part))
    log.info("%d ids from %s split into %d shards", len(ids), voc.split_path(split), n)
    return len(ids)


def image_labels(data_cfg: dict, split_files: Sequence[str], out_json: str) -> dict:
    """Image-level labels of all training ids (DESIGN §3.1) → JSON {labels, skipped}."""
    voc = VOCRoot(data_cfg["root"], data_cfg["gt_dir"])
    ids = [i for f in split_files for i in read_shard_ids(f)]
    labels, skipped = image_label_table(voc, ids)
    if skipped:
        log.warning("%d of %d ids have no foreground label and are skipped: %s", len(skipped), len(ids),
                    ", ".join(skipped[:20]))
    write_json(out_json, {"labels": labels, "skipped": skipped})
    log.info("labels for %d ids (%d skipped)", len(labels), len(skipped))
    return {"n": len(labels), "skipped": len(skipped)}
