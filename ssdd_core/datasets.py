"""Training datasets with PSA / SSDD augmentation. Deterministic given (seed, epoch, index)."""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .data import IGNORE, VOCRoot, color_jitter, crop_array, normalize, random_crop_params, resize_image, resize_mask
from .io import load_mask_png, read_h5
from .psa import labels_from_scores


def multi_hot(labels: Sequence[int], with_bg: bool = False) -> torch.Tensor:
    """Image labels → float multi-hot: (20,) over 1..20, or (21,) with background set."""
    if with_bg:
        v = torch.zeros(21)
        v[0] = 1
        v[list(labels)] = 1
    else:
        v = torch.zeros(20)
        v[[c - 1 for c in labels]] = 1
    return v


class _Base(Dataset):
    def __init__(self, voc: VOCRoot, ids: Sequence[str], labels: Mapping[str, list[int]], crop: int,
                 seed: int = 0, jitter: float = 0.3):
        self.voc, self.ids, self.labels, self.crop = voc, list(ids), labels, crop
        self.seed, self.jitter, self.epoch = seed, jitter, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, i: int) -> random.Random:
        return random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + i)

    def __len__(self):
        return len(self.ids)


class ClsDataset(_Base):
    """Classifier / AffinityNet crops: random rescale (long side in ``scale_range``·crop), flip,
    colour jitter, random crop (PSA). Items: ``img`` (3, crop, crop) float32, ``y`` (20,)."""

    def __init__(self, *a, scale_range=(1.0, 768 / 448), **kw):
        super().__init__(*a, **kw)
        self.scale_range = scale_range

    def geometry(self, img, rng):
        h, w = img.shape[:2]
        target = rng.uniform(*self.scale_range) * self.crop
        s = target / max(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        flip = rng.random() < 0.5
        params = random_crop_params(size[0], size[1], self.crop, rng)
        return size, flip, params

    def __getitem__(self, i):
        return self._sample(i)[0]

    def _sample(self, i):
        """The item and the geometry (size, flip, crop params) it was cut with."""
        iid = self.ids[i]
        rng = self.rng(i)
        img = self.voc.load_image(iid)
        size, flip, params = self.geometry(img, rng)
        im = resize_image(img, size)
        if flip:
            im = im[:, ::-1]
        if self.jitter:
            im = color_jitter(np.ascontiguousarray(im), rng, self.jitter)
        x = crop_array(normalize(np.ascontiguousarray(im)).transpose(1, 2, 0), self.crop, params, 0.0)
        item = {"img": torch.from_numpy(x.transpose(2, 0, 1).copy()), "y": multi_hot(self.labels[iid]), "idx": i}
        return item, (size, flip, params)


class AffDataset(ClsDataset):
    """AffinityNet crops with grid labels from the la/ha score maps (DESIGN §3.2).

    Args:
        score_shard: id → HDF5 path of ``aff_labels`` holding ``la`` and ``ha``.
        stride: grid stride of the AffinityNet.
    Items add ``aff_label`` (crop/stride, crop/stride) int64.
    """

    def __init__(self, *a, score_shard: Mapping[str, str], stride: int = 8, **kw):
        super().__init__(*a, **kw)
        self.score_shard, self.stride = score_shard, stride

    def __getitem__(self, i):
        item, (size, flip, params) = self._sample(i)  # score maps get the image's geometry
        iid = self.ids[i]
        d = read_h5(self.score_shard[iid], iid)

        def prep(t):
            t = F.interpolate(torch.from_numpy(t)[None], size, mode="bilinear", align_corners=False)[0]
            if flip:
                t = t.flip(-1)
            return torch.from_numpy(crop_array(t.permute(1, 2, 0).numpy(), self.crop, params, 0.0)).permute(2, 0, 1)

        valid = torch.from_numpy(crop_array(np.ones(size, np.float32), self.crop, params, 0.0))
        item["aff_label"] = labels_from_scores(prep(d["la"]), prep(d["ha"]), valid, self.stride)
        return item


class SegDataset(_Base):
    """Segmentation crops with one or more masks (SSDD augmentation, DESIGN §3.5).

    Random *square* resize to s×s, s uniform in ``resize_range``·crop, flip, colour jitter,
    random crop; masks resized nearest and padded with 255, then resized (nearest) to the DD
    resolution crop/``dd_stride``.

    Args:
        masks: name → {id → PNG path}, e.g. {"K0": ..., "A0": ...}.
        optional: names of ``masks`` that need not have every id (e.g. a GT mask for a slice);
            an id without one gets an all-255 (ignore) crop.
    Items: ``img`` (3, crop, crop), ``img_dd`` (crop/dd, crop/dd, 3) uint8 (for the in-loop
    CRF), ``y21`` (21,) present labels incl. bg, ``epoch`` (the epoch set by :meth:`set_epoch`,
    0-based) and one (crop/dd, crop/dd) int64 per mask.
    """

    def __init__(self, *a, masks: Mapping[str, Mapping[str, str]], resize_range=(1.0, 512 / 448),
                 dd_stride: int = 4, optional: Sequence[str] = (), **kw):
        super().__init__(*a, **kw)
        self.masks, self.resize_range, self.dd_stride = masks, resize_range, dd_stride
        self.optional = set(optional)

    def __getitem__(self, i):
        iid = self.ids[i]
        rng = self.rng(i)
        img = self.voc.load_image(iid)
        s = round(rng.uniform(*self.resize_range) * self.crop)
        flip = rng.random() < 0.5
        params = random_crop_params(s, s, self.crop, rng)
        im = resize_image(img, (s, s))
        if flip:
            im = im[:, ::-1]
        if self.jitter:
            im = color_jitter(np.ascontiguousarray(im), rng, self.jitter)
        im = crop_array(np.ascontiguousarray(im), self.crop, params, 0)
        dd = self.crop // self.dd_stride
        out = {"img": torch.from_numpy(normalize(im)), "img_dd": torch.from_numpy(resize_image(im, (dd, dd)).copy()),
               "y21": multi_hot(self.labels[iid], with_bg=True), "idx": i, "epoch": self.epoch}
        for name, paths in self.masks.items():
            if iid not in paths and name in self.optional:
                out[name] = torch.full((dd, dd), IGNORE, dtype=torch.int64)
                continue
            m = load_mask_png(paths[iid])
            if m.shape != img.shape[:2]:
                raise ValueError(f"{paths[iid]}: mask {m.shape} does not match image {img.shape[:2]}")
            m = resize_mask(m, (s, s))
            if flip:
                m = m[:, ::-1]
            m = crop_array(np.ascontiguousarray(m), self.crop, params, IGNORE)
            out[name] = torch.from_numpy(resize_mask(m, (dd, dd)).astype(np.int64))
        return out
