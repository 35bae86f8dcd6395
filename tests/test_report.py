"""The ablation table: mean ± std over runs, paired gains, refusal of incomparable runs."""
import json
import statistics

import pytest

from ssdd_core import report


def _score(path, miou, iou, split="val", n=445):
    path.write_text(json.dumps({"miou": miou, "iou": iou, "split": split, "n_images": n}))
    return str(path)


def _rows(tmp_path, table, **kw):
    """{row: [mIoU per run]} → score JSONs; class 1 gets mIoU + 0.1, classes 2.. are absent."""
    return {name: [_score(tmp_path / f"{name}{r}.json", m, [m - 0.1, m + 0.1] + [None] * 19, **kw)
                   for r, m in enumerate(runs)] for name, runs in table.items()}


def test_mean_std_and_paired_gain_against_statistics(tmp_path):
    table = {"K0": [0.30, 0.34, 0.32], "A0": [0.29, 0.31, 0.36], "D0": [0.33, 0.36, 0.35], "SSDD": [0.35, 0.37, 0.36]}
    out = report.ablation_table(_rows(tmp_path, table), tmp_path / "a.md", tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text())["rows"] == out["rows"]
    for name, runs in table.items():
        r = out["rows"][name]
        assert r["miou_mean"] == pytest.approx(statistics.mean(runs))
        assert r["miou_std"] == pytest.approx(statistics.stdev(runs))  # sample std (n - 1)
        gains = [a - b for a, b in zip(runs, table["K0"])]
        assert r["gain_mean"] == pytest.approx(statistics.mean(gains))
        assert r["gain_std"] == pytest.approx(statistics.stdev(gains))
        assert r["iou_mean"][1] == pytest.approx(statistics.mean(runs) + 0.1) and r["iou_mean"][2] is None
    # SSDD gains +0.05, +0.03, +0.04: larger than their std; A0's -0.01, -0.03, +0.04 are not
    assert out["rows"]["SSDD"]["gain_within_std"] is False
    assert out["rows"]["A0"]["gain_within_std"] is True
    md = (tmp_path / "a.md").read_text()
    assert ("| SSDD | SSDD (static + dynamic region refinement) | 36.0 ± 1.0 | +4.0 ± 1.0 | larger than its std |"
            in md)
    assert "within run-to-run noise" in md
    assert md.rstrip().endswith("supplement Table 7, reproduced column (seed 003) |")
    assert "| aeroplane | 42.0 | 42.0 | 44.7 | 46.0 | +4.0 |" in md  # per class: mean IoU, SSDD − K0
    # the animal classes are absent from this hand-made table (no IoU): none scored
    assert "cat –, cow –, dog –, horse –, sheep –; 0 of 0 positive." in md


def test_animal_class_gains(tmp_path):
    """Cat (class 8) gains +0.2, dog (12) loses 0.1; cow, horse, sheep have no IoU."""
    def row(name, cat, dog):
        iou = [0.5] + [None] * 20
        iou[8], iou[12] = cat, dog
        return [_score(tmp_path / f"{name}.json", 0.4, iou)]

    out = report.ablation_table({"K0": row("k", 0.3, 0.4), "SSDD": row("s", 0.5, 0.3)}, tmp_path / "a.md",
                                tmp_path / "a.json")
    assert out["animal_gains"]["cat"] == pytest.approx(0.2) and out["animal_gains"]["dog"] == pytest.approx(-0.1)
    assert "cat +20.0, cow –, dog -10.0, horse –, sheep –; 1 of 2 positive." in (tmp_path / "a.md").read_text()


def test_one_run_says_noise_is_unknown(tmp_path):
    out = report.ablation_table(_rows(tmp_path, {"K0": [0.3], "SSDD": [0.31]}), tmp_path / "a.md", tmp_path / "a.json")
    assert out["rows"]["SSDD"]["miou_std"] is None and out["rows"]["SSDD"]["gain_within_std"] is None
    assert "1 run: noise unknown" in (tmp_path / "a.md").read_text()


def test_incomparable_runs_are_refused(tmp_path):
    rows = _rows(tmp_path, {"K0": [0.3, 0.31], "SSDD": [0.32]})
    with pytest.raises(ValueError, match="same number of runs"):
        report.ablation_table(rows, tmp_path / "a.md", tmp_path / "a.json")
    rows = {"K0": [_score(tmp_path / "k.json", 0.3, [0.3] * 21)],
            "SSDD": [_score(tmp_path / "s.json", 0.3, [0.3] * 21, split="train")]}
    with pytest.raises(ValueError, match="different eval sets"):
        report.ablation_table(rows, tmp_path / "a.md", tmp_path / "a.json")
    assert not (tmp_path / "a.md").exists()


