"""Data layer on real VOC files, and the bad-input errors (issue: reliability)."""
import numpy as np
import pytest
from PIL import Image

from ssdd_core.data import DataError, VOCRoot, image_label_table
from ssdd_core.io import ArtifactError, load_mask_png, save_mask


def test_labels_from_training_masks(sample):
    ids = sample.read_ids("train_aug")
    assert len(ids) == 160
    labs = sample.image_labels(ids[0])
    m = sample.load_mask(ids[0])
    assert set(labs.tolist()) == {int(c) for c in np.unique(m) if 1 <= c <= 20}
    img = sample.load_image(ids[0])
    assert img.dtype == np.uint8 and img.shape[:2] == m.shape and img.flags.c_contiguous


def test_labels_from_xml_when_present(tmp_path, sample):
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    i = sample.read_ids("train_aug")[0]
    (root / "JPEGImages" / f"{i}.jpg").write_bytes(sample.image_path(i).read_bytes())
    (root / "Annotations" / f"{i}.xml").write_text(
        "<annotation><object><name>dog</name></object><object><name>person</name></object>"
        "<object><name>dog</name></object></annotation>")
    assert VOCRoot(root).image_labels(i).tolist() == [12, 15]


def test_palette_png_roundtrip(tmp_path):
    m = np.random.default_rng(0).integers(0, 21, (37, 53)).astype(np.uint8)
    m[0, 0] = 255
    save_mask(tmp_path / "m.png", m)
    assert Image.open(tmp_path / "m.png").mode == "P"
    np.testing.assert_array_equal(load_mask_png(tmp_path / "m.png"), m)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_missing_root_and_missing_jpeg(tmp_path, sample):
    with pytest.raises(DataError, match="does not exist"):
        VOCRoot(tmp_path / "nope")
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ids.txt").write_text("2007_999999\n")
    voc = VOCRoot(root)
    with pytest.raises(DataError, match="2007_999999.*does not exist"):
        voc.check_ids(voc.read_ids(str(root / "ids.txt")))


def test_truncated_jpeg(tmp_path, sample):
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    i = sample.read_ids("train_aug")[0]
    data = sample.image_path(i).read_bytes()
    (root / "JPEGImages" / f"{i}.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=f"{i}.jpg: cannot decode"):
        VOCRoot(root).load_image(i)


def test_mask_size_and_label_errors(tmp_path, sample):
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    voc = VOCRoot(root)
    save_mask(root / "SegmentationClassAug" / "a.png", np.zeros((10, 12), np.uint8))
    with pytest.raises(DataError, match="a.png: mask size 12x10 differs from its image 13x10"):
        voc.load_mask("a", expect_shape=(10, 13))
    bad = np.zeros((10, 12), np.uint8)
    bad[3, 3] = 42
    save_mask(root / "SegmentationClassAug" / "b.png", bad)
    with pytest.raises(DataError, match=r"b.png: mask has label\(s\) \[42\]"):
        voc.load_mask("b")


def test_empty_label_set_is_skipped_with_warning(tmp_path, caplog):
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    for name in ("bgonly", "cat"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
    save_mask(root / "SegmentationClassAug" / "bgonly.png", np.zeros((4, 4), np.uint8))
    m = np.zeros((4, 4), np.uint8)
    m[1, 1] = 8
    save_mask(root / "SegmentationClassAug" / "cat.png", m)
    with caplog.at_level("WARNING"):
        labels, skipped = image_label_table(VOCRoot(root), ["bgonly", "cat"])
    assert labels == {"cat": [8]} and skipped == ["bgonly"]
    assert "bgonly" in caplog.text


def test_truncated_checkpoint(tmp_path):
    import torch

    from ssdd_core.io import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(100)})
    raw = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match="t.pt: cannot load checkpoint"):
        load_checkpoint(tmp_path / "t.pt")
    with pytest.raises(ValueError, match="non-finite"):
        save_checkpoint(tmp_path / "n.pt", {"w": torch.tensor([float("nan")])})
    assert not (tmp_path / "n.pt").exists()


def test_h5_shard_missing_id(tmp_path):
    from ssdd_core.io import H5Writer, read_h5

    with H5Writer(tmp_path / "s.h5") as w:
        w.add("a", cam=np.ones((2, 3, 3), np.float32), labels=np.array([1, 2]))
    d = read_h5(tmp_path / "s.h5", "a")
    assert d["cam"].dtype == np.float32 and d["labels"].tolist() == [1, 2]
    with pytest.raises(ArtifactError, match=r"s.h5: no entry for id 'b'"):
        read_h5(tmp_path / "s.h5", "b")
    with pytest.raises(ArtifactError, match="HDF5 shard not found"):
        read_h5(tmp_path / "missing.h5", "a")


