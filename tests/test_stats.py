"""Significance of ablation differences (issue 30): paired t-test and image-level bootstrap on
hand-made tables whose answers are known."""
import math

import numpy as np
import pytest

from ssdd_core import stats


def test_paired_t_on_a_hand_made_table():
    """Differences 1, 2, 3: mean 2, sd 1, t = 2 / (1 / √3) = 3.464 with 2 degrees of freedom,
    two-sided p = 0.0742 (t-table); the order of the rows only flips the sign."""
    r = stats.paired_t([10.0, 20.0, 30.0], [11.0, 22.0, 33.0])
    assert r["mean_diff"] == pytest.approx(2.0) and r["t"] == pytest.approx(2 * math.sqrt(3))
    assert r["p"] == pytest.approx(0.0742, abs=5e-4)
    assert stats.paired_t([11.0, 22.0, 33.0], [10.0, 20.0, 30.0])["t"] == pytest.approx(-2 * math.sqrt(3))
    one = stats.paired_t([0.3], [0.4])
    assert one["mean_diff"] == pytest.approx(0.1) and one["t"] is None and one["p"] is None
    with pytest.raises(ValueError):
        stats.paired_t([1.0, 2.0], [1.0])


def _image(right: int, wrong: int, cls: int = 1, k: int = 3) -> np.ndarray:
    """A (k, k) confusion matrix of one image: ``right`` pixels of class ``cls`` predicted right,
    ``wrong`` predicted as background; 100 background pixels right."""
    m = np.zeros((k, k), np.int64)
    m[0, 0] = 100
    m[cls, cls], m[cls, 0] = right, wrong
    return m


def test_miou_from_confusion_matches_the_hand_computation():
    m = _image(30, 10)  # class 1: IoU 30 / 40; background: 100 / 110; class 2 absent from GT
    assert stats.miou_from_confusion(m) == pytest.approx((100 / 110 + 30 / 40) / 2)
    assert stats.miou_from_confusion(np.stack([m, 2 * m])).tolist() == pytest.approx([(100 / 110 + 0.75) / 2] * 2)


