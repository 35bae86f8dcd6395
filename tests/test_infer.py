"""Test-time inference (DESIGN §3.7) on real sample images."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ssdd_core import infer, stages
from ssdd_core.crf import CRFParams, dense_crf, dense_crf_resized
from ssdd_core.data import VOCRoot
from ssdd_core.io import load_mask_png, save_checkpoint
from ssdd_core.models import factory

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "voc12_sample"


def test_infer_with_crf_worker_matches_sequential_predict(tmp_path):
    """stages.infer overlaps the CRF (worker process) with the network; the masks must equal
    the plain one-image-at-a-time :func:`infer.predict`."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["eval"] = {"root": str(SAMPLE), "gt_dir": "SegmentationClass", "split": "val"}
    cfg["infer"].update(base_size=128, scales=[0.75, 1.0], flip=True, crf=True, crf_min_prob=0.05, crf_scale=0.5)
    torch.manual_seed(0)
    model = factory.build(cfg, "seg", cfg["infer"]["output_stride"])
    torch.nn.init.normal_(model.heads["base"].conv2.weight, std=0.5)  # confident, varied outputs
    save_checkpoint(tmp_path / "m.pt", model.state_dict())
    voc = VOCRoot(SAMPLE, "SegmentationClass")
    ids = voc.read_ids("val")[:3]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    res = stages.infer(cfg, "seg", str(tmp_path / "m.pt"), str(tmp_path / "ids.txt"), str(tmp_path / "pred"),
                       threads=2)
    assert res["n"] == 3
    model.eval()
    for i in ids:
        img = voc.load_image(i)
        ref = infer.predict(model, img, "base", infer.InferSettings.from_config(cfg["infer"]),
                            CRFParams.from_config(cfg["crf"]))
        got = load_mask_png(tmp_path / "pred" / f"{i}.png")
        assert got.shape == img.shape[:2]
        np.testing.assert_array_equal(got, ref)
        assert len(np.unique(got)) >= 2  # a real, non-constant prediction to compare


def test_infer_uses_its_own_crf_params_over_the_crf_block(tmp_path, monkeypatch):
    """``infer.crf_params`` (the ``crf`` block also makes m^A0 and the in-loop CRF) reaches the
    test-time CRF of stages.infer: each image's CRF runs with the merged settings, and the masks
    are predict()'s with them; null, unknown keys and a disabled CRF behave as documented."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["eval"] = {"root": str(SAMPLE), "gt_dir": "SegmentationClass", "split": "val"}
    cfg["infer"].update(base_size=128, scales=[1.0], flip=False, crf=True, crf_min_prob=0.0, crf_scale=1.0)
    assert infer.inference_crf_params(cfg) == CRFParams.from_config(cfg["crf"])  # null: the crf block
    cfg["infer"]["crf_params"] = {"bi_w": 60.0, "bi_srgb": 40.0}
    merged = infer.inference_crf_params(cfg)
    assert (merged.bi_w, merged.bi_srgb, merged.bi_sxy, merged.iters) == (
        60.0, 40.0, cfg["crf"]["bi_sxy"], cfg["crf"]["iters"])
    torch.manual_seed(0)
    model = factory.build(cfg, "seg", cfg["infer"]["output_stride"])
    torch.nn.init.normal_(model.heads["base"].conv2.weight, std=0.5)
    save_checkpoint(tmp_path / "m.pt", model.state_dict())
    voc = VOCRoot(SAMPLE, "SegmentationClass")
    ids = voc.read_ids("val")[:2]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    used, predict = [], infer.predict

    def recording_predict(model, img, head, settings, crf, device="cpu"):
        used.append(crf)
        return predict(model, img, head, settings, crf, device)

    monkeypatch.setattr(infer, "predict", recording_predict)
    stages.infer(cfg, "seg", str(tmp_path / "m.pt"), str(tmp_path / "ids.txt"), str(tmp_path / "pred"), threads=1)
    assert used == [merged] * len(ids)
    model.eval()
    settings = infer.InferSettings.from_config(cfg["infer"])
    for i in ids:
        np.testing.assert_array_equal(load_mask_png(tmp_path / "pred" / f"{i}.png"),
                                      predict(model, voc.load_image(i), "base", settings, merged))
    with pytest.raises(KeyError, match="bi_wt"):
        infer.inference_crf_params({**cfg, "infer": {**cfg["infer"], "crf_params": {"bi_wt": 3}}})
    assert infer.inference_crf_params({**cfg, "infer": {**cfg["infer"], "crf": False}}) is None


def test_multiscale_probs_is_the_mean_over_its_scales():
    """infer_crf_sweep.py --scale-sets runs each scale once and averages the per-scale results:
    that must be what multiscale_probs computes over the set (equal weight per scale and flip)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    torch.manual_seed(0)
    model = factory.build(cfg, "seg", cfg["infer"]["output_stride"]).eval()
    torch.nn.init.normal_(model.heads["base"].conv2.weight, std=0.5)
    img = VOCRoot(SAMPLE, "SegmentationClass").load_image(VOCRoot(SAMPLE, "SegmentationClass").read_ids("val")[0])
    scales = (0.75, 1.0, 1.25)
    whole = infer.multiscale_probs(model, img, "base", 96, scales, flip=True)
    parts = np.mean([infer.multiscale_probs(model, img, "base", 96, (s,), flip=True) for s in scales], axis=0)
    np.testing.assert_allclose(parts, whole, atol=1e-6)
    assert whole.max(0).min() < 0.9  # scales disagree somewhere: the averaging is exercised


def test_crf_labels_threshold():
    p = np.zeros((21, 2, 2), np.float32)
    p[0] = 0.9
    p[5, 0, 0] = 0.1
    p[7] = 0.001
    assert infer.crf_labels(p, 0.05).tolist() == [0, 5]
    assert infer.crf_labels(p, 0.0).tolist() == list(range(21))
    assert infer.crf_labels(p, 0.95).tolist() == list(range(21))  # nothing reaches it: keep all


def test_crf_at_half_size_agrees_with_full_size():
    """infer.crf_scale: the CRF run at half size (kernels scaled) and upsampled gives nearly
    the labels of the full-size CRF on a real image, differs from its input, and is a valid
    probability map."""
    voc = VOCRoot(SAMPLE, "SegmentationClass")
    i = voc.read_ids("val")[0]
    img = voc.load_image(i)
    gt = voc.load_mask(i)
    rng = np.random.default_rng(0)
    labels = [c for c in np.unique(gt) if c != 255]
    # A blurred, noisy version of the GT as the CRF's input: the CRF has edges to snap to.
    onehot = np.stack([(gt == c).astype(np.float32) for c in labels])
    t = torch.nn.functional.avg_pool2d(torch.from_numpy(onehot)[None], 15, 1, 7, count_include_pad=False)[0].numpy()
    p = 0.6 * t + 0.4 * rng.random(t.shape, dtype=np.float32)
    p /= p.sum(0, keepdims=True)
    params = CRFParams()
    full = dense_crf(img, p, params)
    half = dense_crf_resized(img, p, params, 0.5)
    assert half.shape == p.shape and half.dtype == np.float32
    np.testing.assert_allclose(half.sum(0), 1.0, atol=1e-4)
    assert (half.argmax(0) == full.argmax(0)).mean() > 0.95
    assert (half.argmax(0) != p.argmax(0)).mean() > 0.01
    np.testing.assert_array_equal(dense_crf_resized(img, p, params, 1.0), full)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="scale"):
            dense_crf_resized(img, p, params, bad)
