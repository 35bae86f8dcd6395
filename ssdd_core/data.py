"""VOC-layout data access: ids, images, masks, image-level labels, augmentation.

Any ``VOCdevkit/VOC2012``-style root works: ``JPEGImages/{id}.jpg``, a GT folder
(``SegmentationClass`` or ``SegmentationClassAug``), split lists in
``ImageSets/Segmentation/{split}.txt`` (or any list file), optional ``Annotations/{id}.xml``.
"""
from __future__ import annotations

import logging
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .io import load_mask_png

log = logging.getLogger(__name__)

NUM_CLASSES = 21  # background + 20 foreground classes
IGNORE = 255
CLASS_NAMES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class DataError(ValueError):
    """Bad input data: missing root or file, unreadable image, inconsistent mask."""


class VOCRoot:
    """A VOC-layout dataset root.

    Args:
        root: folder holding ``JPEGImages`` (e.g. ``.../VOCdevkit/VOC2012``).
        gt_dir: name of the GT folder under ``root`` (``SegmentationClass`` or
            ``SegmentationClassAug``).
    Raises:
        DataError: if ``root`` or ``root/JPEGImages`` does not exist.
    """

    def __init__(self, root: str | Path, gt_dir: str = "SegmentationClassAug"):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise DataError(f"dataset root does not exist: {self.root}")
        if not (self.root / "JPEGImages").is_dir():
            raise DataError(f"dataset root {self.root} has no JPEGImages/ folder (not a VOC layout)")
        self.gt_dir = gt_dir

    def __repr__(self):
        return f"VOCRoot({str(self.root)!r}, gt_dir={self.gt_dir!r})"

    def split_path(self, split: str) -> Path:
        """Path of a split list: a name under ``ImageSets/Segmentation`` or a file path."""
        p = Path(split)
        if p.suffix == ".txt" and p.exists():
            return p
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def read_ids(self, split: str) -> list[str]:
        """Ids of a split, in file order, duplicates removed.

        Raises:
            DataError: if the list file is missing or empty.
        """
        p = self.split_path(split)
        if not p.exists():
            raise DataError(f"split list not found: {p}")
        ids = []
        seen = set()
        for line in p.read_text().splitlines():
            tok = line.strip().split()
            if not tok:
                continue
            i = Path(tok[0]).stem  # accept "JPEGImages/x.jpg SegmentationClassAug/x.png" lines too
            if i not in seen:
                seen.add(i)
                ids.append(i)
        if not ids:
            raise DataError(f"split list is empty: {p}")
        return ids

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path:
        return self.root / self.gt_dir / f"{image_id}.png"

    def check_ids(self, ids: Sequence[str], need_masks: bool = False) -> None:
        """Fail early, naming the first id whose JPEG (or GT mask) is missing.

        Raises:
            DataError: naming the split entry and the missing file.
        """
        for i in ids:
            if not self.image_path(i).exists():
                raise DataError(f"id {i!r} is listed but {self.image_path(i)} does not exist")
            if need_masks and not self.mask_path(i).exists():
                raise DataError(f"id {i!r} has no GT mask {self.mask_path(i)}")

    def load_image(self, image_id: str) -> np.ndarray:
        """The RGB image as a C-contiguous ``uint8 (H, W, 3)`` array.

        Raises:
            DataError: if the file is missing or cannot be decoded (e.g. truncated JPEG).
        """
        p = self.image_path(image_id)
        if not p.exists():
            raise DataError(f"image not found: {p}")
        try:
            with Image.open(p) as im:
                im.load()
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
        except Exception as e:
            raise DataError(f"{p}: cannot decode image ({e})") from e
        return np.ascontiguousarray(arr)

    def load_mask(self, image_id: str, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
        """The GT label map, ``uint8 (H, W)``, values 0..20 or 255.

        Args:
            expect_shape: if given, the (H, W) the mask must have (its image's size).
        Raises:
            DataError: missing file, wrong size, or a label > 20 other than 255.
        """
        p = self.mask_path(image_id)
        if not p.exists():
            raise DataError(f"GT mask not found: {p}")
        m = load_mask_png(p)
        if expect_shape is not None and tuple(m.shape) != tuple(expect_shape):
            raise DataError(f"{p}: mask size {m.shape[1]}x{m.shape[0]} differs from its image "
                            f"{expect_shape[1]}x{expect_shape[0]}")
        bad = (m > 20) & (m != IGNORE)
        if bad.any():
            raise DataError(f"{p}: mask has label(s) {sorted(set(np.unique(m[bad]).tolist()))} "
                            f"outside 0..20 and not 255")
        return m

    def image_size(self, image_id: str, decode: bool = True) -> tuple[int, int]:
        """(H, W) of an image; with ``decode`` the whole JPEG is decoded, so a truncated or
        corrupt file fails here, before any expensive stage.

        Raises:
            DataError: missing or undecodable file.
        """
        p = self.image_path(image_id)
        if not p.exists():
            raise DataError(f"image not found: {p}")
        try:
            with Image.open(p) as im:
                if decode:
                    im.load()
                return im.size[1], im.size[0]
        except Exception as e:
            raise DataError(f"{p}: cannot decode image ({e})") from e

    def image_labels(self, image_id: str, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Image-level foreground labels (DESIGN §3.1), sorted int64 values in 1..20.

        From ``Annotations/{id}.xml`` when that file exists, else the unique labels of the
        GT mask (use the *training* GT folder here, never the evaluation one).
        ``expect_shape`` (the image's (H, W)) makes a mask of another size an error.
        """
        xml = self.root / "Annotations" / f"{image_id}.xml"
        if xml.exists():
            try:
                tree = ET.parse(xml)
            except ET.ParseError as e:
                raise DataError(f"{xml}: cannot parse annotation XML ({e})") from e
            names = {o.findtext("name", "").strip() for o in tree.getroot().iter("object")}
            labs = sorted(CLASS_NAMES.index(n) for n in names if n in CLASS_NAMES and n != "background")
            return np.array(labs, dtype=np.int64)
        m = self.load_mask(image_id, expect_shape)
        u = np.unique(m)
        return np.array([int(c) for c in u if 1 <= c <= 20], dtype=np.int64)


def image_label_table(voc: VOCRoot, ids: Sequence[str], check: bool = True) -> tuple[dict[str, list[int]], list[str]]:
    """Image-level labels for many ids.

    With ``check``, every image is decoded and its training mask must have the image's size,
    so bad files stop the run at this first, cheap stage with a message naming the file.

    Returns:
        (labels, skipped): ``labels`` maps id → sorted list of foreground classes (1..20);
        ``skipped`` lists ids whose label set is empty (they carry no training signal for a
        weakly-supervised method and are left out, with a warning).
    """
    labels, skipped = {}, []
    for i in ids:
        size = voc.image_size(i) if check else None  # decodes the whole JPEG, once
        labs = voc.image_labels(i, expect_shape=size).tolist()
        if not labs:
            skipped.append(i)
            log.warning("id %s has an empty image-level label set; skipped", i)
            continue
        labels[i] = labs
    return labels, skipped


def normalize(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) → float32 (3, H, W), ImageNet mean/std normalised."""
    x = (img.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 (H, W, 3) image to ``size`` = (H', W') with PIL."""
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float maps (L, H, W) to (L, H', W') with PIL (float32 mode "F"; antialiased
    when shrinking). No torch, so it is safe in forked worker processes. Returns float32."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(m, dtype=np.float32))
                                .resize((size[1], size[0]), Image.BILINEAR)) for m in maps])


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 (H, W) label map to ``size`` = (H', W')."""
    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))


def color_jitter(img: np.ndarray, rng: random.Random, strength: float = 0.3) -> np.ndarray:
    """Random brightness / contrast / saturation jitter on a uint8 (H, W, 3) image.

    The factors (uniform in [1 − strength, 1 + strength]) and their order are drawn as
    torchvision's ``ColorJitter(strength, strength, strength)`` draws them, but from a private
    generator seeded from the per-sample ``rng``: the global torch RNG is neither read nor
    changed, and a run gives the same crops whatever else draws from torch. Applied with
    torchvision's functional ``adjust_*`` (PSA's training augmentation).

    Returns:
        (H, W, 3) uint8.
    """
    import torch
    from torchvision.transforms import functional as TF

    g = torch.Generator().manual_seed(rng.randrange(2**31))
    order = torch.randperm(4, generator=g).tolist()
    lo, hi = max(0.0, 1 - strength), 1 + strength
    factors = [float(torch.empty(1).uniform_(lo, hi, generator=g)) for _ in range(3)]  # b, c, s
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    out = Image.fromarray(img)
    for k in order:
        if k < 3:  # 3 is hue, not jittered
            out = adjust[k](out, factors[k])
    return np.asarray(out)


def random_crop_params(h: int, w: int, crop: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Offsets for a ``crop``×``crop`` window over an (h, w) image, PSA-style.

    Returns (img_y, img_x, out_y, out_x): the window starts at (img_y, img_x) in the
    image and the copied region lands at (out_y, out_x) in the padded crop, so smaller
    images are placed at a random position inside the crop (the rest is padding).
    """
    iy = rng.randint(0, max(0, h - crop))
    ix = rng.randint(0, max(0, w - crop))
    oy = rng.randint(0, max(0, crop - h))
    ox = rng.randint(0, max(0, crop - w))
    return iy, ix, oy, ox


def crop_array(a: np.ndarray, crop: int, params, fill) -> np.ndarray:
    """Apply :func:`random_crop_params` to an (H, W, ...) array, padding with ``fill``."""
    iy, ix, oy, ox = params
    h, w = a.shape[:2]
    ch, cw = min(crop, h), min(crop, w)
    out = np.full((crop, crop) + a.shape[2:], fill, dtype=a.dtype)
    out[oy:oy + ch, ox:ox + cw] = a[iy:iy + ch, ix:ix + cw]
    return out