def test_h5_writer_is_atomic(tmp_path):
    from ssdd_core.io import H5Writer

    with H5Writer(tmp_path / "s.h5") as w:
        w.add("a", x=np.zeros((2, 2), np.float32))
    good = (tmp_path / "s.h5").read_bytes()
    with pytest.raises(RuntimeError):
        with H5Writer(tmp_path / "s.h5") as w:
            w.add("b", x=np.zeros((2, 2), np.float32))
            raise RuntimeError("killed")
    assert (tmp_path / "s.h5").read_bytes() == good  # the finished artifact is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]


def test_checkpoint_of_another_architecture(tmp_path):
    from ssdd_core.io import save_checkpoint
    from ssdd_core.models.backbones import build_backbone
    from ssdd_core.models.factory import load_weights
    from ssdd_core.models.nets import AffinityNet, Classifier

    cls = Classifier(build_backbone("efficientnet_lite0", 16, pretrained=False))
    save_checkpoint(tmp_path / "cls.pt", cls.state_dict())
    aff = AffinityNet(build_backbone("efficientnet_lite0", 16, pretrained=False))
    with pytest.raises(ArtifactError, match="cls.pt: checkpoint does not match the AffinityNet"):
        load_weights(aff, tmp_path / "cls.pt")


def test_backbone_weights_missing(tmp_path):
    from ssdd_core.models.backbones import build_backbone

    with pytest.raises(DataError, match="model.weights"):
        build_backbone("resnet50", 16, weights=None)
    with pytest.raises(DataError, match=r"weights file not found: .*nope.pth \(config key 'model.weights'\)"):
        build_backbone("resnet38", 8, weights=str(tmp_path / "nope.pth"))
    with pytest.raises(KeyError, match="unknown backbone"):
        build_backbone("vgg", 8)


