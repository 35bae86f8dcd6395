"""Build data/voc12_sample/ from ../shared/data/voc2012_mini (run once; output is committed).

Greedy, deterministic selection: rare classes first, so that many classes appear in both
the train_aug and the val part; smaller JPEGs preferred to keep the sample small.
"""
import random
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/voc2012_mini")
dst = Path(sys.argv[2] if len(sys.argv) > 2 else "data/voc12_sample")
N_TRAIN, N_VAL = 160, 60


def labels(root, gt, i):
    m = np.array(Image.open(root / gt / f"{i}.png"))
    return {int(c) for c in np.unique(m) if 1 <= c <= 20}


def pick(ids, gt, n, rng):
    lab = {i: labels(src, gt, i) for i in ids}
    size = {i: (src / "JPEGImages" / f"{i}.jpg").stat().st_size for i in ids}
    count = {}
    for i in ids:
        for c in lab[i]:
            count[c] = count.get(c, 0) + 1
    chosen, have = [], {}
    pool = sorted(ids, key=lambda i: (size[i], i))
    # rounds: each round, for every class (rarest first) take one more image holding it
    while len(chosen) < n:
        added = False
        for c in sorted(count, key=lambda c: count[c]):
            cand = [i for i in pool if c in lab[i] and i not in chosen and size[i] < 150_000]
            if cand and have.get(c, 0) < max(3, n // 12) and len(chosen) < n:
                i = cand[0]
                chosen.append(i)
                added = True
                for k in lab[i]:
                    have[k] = have.get(k, 0) + 1
        if not added:
            rest = [i for i in pool if i not in chosen]
            chosen += rest[: n - len(chosen)]
    return sorted(chosen), have


rng = random.Random(0)
ss = src / "ImageSets" / "Segmentation"
train_aug = ss.joinpath("train_aug.txt").read_text().split()
val = ss.joinpath("val.txt").read_text().split()
tr, have_tr = pick(train_aug, "SegmentationClassAug", N_TRAIN, rng)
va, have_va = pick(val, "SegmentationClass", N_VAL, rng)
both = sorted(set(have_tr) & set(have_va))
print("train classes", dict(sorted(have_tr.items())))
print("val classes", dict(sorted(have_va.items())))
print("classes in both:", len(both))
if dst.exists():
    shutil.rmtree(dst)
for d in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
    (dst / d).mkdir(parents=True)
for i in tr + va:
    shutil.copy2(src / "JPEGImages" / f"{i}.jpg", dst / "JPEGImages")
for i in tr:
    shutil.copy2(src / "SegmentationClassAug" / f"{i}.png", dst / "SegmentationClassAug")
    if (src / "SegmentationClass" / f"{i}.png").exists():
        shutil.copy2(src / "SegmentationClass" / f"{i}.png", dst / "SegmentationClass")
for i in va:
    shutil.copy2(src / "SegmentationClass" / f"{i}.png", dst / "SegmentationClass")
(dst / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(tr) + "\n")
(dst / "ImageSets/Segmentation/val.txt").write_text("\n".join(va) + "\n")
