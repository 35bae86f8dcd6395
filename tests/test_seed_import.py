"""Precomputed seeds (issue 20): formats, conversion to p^K0 / m^K0, and every refusal."""
import numpy as np
import pytest
from pydensecrf.utils import unary_from_labels

from ssdd_core.io import ArtifactError, H5Writer, load_mask_png, read_h5, save_mask
from ssdd_core.seed_import import SeedFolder, import_seeds, load_seed, probs_from_labels


@pytest.fixture(scope="module")
def real(sample):
    """Five real sample ids: image size, image-level labels and the SBD mask (as a seed)."""
    ids = sample.read_ids("train_aug")[:5]
    masks = {i: sample.load_mask(i) for i in ids}
    labels = {i: sorted({int(c) for c in np.unique(m)} - {0, 255}) for i, m in masks.items()}
    return ids, masks, labels


def _size(masks):
    return lambda i: masks[i].shape


def test_png_seeds_import_as_given_with_a_dense_crf_unary(real, tmp_path):
    ids, masks, labels = real
    for i in ids:
        save_mask(tmp_path / "seeds" / f"{i}.png", masks[i])
    st = import_seeds(str(tmp_path / "seeds"), ids, labels, _size(masks), str(tmp_path / "k0.h5"),
                      str(tmp_path / "K0"), confidence=0.7)
    assert st == {"n": 5, "from_png": 5, "from_npy": 0, "from_h5": 0, "extra_class_images": 0,
                  "dropped_class_images": 0}
    for i in ids:
        np.testing.assert_array_equal(load_mask_png(tmp_path / "K0" / f"{i}.png"), masks[i])  # bit-identical
        d = read_h5(tmp_path / "k0.h5", i)
        assert d["labels"].tolist() == labels[i]
        # independent reference: pydensecrf's gt_prob unary, -log p, over the present labels
        idx = np.array([0, *labels[i]]).searchsorted(np.where(masks[i] == 255, 0, masks[i]))
        ref = unary_from_labels(idx, len(labels[i]) + 1, 0.7, zero_unsure=False)
        ref[:, (masks[i] == 255).ravel()] = -np.log(1.0 / (len(labels[i]) + 1))
        np.testing.assert_allclose(-np.log(d["prob"].reshape(len(labels[i]) + 1, -1)), ref, atol=2e-3)


def test_probability_seeds_from_npy_and_h5(real, tmp_path):
    ids, masks, labels = real
    rng = np.random.default_rng(0)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    probs = {}
    for k, i in enumerate(ids):
        p = rng.random((len(labels[i]) + 1, *masks[i].shape)).astype(np.float32) ** 4
        probs[i] = p / p.sum(0)
        if k < 2:
            np.save(seeds / f"{i}.npy", probs[i])
    with H5Writer(seeds / "shard.h5") as w:  # the layout of results/psa/*.h5 (float16)
        for i in ids[2:]:
            w.add(i, prob=probs[i], labels=np.array(labels[i]))
    st = import_seeds(str(seeds), ids, labels, _size(masks), str(tmp_path / "k0.h5"), str(tmp_path / "K0"))
    assert st["from_npy"] == 2 and st["from_h5"] == 3
    for i in ids:
        got = read_h5(tmp_path / "k0.h5", i)["prob"]
        np.testing.assert_allclose(got, probs[i], atol=1e-3)
        m = load_mask_png(tmp_path / "K0" / f"{i}.png")
        stored = read_h5(tmp_path / "k0.h5", i)["prob"] if i in ids[2:] else probs[i]
        np.testing.assert_array_equal(m, np.array([0, *labels[i]], np.uint8)[stored.argmax(0)])


@pytest.mark.parametrize("defect, message", [
    ("size", r"map size \(10, 12\) differs from its image.s"),
    ("negative", "negative probabilities"),
    ("nan", "NaN or inf"),
    ("sum", "do not sum to 1"),
    ("channels", "channels for background"),
    ("pickle", "not a plain NPY array"),
])
def test_bad_probability_files_name_the_file(real, tmp_path, defect, message):
    ids, masks, labels = real
    i = ids[0]
    n = len(labels[i]) + 1
    p = np.full((n, *masks[i].shape), 1.0 / n, dtype=np.float32)
    if defect == "size":
        p = np.full((n, 10, 12), 1.0 / n, dtype=np.float32)
    elif defect == "negative":
        p[0, 0, 0], p[1, 0, 0] = -0.1, p[1, 0, 0] + 0.1
    elif defect == "nan":
        p[0, 3, 3] = np.nan
    elif defect == "sum":
        p *= 1.2
    elif defect == "channels":
        p = np.full((n + 1, *masks[i].shape), 1.0 / (n + 1), dtype=np.float32)
    (tmp_path / "s").mkdir()
    if defect == "pickle":
        np.save(tmp_path / "s" / f"{i}.npy", np.array([{"1": p}], dtype=object), allow_pickle=True)
    else:
        np.save(tmp_path / "s" / f"{i}.npy", p)
    with pytest.raises(ArtifactError, match=message) as e:
        import_seeds(str(tmp_path / "s"), [i], labels, _size(masks), str(tmp_path / "k0.h5"), str(tmp_path / "K0"))
    assert f"{i}.npy" in str(e.value)
    assert not (tmp_path / "k0.h5").exists() and not (tmp_path / "K0").exists()  # nothing written


