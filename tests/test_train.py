"""Training loop: resume, NaN guard, determinism; SSDD training behaviour on real images."""
import math

import numpy as np
import pytest
import torch

from ssdd_core.refinement import make_static_step, seg_loss
from ssdd_core.ssdd import Biases
from ssdd_core.train import NonFiniteLoss, fit


class ToyDS(torch.utils.data.Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x.sum(1, keepdim=True) > 0).float()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}

    def set_epoch(self, e):
        pass


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 1)

    def new_parameters(self):
        return list(self.b.parameters())

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def toy_step(model, batch, device):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["x"]), batch["y"])
    return loss, {"bce": float(loss)}


def run(tmp_path, epochs, step=toy_step, **kw):
    torch.manual_seed(0)
    m = Toy()
    res = fit(m, ToyDS(), step, str(tmp_path / "m.pt"), epochs=epochs, batch_size=2, lr=0.1, weight_decay=0,
              schedule="cosine", device=torch.device("cpu"), seed=1, resume_key="k", **kw)
    return m, res


def test_resume_restores_optimizer_and_epoch(tmp_path):
    full, res_full = run(tmp_path / "a", 3)
    # interrupted run: killed at the first step of epoch 3, then rerun
    state_src = tmp_path / "c"
    state_src.mkdir()

    class Kill(Exception):
        pass

    calls = {"n": 0}

    def dying_step(model, batch, device):
        calls["n"] += 1
        if calls["n"] == 9:  # first step of epoch 3
            raise Kill()
        return toy_step(model, batch, device)

    with pytest.raises(Kill):
        run(state_src, 3, step=dying_step)
    st = torch.load(state_src / "m.pt.resume", weights_only=True)
    assert st["epoch"] == 2 and st["step"] == 8 and "optimizer" in st and st["optimizer"]["state"]
    resumed, res = run(state_src, 3)
    assert res["steps"] == res_full["steps"] == 12
    for p, q in zip(resumed.parameters(), full.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert not (state_src / "m.pt.resume").exists()


def test_nan_loss_stops_or_skips(tmp_path):
    def nan_step(model, batch, device):
        loss, parts = toy_step(model, batch, device)
        return loss * float("nan"), {"bce": float("nan")}

    with pytest.raises(NonFiniteLoss, match=r"epoch 1, step 1: term\(s\) \['bce'\]"):
        run(tmp_path, 1, step=nan_step)
    assert not (tmp_path / "m.pt").exists()
    _, res = run(tmp_path, 1, step=nan_step, nan_policy="skip")
    assert res["skipped_batches"] == 4


def test_training_is_deterministic(tmp_path):
    _, a = run(tmp_path / "a", 2)
    _, b = run(tmp_path / "b", 2)
    assert a["history"] == b["history"]


@pytest.mark.parametrize("mult", [1.0, 10.0])
def test_head_lr_mult_of_a_training_block_sets_the_new_layers_lr(tmp_path, mult):
    """Issue 30's lever for an ``init: static`` start: a block's ``head_lr_mult`` is the heads' /
    DD-Nets' (``new_parameters``) learning rate over ``lr``, through StageContext.fit into the
    optimiser; the encoder keeps ``lr``. Observed on the parameter change of one SGD step from
    zero momentum: Δw = −lr_group · grad."""
    from ssdd_core.stages.context import StageContext

    torch.manual_seed(0)
    m = Toy()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    grads = {}

    def step(model, batch, device):
        loss, parts = toy_step(model, batch, device)
        g = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
        grads.update({n: v.clone() for (n, _), v in zip(model.named_parameters(), g)})
        return loss, parts

    ctx = StageContext({"seed": 0, "device": "cpu", "nan_policy": "error", "amp": False}, 1)
    block = {"epochs": 1, "batch": 8, "lr": 0.1, "weight_decay": 0.0, "head_lr_mult": mult, "max_steps": 1}
    ctx.fit(m, ToyDS(), step, str(tmp_path / "m.pt"), block, "constant", ["k"])
    for n, p in m.named_parameters():
        lr = 0.1 * (mult if n.startswith("b.") else 1.0)
        assert torch.allclose(before[n] - p.detach(), lr * grads[n], atol=1e-6), n


def test_seg_loss_balanced_vs_plain():
    logits = torch.zeros(1, 21, 2, 2)
    logits[0, 1, 0, 0] = 5.0
    mask = torch.tensor([[[1, 0], [0, 255]]])
    ce = torch.nn.functional.cross_entropy(logits, mask, ignore_index=255, reduction="none")[0]
    assert torch.allclose(seg_loss(logits, mask, "plain"), ce[mask[0] != 255].mean())
    assert torch.allclose(seg_loss(logits, mask, "balanced"), (ce[0, 0] + ce[mask[0] == 0].mean()) / 2)


@pytest.fixture(scope="module")
def seg_batch(sample):
    """A real batch: images with a knowledge mask from the GT and an advice mask that is the
    GT with one class eroded (so K and A differ in a structured, learnable way)."""
    from ssdd_core.data import normalize, resize_image, resize_mask
    ids = sample.read_ids("train_aug")[:4]
    xs, mk, ma, y = [], [], [], []
    for i in ids:
        img = resize_image(sample.load_image(i), (96, 96))
        gt = resize_mask(sample.load_mask(i), (24, 24)).astype(np.int64)
        gt[gt == 255] = 0
        adv = gt.copy()
        adv[:, ::2][adv[:, ::2] > 0] = 0  # advice drops every other column of foreground
        labels = sample.image_labels(i).tolist()
        v = torch.zeros(21)
        v[[0] + labels] = 1
        xs.append(torch.from_numpy(normalize(img)))
        mk.append(torch.from_numpy(gt))
        ma.append(torch.from_numpy(adv))
        y.append(v)
    return {"img": torch.stack(xs), "K0": torch.stack(mk), "A0": torch.stack(ma), "y21": torch.stack(y)}


def test_static_training_reduces_difference_loss(seg_batch):
    from ssdd_core.models.backbones import build_backbone
    from ssdd_core.models.nets import SegModel
    from ssdd_core.train import make_optimizer

    torch.manual_seed(0)
    model = SegModel(build_backbone("efficientnet_lite0", 16), ("base",), ("d0",), hidden=32, dilation=2,
                     dd_width=16, dd_stride=4).train()
    step = make_static_step("balanced", flag_ratio=0.0)  # keep every sample
    opt = make_optimizer(model, 1e-3, 0.0)
    first = None
    for _ in range(25):
        loss, parts = step(model, seg_batch, "cpu")
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = parts["diff"] if first is None else first
    assert math.isfinite(parts["diff"]) and parts["diff"] < 0.8 * first


def test_dynamic_step_masks_have_no_grad(seg_batch):
    from ssdd_core import ssdd
    from ssdd_core.crf import CRFParams
    from ssdd_core.models.backbones import build_backbone
    from ssdd_core.models.nets import SegModel
    from ssdd_core.refinement import InLoopCRF, make_dynamic_step

    torch.manual_seed(0)
    model = SegModel(build_backbone("efficientnet_lite0", 16), ("main", "sub"), ("d1", "d2"), hidden=32,
                     dilation=2, dd_width=16, dd_stride=4).train()
    seen = []
    orig = ssdd.integrate

    def spy(*a, **k):
        out = orig(*a, **k)
        seen.append(out)
        return out

    ssdd.integrate = spy
    try:
        batch = dict(seg_batch, D0=seg_batch["K0"],
                     img_dd=torch.stack([torch.from_numpy(np.zeros((24, 24, 3), np.uint8))] * 4))
        step = make_dynamic_step("balanced", InLoopCRF(CRFParams(iters=3), 0, 0.25),
                                 Biases(0.4, 1.0, 0.0))
        loss, parts = step(model, batch, "cpu")
    finally:
        ssdd.integrate = orig
    assert len(seen) == 2 and all(not m.requires_grad for m in seen)  # m^D1, m^D2
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in parts.values())
    loss.backward()
    assert model.ddnets["d2"].out.weight.grad is not None


