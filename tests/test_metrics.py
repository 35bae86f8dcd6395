"""mIoU against scikit-learn on real VOC masks, plus hand-made edge cases (DESIGN §3.8)."""
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from ssdd_core.metrics import ConfusionMatrix


def reference_scores(preds, gts):
    t = np.concatenate([g.ravel() for g in gts]).astype(np.int64)
    p = np.concatenate([q.ravel() for q in preds]).astype(np.int64)
    keep = t != 255
    cm = confusion_matrix(t[keep], p[keep], labels=list(range(21)))
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    in_gt = cm.sum(1) > 0
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return cm, iou, float(np.mean(iou[in_gt]))


def test_miou_matches_sklearn_on_real_masks(sample):
    # Real disagreement: the official fine masks (with 255 borders) and the SBD "aug" masks of
    # the same ids. The shipped sample (always in the clone, ../shared or not) has both for
    # the train_aug ids that also have an official mask (73 of its 160).
    from ssdd_core.io import load_mask_png

    both = [i for i in sample.read_ids("train_aug")
            if sample.mask_path(i).exists() and (sample.root / "SegmentationClass" / f"{i}.png").exists()]
    assert len(both) >= 40, f"the sample should have 40 ids with both annotations, has {len(both)}"
    ids = both[:40]
    gts, preds = [], []
    for k, i in enumerate(ids):
        gt = load_mask_png(sample.root / "SegmentationClass" / f"{i}.png")
        aug = load_mask_png(sample.mask_path(i))
        aug = np.where(aug == 255, 0, aug)
        if k % 3 == 0:  # make the prediction imperfect in a known way
            aug = np.roll(aug, 15, axis=1)
        gts.append(gt)
        preds.append(aug)
    m = ConfusionMatrix()
    for p, g in zip(preds, gts):
        m.update(p, g)
    res = m.compute()
    cm, iou, miou = reference_scores(preds, gts)
    np.testing.assert_array_equal(m.mat, cm)
    for c in range(21):
        if np.isnan(iou[c]):
            assert res["iou"][c] is None
        else:
            assert abs(res["iou"][c] - iou[c]) < 1e-6
    assert abs(res["miou"] - miou) < 1e-6
    assert 0.3 < res["miou"] < 1.0  # real masks of the same images mostly agree, not perfectly
    assert res["n_images"] == 40


def test_ignore_absent_and_prediction_only_classes():
    gt = np.array([[0, 0, 255, 1], [1, 1, 255, 0]], np.uint8)
    pr = np.array([[0, 3, 7, 1], [1, 0, 9, 0]], np.uint8)  # 7, 9 only under 255: ignored
    m = ConfusionMatrix()
    m.update(pr, gt)
    r = m.compute()
    assert r["iou"][0] == pytest.approx(2 / 4)  # tp 2, fp 1 (gt1→0), fn 1 (gt0→3)
    assert r["iou"][1] == pytest.approx(2 / 3)
    assert r["iou"][3] == 0.0  # only in prediction → IoU 0
    assert r["iou"][7] is None and r["iou"][9] is None  # absent from GT and (counted) prediction
    assert r["miou"] == pytest.approx((0.5 + 2 / 3) / 2)  # over classes present in GT
    assert r["miou_all21"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert r["pixel_accuracy"] == pytest.approx(4 / 6)


def test_shape_and_range_errors():
    m = ConfusionMatrix()
    with pytest.raises(ValueError, match="shape"):
        m.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="GT label"):
        m.update(np.zeros((2, 2)), np.full((2, 2), 30))


def test_foreground_share_of_predictions_and_gt():
    """Shares of the scored pixels (GT 255 left out) called foreground by the predictions and by
    the GT; (None, None) before any pixel."""
    cm = ConfusionMatrix()
    assert cm.foreground_share() == (None, None)
    gt = np.array([[0, 0, 0, 5, 5, 255]])
    pred = np.array([[0, 7, 7, 5, 0, 9]])
    cm.update(pred, gt)  # scored: 5 pixels; predicted fg 3, GT fg 2
    assert cm.foreground_share() == (pytest.approx(3 / 5), pytest.approx(2 / 5))