def test_missing_seed_and_bad_labels_are_refused(real, tmp_path):
    ids, masks, labels = real
    (tmp_path / "s").mkdir()
    save_mask(tmp_path / "s" / f"{ids[0]}.png", masks[ids[0]])
    with pytest.raises(ArtifactError, match=f"no seed for 1 of 2 training ids, e.g. {ids[1]}"):
        import_seeds(str(tmp_path / "s"), ids[:2], labels, _size(masks), str(tmp_path / "k0.h5"), str(tmp_path / "K0"))
    bad = masks[ids[0]].copy()
    bad[0, 0] = 21
    save_mask(tmp_path / "s" / f"{ids[0]}.png", bad)
    with pytest.raises(ArtifactError, match=r"labels outside 0..20 and 255: \[21\]"):
        load_seed(SeedFolder.scan(tmp_path / "s"), ids[0], labels[ids[0]], bad.shape, 0.7)
    assert not (tmp_path / "k0.h5").exists()


def test_a_class_the_image_labels_lack_is_kept_and_counted(real, tmp_path, caplog):
    ids, masks, labels = real
    i = ids[0]
    other = next(c for c in range(1, 21) if c not in labels[i])
    m = masks[i].copy()
    m[:5, :5] = other
    save_mask(tmp_path / "s" / f"{i}.png", m)
    st = import_seeds(str(tmp_path / "s"), [i], labels, _size(masks), str(tmp_path / "k0.h5"), str(tmp_path / "K0"))
    assert st["extra_class_images"] == 1 and f"classes [{other}]" in caplog.text
    np.testing.assert_array_equal(load_mask_png(tmp_path / "K0" / f"{i}.png"), m)
    assert other in read_h5(tmp_path / "k0.h5", i)["labels"].tolist()


def test_probs_from_labels_sums_to_one_and_refuses_bad_confidence():
    m = np.array([[0, 3, 255], [7, 7, 0]], dtype=np.uint8)
    p = probs_from_labels(m, [3, 7], 0.8)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-6)
    assert p[:, 0, 2].tolist() == pytest.approx([1 / 3] * 3)  # ignore: uniform
    assert p.argmax(0)[[0, 0, 1], [0, 1, 0]].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="must lie in"):
        probs_from_labels(m, [3, 7], 0.3)
    with pytest.raises(ValueError, match=r"not among the present labels"):
        probs_from_labels(m, [3], 0.8)