def test_paired_bootstrap_on_hand_made_tables():
    """Identical rows: CI [0, 0], not significant. A row better on every one of 40 images: the
    observed difference is the hand-computed one and the CI excludes 0. Two rows that trade the
    same gain and loss on different images: the CI includes 0. The resampling is vectorised;
    a plain loop over the same resample draws gives the same differences."""
    n = 40
    a = np.stack([_image(30, 10) for _ in range(n)])[None]  # (1 run, 40 images, 3, 3)
    same = stats.paired_bootstrap(a, a, n_boot=500)
    assert same["diff"] == 0 and same["ci95"] == [0.0, 0.0] and not same["significant"]
    b = np.stack([_image(36, 4) for _ in range(n)])[None]
    up = stats.paired_bootstrap(a, b, n_boot=500)
    want = ((100 / 104 + 36 / 40) - (100 / 110 + 30 / 40)) / 2
    assert up["diff"] == pytest.approx(want) and up["significant"] and up["ci95"][0] > 0
    # b2 gains on the first half of the images what it loses on the second half
    b2 = np.stack([_image(36, 4) if i < n // 2 else _image(24, 16) for i in range(n)])[None]
    mixed = stats.paired_bootstrap(a, b2, n_boot=2000)
    assert mixed["ci95"][0] < 0 < mixed["ci95"][1] and not mixed["significant"]
    # vectorised == loop, over the same multinomial draws
    rng = np.random.default_rng(0)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=50)
    loop = [stats.miou_from_confusion((wi[:, None, None] * b2[0]).sum(0)) -
            stats.miou_from_confusion((wi[:, None, None] * a[0]).sum(0)) for wi in w]
    got = stats.paired_bootstrap(a, b2, n_boot=50, seed=0, chunk=50)
    assert np.percentile(loop, [2.5, 97.5]) == pytest.approx(got["ci95"])
    with pytest.raises(ValueError):
        stats.paired_bootstrap(a, b2[:, :10])


def test_seg_settings_tables_on_hand_made_variants(tmp_path):
    """tools/experiments/seg_settings.py: each variant's held-out difference from the first
    (image-level bootstrap over its confusion.h5) and the dynamic equal-wall-time summary (steps
    from the variant's epochs, s/step, the last epoch's m^D2 − m^D0)."""
    import json
    import sys
    from pathlib import Path

    import h5py

    repo = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(repo / "tools"), str(repo / "tools" / "experiments")]
    import seg_settings

    ids = [b"a", b"b", b"c", b"d"]
    good = np.array([[30, 0], [0, 10]])  # 2 classes: all right
    bad = np.array([[20, 10], [5, 5]])
    for name, per in {"ref": [bad, bad, good, good], "better": [good, good, good, good]}.items():
        (tmp_path / name).mkdir()
        with h5py.File(tmp_path / name / "confusion.h5", "w") as f:
            f.create_dataset("ids", data=np.array(ids, dtype="S"))
            f.create_dataset("confusion", data=np.stack(per).astype(np.int32))
    want = stats.miou_from_confusion(np.stack([good] * 4).sum(0)) - stats.miou_from_confusion(
        np.stack([bad, bad, good, good]).sum(0))
    table = seg_settings.paired_differences(tmp_path, ["ref", "better"], n_boot=200)
    assert f"| better | {100 * want:+.1f} | {100 * want:+.1f} | – |" in table, table  # one seed: no t-test
    # a second seed (run folders <variant>@seed1) where "better" is worse: per-seed values, their
    # mean and the paired t-test over the two seeds
    for name, per in {"ref@seed1": [good] * 4, "better@seed1": [bad, good, good, good]}.items():
        (tmp_path / name).mkdir()
        with h5py.File(tmp_path / name / "confusion.h5", "w") as f:
            f.create_dataset("ids", data=np.array(ids, dtype="S"))
            f.create_dataset("confusion", data=np.stack(per).astype(np.int32))
    assert seg_settings.run_name("better", 1, 0) == "better@seed1" and seg_settings.run_name("better", 0, 0) == "better"
    worse = stats.miou_from_confusion(np.stack([bad, good, good, good]).sum(0)) - stats.miou_from_confusion(
        np.stack([good] * 4).sum(0))
    m = {"ref": stats.miou_from_confusion(np.stack([bad, bad, good, good]).sum(0)),
         "better": stats.miou_from_confusion(np.stack([good] * 4).sum(0))}
    p = stats.paired_t([m["ref"], stats.miou_from_confusion(np.stack([good] * 4).sum(0))],
                       [m["better"], stats.miou_from_confusion(np.stack([bad, good, good, good]).sum(0))])["p"]
    table = seg_settings.paired_differences(tmp_path, {"ref": ["ref", "ref@seed1"],
                                                       "better": ["better", "better@seed1"]}, n_boot=200)
    assert (f"| better | {100 * want:+.1f} {100 * worse:+.1f} | {50 * (want + worse):+.1f} | {p:.3f} |"
            in table), table
    with pytest.raises(ValueError, match="same number of seeds"):
        seg_settings.paired_differences(tmp_path, {"ref": ["ref", "ref@seed1"], "better": ["better"]})
    (tmp_path / "better" / "diagnostics.json").write_text(json.dumps({"epochs": [
        {"epoch": 6, "miou": {"D0": 0.44, "K1": 0.38, "D2": 0.41}, "fg": {"K1": 0.67}, "fg_gt": 0.41}]}))
    rows = {"better": {"miou": 0.403, "settings": "dynamic.epochs=6", "seconds": {"train_s": 1020.0}}}
    summary = seg_settings.dynamic_summary(tmp_path, ["better"], rows,
                                           [str(repo / "config" / "voc2012_balanced.yaml")], 1089)
    # 1,089 ids // batch 8 = 136 steps per epoch, 6 epochs; 1020 s / 816 steps = 1.25 s
    assert "| better | 6 | 816 | 1020 | 1.25 | – | 40.3 | 44.0 | 38.0 | 41.0 | -3.0 | 67% / 41% |" in summary, summary
    # a top-level key (a second training run's seed) and a block key; a misspelt key is an error
    cfg = seg_settings.variant_config([], "seed=1,dynamic.epochs=6")
    assert cfg["seed"] == 1 and cfg["dynamic"]["epochs"] == 6
    with pytest.raises(KeyError, match="sead"):
        seg_settings.variant_config([], "sead=1")