def test_no_pickle_loading_in_code():
    """No code of the pipeline unpickles. The one exception is the stand-alone converter for
    the authors' pickled seed files (issue 31), which loads only behind ``--trust-pickle``
    (tests/test_seed_import.py checks the refusal)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for p in list((root / "ssdd_core").rglob("*.py")) + list((root / "workflow_scripts").glob("*.py")):
        text = p.read_text()
        if p.name == "convert_seeds.py":
            assert text.count("allow_pickle=True") == 1 and "if not trust_pickle:" in text, p
            continue
        assert "allow_pickle=True" not in text and "import pickle" not in text, p
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{p}: {m.group(0)}"


def test_label_table_checks_files_first(tmp_path, sample):
    """The first stage decodes every image and checks mask sizes (fails before training)."""
    root = tmp_path / "VOC"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    ids = sample.read_ids("train_aug")[:2]
    for i in ids:
        (root / "JPEGImages" / f"{i}.jpg").write_bytes(sample.image_path(i).read_bytes())
        (root / "SegmentationClassAug" / f"{i}.png").write_bytes(sample.mask_path(i).read_bytes())
    voc = VOCRoot(root)
    labels, _ = image_label_table(voc, ids)
    assert len(labels) == 2
    save_mask(root / "SegmentationClassAug" / f"{ids[1]}.png", np.ones((7, 9), np.uint8))
    with pytest.raises(DataError, match=f"{ids[1]}.png: mask size 9x7 differs from its image"):
        image_label_table(voc, ids)
    data = sample.image_path(ids[0]).read_bytes()
    (root / "JPEGImages" / f"{ids[0]}.jpg").write_bytes(data[:2000])
    with pytest.raises(DataError, match=f"{ids[0]}.jpg: cannot decode image"):
        image_label_table(voc, ids)


def test_cli_config_strings_are_coerced_by_schema():
    from pathlib import Path

    from ssdd_core.config import coerce_cli_strings

    schema = Path(__file__).resolve().parents[1] / "config" / "config.schema.yaml"
    cfg = {"crf": {"bi_w": "5", "iters": "10"}, "amp": "true", "model": {"weights": "null"},
           "cam": {"scales": ["1.0", "0.5"]}, "data": {"train_split": "2007"}, "shards": "two"}
    coerce_cli_strings(cfg, schema)
    assert cfg["crf"] == {"bi_w": 5.0, "iters": 10} and cfg["amp"] is True and cfg["model"]["weights"] is None
    assert cfg["cam"]["scales"] == [1.0, 0.5]
    assert cfg["data"]["train_split"] == "2007"  # a string stays a string
    assert cfg["shards"] == "two"  # not a number: left for validation to report


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    from ssdd_core.io import atomic_dir, write_json

    (tmp_path / ".000.abc.tmp").mkdir()
    (tmp_path / ".000.abc.tmp" / "x.png").write_bytes(b"half")
    (tmp_path / ".m.json.xyz.json.tmp").write_text("{")
    (tmp_path / ".0001.keep.tmp").mkdir()  # another output's temp: untouched
    with atomic_dir(tmp_path / "000") as d:
        (d / "a.png").write_bytes(b"done")
    write_json(tmp_path / "m.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".0001.keep.tmp", "000", "m.json"]


def test_artifacts_get_the_usual_permissions(tmp_path):
    import os

    from ssdd_core.io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "d") as d:
            save_mask(d / "m.png", np.zeros((2, 2), np.uint8))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d" / "m.png").stat().st_mode & 0o777 == 0o644


def test_color_jitter_draws_as_torchvision_and_leaves_the_global_rng(sample):
    import random

    import torch
    from torchvision.transforms import ColorJitter

    from ssdd_core.data import color_jitter

    img = sample.load_image(sample.read_ids("train_aug")[0])
    for k in range(4):
        seed = random.Random(k).randrange(2**31)
        torch.manual_seed(seed)  # the reference draws from the global RNG
        ref = np.asarray(ColorJitter(0.3, 0.3, 0.3)(Image.fromarray(img)))
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        out = color_jitter(img, random.Random(k), 0.3)
        assert torch.equal(torch.random.get_rng_state(), before)
        assert out.dtype == np.uint8 and np.array_equal(out, ref)
    assert not np.array_equal(color_jitter(img, random.Random(0)), color_jitter(img, random.Random(1)))


def test_seg_crops_keep_image_and_masks_aligned(tmp_path, sample):
    """A mask made from the image itself (bright red pixels) must still match the image after
    the random resize, flip and crop, at the crop and at the DD resolution; a mask of the
    mirrored image must not."""
    import torch

    from ssdd_core.datasets import SegDataset
    from ssdd_core.io import save_mask

    ids = sample.read_ids("train_aug")[:6]
    paths, mirrored = {}, {}
    for i in ids:
        img = sample.load_image(i).astype(np.int32)
        m = ((img[..., 0] > img[..., 1] + 20) & (img[..., 0] > 100)).astype(np.uint8)
        paths[i], mirrored[i] = tmp_path / f"{i}.png", tmp_path / f"{i}_m.png"
        save_mask(paths[i], m)
        save_mask(mirrored[i], np.ascontiguousarray(m[:, ::-1]))
    ds = SegDataset(sample, ids, {i: [1] for i in ids}, 96, seed=3, jitter=0.0,
                    masks={"M": paths, "F": mirrored}, resize_range=(1.0, 1.7), dd_stride=4)
    agree, agree_mirrored = [], []
    for k in range(len(ids)):
        for epoch in range(3):
            ds.set_epoch(epoch)
            it = ds[k]
            im = it["img_dd"].numpy().astype(np.int32)
            red = (im[..., 0] > im[..., 1] + 20) & (im[..., 0] > 100)
            m, f = it["M"].numpy(), it["F"].numpy()
            ok = m != 255
            assert np.array_equal(ok, f != 255)
            if red[ok].any() and (~red[ok]).any():
                agree.append((red == (m == 1))[ok].mean())
                agree_mirrored.append((red == (f == 1))[ok].mean())
            assert torch.equal(ds[k]["img"], it["img"])  # draws are per (seed, epoch, index)
    assert len(agree) >= 6
    print(f"agreement {np.mean(agree):.3f}, with the mirrored mask {np.mean(agree_mirrored):.3f}")
    assert np.mean(agree) > 0.93, agree
    assert np.mean(agree) - np.mean(agree_mirrored) > 0.05, (agree, agree_mirrored)


def test_run_suffix_round_trip():
    from ssdd_core.config import rep_suffix, split_rep

    assert [rep_suffix(r) for r in range(3)] == ["", "-r1", "-r2"]
    assert split_rep("seg_K0-r2") == ("seg_K0", 2) and split_rep("dynamic") == ("dynamic", 0)
    assert split_rep("-r11") == ("", 11) and split_rep("") == ("", 0) and split_rep("_baseline-r1") == ("_baseline", 1)
    assert split_rep("seg_K0-r0") == ("seg_K0-r0", 0)  # run 0 has no suffix: "-r0" is not one
    for base in ("dynamic", "seg_D0", "_seg_A0"):
        for r in range(4):
            assert split_rep(base + rep_suffix(r)) == (base, r)