def test_unlabelled_seed_pixels_are_scored_as_ignore_with_their_coverage(real):
    """Issue 31: a PNG seed with 255 pixels (IRN's ``ir_label``) imports; scoring it then failed
    at the very end with "prediction out of range 0..20". Now 255 in a seed is left out of the
    confusion matrix and the coverage says how much was scored. Independent reference:
    sklearn's confusion matrix over the labelled pixels."""
    from sklearn.metrics import confusion_matrix

    from ssdd_core.metrics import ConfusionMatrix

    ids, masks, _ = real
    gt = masks[ids[0]]
    seed = gt.copy()
    seed[gt == 255] = 0
    seed[: gt.shape[0] // 3] = 255  # the top third unlabelled
    cm = ConfusionMatrix(pred_ignore=True)
    cm.update(seed, gt)
    keep = (gt != 255) & (seed != 255)
    ref = confusion_matrix(gt[keep], seed[keep], labels=list(range(21)))
    np.testing.assert_array_equal(cm.mat, ref)
    assert cm.compute()["coverage"] == pytest.approx(keep.sum() / (gt != 255).sum())
    with pytest.raises(ValueError, match="prediction out of range"):  # model predictions keep the check
        ConfusionMatrix().update(seed, gt)


def test_h5_seed_leaving_out_an_image_class_warns_with_a_count(real, tmp_path, caplog):
    """Issue 31: an HDF5 entry whose ``labels`` omit one of the image's classes dropped that class
    without a word. Now each such seed is logged and counted."""
    ids, masks, labels = real
    i = next(k for k in ids if len(labels[k]) >= 2)
    kept = labels[i][1:]
    p = np.full((len(kept) + 1, *masks[i].shape), 1.0 / (len(kept) + 1), np.float32)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    with H5Writer(seeds / "s.h5") as w:
        w.add(i, prob=p, labels=np.array(kept))
    with caplog.at_level("WARNING", logger="ssdd"):
        st = import_seeds(str(seeds), [i], labels, _size(masks), str(tmp_path / "k0.h5"), str(tmp_path / "K0"))
    assert st["dropped_class_images"] == 1
    assert f"leave out image-level classes [{labels[i][0]}]" in caplog.text
    assert "1 of 1 seeds leave out classes" in caplog.text


def test_wide_grayscale_png_is_range_checked_before_the_cast(tmp_path):
    """Issue 31: a 16-bit grayscale label PNG (PIL mode I / I;16) holding 256 was cast to uint8
    first (256 → 0, a wrong but valid label). Now the value is refused, naming the file."""
    from PIL import Image

    arr = np.zeros((8, 8), dtype=np.uint16)
    arr[2, 2] = 256
    path = tmp_path / "seed.png"
    Image.fromarray(arr).save(path)  # a 16-bit PNG
    assert Image.open(path).mode in ("I", "I;16")
    with pytest.raises(ArtifactError, match=r"seed.png: label values outside 0..255.*256"):
        load_mask_png(path)
    arr[2, 2] = 15
    Image.fromarray(arr).save(path)
    assert load_mask_png(path)[2, 2] == 15


def _smooth_maps(rng, n, shape):
    """n smooth positive maps (H, W) in [0, 1], each with max 1 (like a normalised CAM)."""
    import torch
    import torch.nn.functional as F

    low = torch.from_numpy(rng.random((1, n, 6, 6)).astype(np.float32))
    m = F.interpolate(low, shape, mode="bilinear", align_corners=False)[0].numpy()
    return m / m.reshape(n, -1).max(1)[:, None, None]


@pytest.mark.parametrize("fmt", ["psa-cam", "irn-cam", "ssdd-aff"])
def test_converter_reads_the_authors_pickled_dicts_only_when_trusted(real, tmp_path, fmt):
    """Issue 31: seeds saved by PSA (infer_cls.py: {k: cam}), IRN (make_cam.py: keys / cam /
    high_res, keys a torch tensor) and the SSDD authors (make_aff_labels.py out_aff: {0: bg,
    c: map}) convert into an HDF5 the importer reads, and the imported m^K0 is the label map the
    authors' own code takes from those files (PSA / SSDD: argmax of the 21-channel array they
    build; IRN: argmax after padding a constant background row, mapped through keys + 1).
    Without --trust-pickle nothing is read; the importer still refuses the pickles."""
    import torch

    from ssdd_core.convert_seeds import main

    ids, masks, labels = real
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    src.mkdir()
    ref = {}
    for i in ids[:3]:
        shape, keys = masks[i].shape, [c - 1 for c in labels[i]]  # 0-based foreground indices
        maps = _smooth_maps(rng, len(keys) + 1, shape)
        if fmt == "psa-cam":
            d = {k: maps[j + 1] for j, k in enumerate(keys)}
            full = np.zeros((21, *shape), np.float32)
            for k, v in d.items():
                full[k + 1] = v
            full[0] = (1 - full[1:].max(0)) ** 16
            ref[i] = full.argmax(0)
        elif fmt == "irn-cam":
            d = {"keys": torch.tensor(keys), "cam": torch.from_numpy(maps[1:, ::4, ::4].copy()), "high_res": maps[1:]}
            padded = np.pad(maps[1:], ((1, 0), (0, 0), (0, 0)), constant_values=0.15)
            ref[i] = np.pad(np.array(keys) + 1, (1, 0))[padded.argmax(0)]
        else:
            d = {0: maps[0] * 2.0, **{k + 1: maps[j + 1] * 2.0 for j, k in enumerate(keys)}}
            full = np.zeros((21, *shape), np.float32)
            for k, v in d.items():
                full[k] = v
            ref[i] = full.argmax(0)
        np.save(src / f"{i}.npy", d, allow_pickle=True)
    assert main(["--from", fmt, str(src), str(tmp_path / "out")]) == 2  # not trusted: refused
    assert not (tmp_path / "out" / "seeds.h5").exists()
    with pytest.raises(ArtifactError, match="pickled dicts are not read"):
        load_seed(SeedFolder.scan(src), ids[0], labels[ids[0]], masks[ids[0]].shape, 0.7)
    assert main(["--from", fmt, "--trust-pickle", str(src), str(tmp_path / "out")]) == 0
    st = import_seeds(str(tmp_path / "out"), ids[:3], labels, _size(masks), str(tmp_path / "k0.h5"),
                      str(tmp_path / "K0"))
    assert st["from_h5"] == 3 and st["dropped_class_images"] == 0 and st["extra_class_images"] == 0
    for i in ids[:3]:
        got = load_mask_png(tmp_path / "K0" / f"{i}.png")
        # float16 storage may flip near-ties; the authors' label map otherwise
        assert (got == ref[i]).mean() > 0.995, (fmt, i, (got == ref[i]).mean())