def test_dynamic_warmup_trains_heads_on_d0(seg_batch):
    """warmup_epochs: in a warm-up epoch the main head's loss is L_seg(main, m^D0) exactly;
    after it, the target is m^D2, which differs from m^D0 for an untrained model."""
    from ssdd_core.crf import CRFParams
    from ssdd_core.models.backbones import build_backbone
    from ssdd_core.models.nets import SegModel
    from ssdd_core.refinement import InLoopCRF, make_dynamic_step

    torch.manual_seed(0)
    model = SegModel(build_backbone("efficientnet_lite0", 16), ("main", "sub"), ("d1", "d2"), hidden=32,
                     dilation=2, dd_width=16, dd_stride=4).train()
    imgs_dd = torch.stack([torch.from_numpy(np.full((24, 24, 3), 128, np.uint8))] * 4)
    step = make_dynamic_step("balanced", InLoopCRF(CRFParams(iters=3), 0, 0.25),
                             Biases(0.4, 1.0, 0.0), warmup_epochs=1)
    with torch.no_grad():
        ref = float(seg_loss(model(seg_batch["img"])["logits/main"], seg_batch["K0"], "balanced"))
        batch = dict(seg_batch, D0=seg_batch["K0"], img_dd=imgs_dd)
        warm = step(model, dict(batch, epoch=torch.zeros(4, dtype=torch.long)), "cpu")[1]
        after = step(model, dict(batch, epoch=torch.ones(4, dtype=torch.long)), "cpu")[1]
    assert warm["warmup"] == 1.0 and after["warmup"] == 0.0
    assert warm["main"] == pytest.approx(ref, rel=1e-5)
    assert after["d2_eq_d0"] < 0.99 and abs(after["main"] - ref) > 1e-3