@pytest.mark.parametrize("configfile", ["config/tiny.yaml", "config/voc2012_mini.yaml", "config/paper.yaml", None])
def test_static_only_rows_train_like_the_dynamic_model(configfile):
    """A fair ablation: the K0 / A0 / D0 rows get the dynamic stage's epochs, optimiser and schedule."""
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "tools"))
    from config_files import merged_config

    cfg = merged_config([repo / configfile] if configfile else [])
    for k in ("epochs", "batch", "lr", "weight_decay", "crop", "resize_range"):
        assert cfg["baseline"][k] == cfg["dynamic"][k], (configfile, k)


@pytest.mark.parametrize("configfile", [None, "config/voc2012_mini.yaml", "config/tiny.yaml", "config/paper.yaml",
                                        "config/gpu_mini.yaml"])
def test_shipped_configs_train_the_rows_like_the_dynamic_model(configfile):
    """Issue 18: the static-only rows (`baseline`) and SSDD's dynamic model get the same start
    point, epochs, optimiser and schedule in every shipped config; a difference is named."""
    import copy

    import yaml
    from conftest import REPO
    from snakemake.utils import update_config

    from ssdd_core.config import schedule_differences

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if configfile:
        update_config(cfg, yaml.safe_load((REPO / configfile).read_text()))
    assert schedule_differences(cfg) == []
    other = copy.deepcopy(cfg)
    other["baseline"]["lr"] *= 2
    other["dynamic"]["init"] = "static" if cfg["dynamic"]["init"] == "classifier" else "classifier"
    diff = schedule_differences(other)
    assert len(diff) == 2 and diff[0].startswith("init: baseline") and diff[1].startswith("lr: baseline")


def test_run_summary_lists_the_scores_just_written(tmp_path):
    """Issue 31: the end-of-run summary (Snakefile onsuccess) shows the scores written by this run
    (not older files) and where the tables are."""
    import json
    import os

    from ssdd_core.report import run_summary

    res = tmp_path / "results"
    res.mkdir()
    (res / "miou.json").write_text(json.dumps({"miou": 0.254, "n_images": 669, "split": "val", "model": "dynamic"}))
    (res / "seeds.json").write_text(json.dumps({"summary": {"CAM": 0.31, "K0": 0.4, "A0": 0.39, "D0": 0.42}}))
    (res / "miou_baseline.json").write_text(json.dumps({"miou": 0.2, "n_images": 669, "model": "seg_K0"}))
    os.utime(res / "miou_baseline.json", (1, 1))  # from an earlier run
    (res / "table1.md").write_text("x")
    text = run_summary(str(res), since=1000)
    assert "mIoU 25.4 over 669 val images (model dynamic)" in text
    assert "CAM 31.0, K0 40.0, A0 39.0, D0 42.0" in text
    assert "miou_baseline" not in text and "results/table1.md" in text and "ablation.md" not in text
    assert run_summary(str(res), since=4e9) == "ssdd-pipeline: no score was written in this run."


def test_dynamic_runs_section_counts_the_runs_that_meet_the_target(tmp_path):
    """Issue 30's m^D2 ≥ m^D0 + 1 per run, from hand-made diagnostics: run 0 ends +1.5 (met),
    run 1 ends +0.5 (missed, though it was +2.0 at epoch 1); the curve starts at epoch 0."""
    def diag(name, gaps):
        epochs = [{"epoch": e, "miou": {"D0": 0.40, "K1": 0.35, "D2": 0.40 + g}, "a1_right": 0.5, "k1_right": 0.4}
                  for e, g in enumerate(gaps)]
        (tmp_path / name).write_text(json.dumps({"epochs": epochs}))
        return str(tmp_path / name)

    diags = {"SSDD": [diag("d0.json", [0.0, 0.01, 0.015]), diag("d1.json", [0.0, 0.02, 0.005])]}
    out = report.ablation_table(_rows(tmp_path, {"K0": [0.30, 0.31], "SSDD": [0.32, 0.33]}), tmp_path / "a.md",
                                tmp_path / "a.json", diagnostics=diags)
    d = out["dynamic_diagnostics"]["rows"]["SSDD"]
    assert [r["meets_target"] for r in d["runs"]] == [True, False] and d["runs_meeting_target"] == 1
    assert d["runs"][1]["d2_minus_d0_per_epoch"] == pytest.approx([0.0, 0.02, 0.005])
    md = (tmp_path / "a.md").read_text()
    assert "| SSDD | 0 | 40.0 | 35.0 | 41.5 | +1.5 | 50% / 40% | +0.0 +1.0 +1.5 |" in md, md
    assert "| SSDD | target met | | | | 1 of 2 runs | | |" in md
    with pytest.raises(Exception, match="missing.json"):
        report.ablation_table(_rows(tmp_path, {"K0": [0.3], "SSDD": [0.31]}), tmp_path / "b.md", tmp_path / "b.json",
                              diagnostics={"SSDD": [str(tmp_path / "missing.json")]})
    assert not (tmp_path / "b.md").exists()