def test_control_row_dyn0_never_feeds_d1_or_d2_to_a_seg_loss(seg_batch, monkeypatch):
    """Issue 30: the control row DYN0 (``refinement=False``) is the dynamic step with m^D0 as the
    target of every seg loss in every epoch, warm-up or not; the DD-Nets still train on their own
    targets. The refining step, at the same epoch, feeds m^D2 / m^D1, which differ from m^D0 for
    this model (so the check can fail)."""
    from ssdd_core import refinement as R
    from ssdd_core.crf import CRFParams
    from ssdd_core.models.backbones import build_backbone
    from ssdd_core.models.nets import SegModel

    torch.manual_seed(0)
    model = SegModel(build_backbone("efficientnet_lite0", 16), ("main", "sub"), ("d1", "d2"), hidden=32,
                     dilation=2, dd_width=16, dd_stride=4).train()
    imgs_dd = torch.stack([torch.from_numpy(np.full((24, 24, 3), 128, np.uint8))] * 4)
    targets = []
    real = R.seg_loss
    monkeypatch.setattr(R, "seg_loss", lambda logits, target, kind: targets.append(target.clone()) or
                        real(logits, target, kind))
    batch = dict(seg_batch, D0=seg_batch["K0"], img_dd=imgs_dd, epoch=torch.full((4,), 3, dtype=torch.long))
    for refine in (False, True):
        targets.clear()
        step = R.make_dynamic_step("balanced", R.InLoopCRF(CRFParams(iters=3), 0, 0.25), Biases(0.4, 1.0, 0.0),
                                   warmup_epochs=1, refinement=refine)
        with torch.no_grad():
            loss, parts = step(model, batch, "cpu")
        assert len(targets) == 3 and torch.isfinite(loss) and parts["diff"] > 0  # main, sub (two terms)
        fed_d0 = [torch.equal(t, batch["D0"]) for t in targets]
        if refine:
            assert fed_d0 == [False, True, False], "SSDD: m^D2 to main, m^D0 and m^D1 to sub"
        else:
            assert all(fed_d0) and parts["warmup"] == 1.0, "DYN0 fed a seg loss something other than m^D0"


def test_ddnet_batchnorm_normalises_with_batch_statistics(seg_batch):
    """The DD-Net's BN uses batch statistics in training (affine fixed, left out of the
    optimizer) while the encoder's and seg head's BN stay frozen; so on real images the one-hot
    mask branch enters the bottleneck at the scale of the image branch."""
    from ssdd_core.models.backbones import build_backbone
    from ssdd_core.models.nets import SegModel
    from ssdd_core.train import make_optimizer

    torch.manual_seed(0)
    model = SegModel(build_backbone("efficientnet_lite0", 16), ("base",), ("d0",), hidden=32, dilation=2,
                     dd_width=16, dd_stride=4).train()
    dd_bn = [m for m in model.ddnets.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    other_bn = [m for n, m in model.named_modules()
                if isinstance(m, torch.nn.BatchNorm2d) and not n.startswith("ddnets.")]
    assert dd_bn and other_bn
    assert all(m.training for m in dd_bn) and not any(m.training for m in other_bn)
    bn_params = {id(p) for m in dd_bn + other_bn for p in m.parameters()}
    assert not any(id(p) in bn_params for g in make_optimizer(model, 1e-3, 0.0).param_groups for p in g["params"])
    enc_mean = other_bn[0].running_mean.clone()
    out = model(seg_batch["img"])
    dd = model.ddnets["d0"]
    f = dd.features(out["hidden/base"], out["low"], seg_batch["K0"].shape[-2:])
    ratio = float(dd.encode_mask(seg_batch["K0"]).std() / f.std())
    assert 0.5 < ratio < 2.0, ratio
    assert torch.equal(other_bn[0].running_mean, enc_mean)            # frozen BN: no update
    assert any(float(m.running_mean.abs().sum()) > 0 for m in dd_bn)  # DD BN: updated
    model.eval()
    assert not any(m.training for m in dd_bn)


def test_inloop_crf_gives_advice_at_the_dd_resolution(sample):
    """Issue 17, fix 3: the dynamic stage's t = 3 CRF runs at the DD resolution with the crf
    block's kernel widths times ``dynamic.crf_kernel_scale``: 1 in every shipped config (the
    authors, DESIGN §3.6; the old code hard-wired ¼). On real images at 48² (the DD size of a
    192 crop), with a softened, 3-px-shifted GT as the prediction, both move the mask towards
    GT (first 40 sample ids: pixel accuracy 87.1% → 88.0% at 1, → 89.2% at ¼)."""
    import yaml
    from conftest import REPO

    from ssdd_core import stages
    from ssdd_core.data import resize_image, resize_mask

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert paper["dynamic"]["crf_kernel_scale"] == 1.0 and cfg["dynamic"]["crf_kernel_scale"] == 1.0
    for scale in (1.0, 0.25):  # the authors, the old hard-wired value
        crf = stages.inloop_crf({**cfg, "dynamic": {**cfg["dynamic"], "crf_kernel_scale": scale}}, threads=1)
        assert crf.scale == scale and crf.params.iters == cfg["dynamic"]["crf_iters"]
        right_before = right_after = 0
        for i in sample.read_ids("train_aug")[:12]:
            img = resize_image(sample.load_image(i), (48, 48))
            gt = resize_mask(sample.load_mask(i), (48, 48)).astype(np.int64)
            valid = gt != 255
            pred = np.roll(np.where(valid, gt, 0), 3, axis=1)
            labels = torch.zeros(1, 21)
            labels[0, np.unique(pred)] = 1
            probs = torch.full((1, 21, 48, 48), 0.3 / 20)
            probs.scatter_(1, torch.from_numpy(pred)[None, None], 0.7)
            out = crf(img[None], probs, labels)[0].numpy()
            right_before += int(((pred == gt) & valid).sum())
            right_after += int(((out == gt) & valid).sum())
        crf.close()
        assert right_after > right_before, (scale, right_before, right_after)


def test_dynamic_diagnostics_on_hand_made_masks():
    """mIoU per mask against GT and the precondition counts where m^K1 ≠ m^A1; crops without GT
    (all 255) add nothing; a mask's own 255 pixels are not scored."""
    from ssdd_core.refinement import DynamicDiagnostics

    gt = torch.tensor([[[0, 0, 1, 1]] * 4, [[255] * 4] * 4])  # crop 2: no GT
    zeros = torch.zeros_like(gt)
    d0 = gt.clone()
    d0[0, 0, 0] = 255  # ignored in m^D0 only
    diag = DynamicDiagnostics()
    diag.update({"D0": d0, "K1": zeros, "A1": gt.clamp(max=1), "D1": gt.clamp(max=1), "D2": zeros}, gt)
    row = diag.end_epoch(1)
    assert row["crops"] == 1 and row["epoch"] == 1
    assert row["miou"]["D0"] == 1.0 and row["miou"]["A1"] == 1.0 and row["miou"]["D1"] == 1.0
    assert row["miou"]["K1"] == pytest.approx((0.5 + 0.0) / 2) and row["miou"]["D2"] == row["miou"]["K1"]
    assert row["k1_ne_a1"] == 8 and row["a1_right"] == 1.0 and row["k1_right"] == 0.0
    # foreground shares: GT half foreground (over m^D0's 15 scored pixels: 7 bg, 8 fg); K1 all bg
    assert row["fg_gt"] == pytest.approx(8 / 15) and row["fg"]["D0"] == pytest.approx(8 / 15)
    assert row["fg"]["K1"] == 0.0 and row["fg"]["A1"] == 0.5
    diag.update({m: zeros for m in DynamicDiagnostics.MASKS}, gt)
    assert diag.end_epoch(2)["k1_ne_a1"] == 0 and [r["epoch"] for r in diag.history] == [1, 2]
    assert diag.end_epoch(2)["crops"] == 0 and len(diag.history) == 2  # epoch 2 replaced, not added


def _dynamic_stage(tmp_path, sample, epochs: int):
    """``run(name, diag_json)``: the dynamic stage (``stages.train_dynamic``) on 4 sample training
    ids for ``epochs`` epochs (crop 64, batch 2, classifier start, no warm-up, diagnostics on every
    id), writing ``tmp_path / f"{name}.pt"``. m^D0 is the GT with its right half set to background,
    so it scores below 1."""
    import yaml
    from conftest import REPO

    from ssdd_core import stages
    from ssdd_core.io import load_mask_png, save_mask, write_json

    ids = sorted(sample.read_ids("train_aug"))[:4]
    labels = {}
    for i in ids:
        m = load_mask_png(sample.mask_path(i)).copy()
        labels[i] = sorted(int(c) for c in np.unique(m) if 0 < c < 255)
        m[:, m.shape[1] // 2:] = np.where(m[:, m.shape[1] // 2:] == 255, 255, 0)
        save_mask(tmp_path / "D0" / f"{i}.png", m)
    write_json(tmp_path / "labels.json", {"labels": labels})
    (tmp_path / "ids.txt").write_text("".join(i + "\n" for i in ids))
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"] = {**cfg["data"], "root": str(sample.root), "gt_dir": "SegmentationClassAug"}
    cfg["dynamic"].update(epochs=epochs, batch=2, crop=64, diagnostics_every=1, warmup_epochs=0, init="classifier")

    def run(name: str, diag_json: str | None):
        stages.train_dynamic(cfg, None, str(tmp_path / "labels.json"), [str(tmp_path / "ids.txt")],
                             [str(tmp_path / "D0")], str(tmp_path / f"{name}.pt"), 1, diag_json)

    return run


def test_dynamic_diagnostics_start_row_leaves_training_unchanged(tmp_path, sample):
    """Row ``epoch`` 0 of the dynamic diagnostics is the start point on the first epoch's crops,
    before any update (issue 18: is training moving the masks up or down from where it starts?).
    The pass must not change training: the checkpoint with diagnostics equals the one without, bit
    for bit (weights and the DD-Nets' batch-norm buffers), and its m^D0 score equals epoch 1's
    (same crops; m^D0 does not depend on the model)."""
    from ssdd_core.io import load_checkpoint, read_json

    run = _dynamic_stage(tmp_path, sample, epochs=1)
    runs = {}
    for name, diag in (("plain", None), ("diag", str(tmp_path / "diag.json"))):
        run(name, diag)
        runs[name] = load_checkpoint(tmp_path / f"{name}.pt")
    rows = read_json(tmp_path / "diag.json")["epochs"]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["crops"] == rows[1]["crops"] == 4
    assert 0 < rows[0]["miou"]["D0"] < 1 and rows[0]["miou"]["D0"] == rows[1]["miou"]["D0"]
    a, b = runs["plain"], runs["diag"]
    a, b = (a.get("model", a), b.get("model", b))
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_dynamic_stage_with_diagnostics_resumes_after_an_interruption(tmp_path, sample, monkeypatch):
    """A dynamic stage stopped after epoch 1 resumes from its resume state and ends with the
    checkpoint of an uninterrupted run. The start-point row (epoch 0) put the model in train mode
    (batch norm frozen) before the optimiser was built; the resumed run skips that row, and its
    optimiser then held the BN parameters too: "loaded state dict contains a parameter group that
    doesn't match the size of optimizer's group" (the voc2012_mini repeats run, 2026-12-02)."""
    from ssdd_core.io import load_checkpoint, read_json
    from ssdd_core.refinement import DynamicDiagnostics

    stage = _dynamic_stage(tmp_path, sample, epochs=2)

    def run(name):
        stage(name, str(tmp_path / f"{name}.json"))

    run("full")
    end_epoch = DynamicDiagnostics.end_epoch

    def stop_in_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("stopped in epoch 2")
        return end_epoch(self, epoch)

    monkeypatch.setattr(DynamicDiagnostics, "end_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run("cut")
    assert (tmp_path / "cut.pt.resume").exists() and not (tmp_path / "cut.pt").exists()
    monkeypatch.setattr(DynamicDiagnostics, "end_epoch", end_epoch)
    run("cut")
    assert not (tmp_path / "cut.pt.resume").exists()
    assert [r["epoch"] for r in read_json(tmp_path / "cut.json")["epochs"]] == [0, 1, 2]
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "cut.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