def test_significance_verdict_needs_the_runs_too():
    """The image bootstrap holds the models fixed: "images and runs" needs the runs' p < 0.05 too."""
    sig, not_sig = {"significant": True}, {"significant": False}
    assert report.significance_verdict(None, 0.01, 3) == "no CI"
    assert report.significance_verdict(not_sig, 0.001, 3) == "difference not shown"
    one = "significant at 5% over images; 1 run, training noise not covered"
    assert report.significance_verdict(sig, None, 1) == one
    assert report.significance_verdict(sig, 0.01, 3) == "significant at 5% (images and runs)"
    assert report.significance_verdict(sig, 0.2, 3) == "significant at 5% over images, not over runs (p = 0.200)"


def _confusions(path, per_image):
    """(N, 21, 21) per-image confusion matrices → an HDF5 like the score rule's (ids 0..N-1)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f.create_dataset("ids", data=np.array([f"{i:04d}".encode() for i in range(len(per_image))]))
        f.create_dataset("confusion", data=np.stack(per_image).astype(np.int32))
    return str(path)


def test_ablation_table_verdicts_from_images_and_runs(tmp_path):
    """Two runs of K0 and SSDD on 30 images (class 1 on each image, 100 background pixels right).
    Run 0: SSDD finds 30 of 40 class-1 pixels where K0 finds 10, on every image. Run 1: SSDD finds
    9 where K0 finds 10. The image bootstrap of the mean over runs excludes 0 (+big in run 0), the
    paired t-test over the two runs does not (one run gains, one loses): the table must say so.
    With run 1 also like run 0, both agree and the table says "images and runs"."""
    import numpy as np

    from ssdd_core import stats

    def img(right):
        m = np.zeros((21, 21), np.int64)
        m[0, 0], m[1, 1], m[1, 0] = 100, right, 40 - right
        return m

    def rows(k0_hits, ssdd_hits, tag):
        out, conf = {}, {}
        for name, hits in (("K0", k0_hits), ("SSDD", ssdd_hits)):
            out[name], conf[name] = [], []
            for r, h in enumerate(hits):
                per = [img(h)] * 30
                iou = [None] * 21
                cm = np.sum(per, 0)
                iou[0], iou[1] = (float(cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c])) for c in (0, 1))
                out[name].append(_score(tmp_path / f"{tag}{name}{r}.json", float(stats.miou_from_confusion(cm)), iou,
                                        n=30))
                conf[name].append(_confusions(tmp_path / f"{tag}{name}{r}.h5", per))
        return out, conf

    mixed, conf = rows([10, 10], [30, 9], "m")
    out = report.ablation_table(mixed, tmp_path / "m.md", tmp_path / "m.json", confusions=conf, n_boot=500)
    (c,) = out["comparisons"]
    assert c["row"] == "SSDD" and c["bootstrap"]["significant"] and c["p"] > 0.05
    assert c["verdict"].startswith("significant at 5% over images, not over runs (p = ")
    assert f"| {c['verdict']} |" in (tmp_path / "m.md").read_text()
    assert json.loads((tmp_path / "m.json").read_text())["comparisons"][0]["verdict"] == c["verdict"]

    both, conf = rows([10, 10], [30, 30], "b")
    out = report.ablation_table(both, tmp_path / "b.md", tmp_path / "b.json", confusions=conf, n_boot=500)
    assert out["comparisons"][0]["verdict"] == "significant at 5% (images and runs)"
