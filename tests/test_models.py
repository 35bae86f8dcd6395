"""Backbones and seg models on real images (DESIGN §4)."""
import numpy as np
import pytest
import torch
from conftest import REPO

from ssdd_core.data import normalize, resize_image
from ssdd_core.models.backbones import build_backbone
from ssdd_core.models.nets import SegModel

CAT, DOG = 8, 12  # VOC ids


def _imagenet_top1(net, x):
    """Top-1 ImageNet class of the package's own classifier head on backbone features."""
    return int(net._fc(net._avg_pooling(x).flatten(1)).argmax(1))


def test_efficientnet_lite0_sees_the_input_range_of_its_weights(sample):
    """The TF-converted EfficientNet-Lite0 weights expect (x - 127.5) / 127.5; our data layer
    normalises with ImageNet mean/std, and the backbone maps one to the other. Independent
    check: the pretrained ImageNet head names cats and dogs of the shipped sample right more
    often with the mapping than when the ImageNet-normalised tensor goes in as it is."""
    torch.set_num_threads(2)
    bb = build_backbone("efficientnet_lite0", 32).eval()
    imgs = []
    for i in sample.read_ids("train_aug"):
        labels = set(sample.image_labels(i).tolist())
        if labels & {CAT, DOG} and not {CAT, DOG} <= labels:
            imgs.append((resize_image(sample.load_image(i), (224, 224)), CAT if CAT in labels else DOG))
    assert len(imgs) >= 8, "the shipped sample should hold cat / dog images"
    raw = imgs[0][0]
    x = torch.from_numpy(normalize(raw))[None]
    mapped = x * bb.in_scale + bb.in_shift
    ref = torch.from_numpy((raw.astype(np.float32) / 255.0 - 0.5) / 0.5).permute(2, 0, 1)[None]
    assert torch.allclose(mapped, ref, atol=1e-5)

    def right(top, c):
        return (281 <= top <= 285) if c == CAT else (151 <= top <= 268)

    @torch.no_grad()
    def hits(model):
        return sum(right(_imagenet_top1(model.net, model(torch.from_numpy(normalize(img))[None])["out"]), c)
                   for img, c in imgs)

    hits_mapped = hits(bb)
    bb.in_scale.fill_(1.0)  # the same network fed the ImageNet-normalised tensor as it is
    bb.in_shift.fill_(0.0)
    hits_raw = hits(bb)
    assert hits_mapped >= 0.5 * len(imgs)  # 69 of 115 on the shipped sample; 62 without the mapping
    assert hits_mapped > hits_raw


def test_seg_model_runs_only_the_requested_heads():
    torch.manual_seed(0)
    model = SegModel(build_backbone("efficientnet_lite0", 16, pretrained=False), ("main", "sub"), ("d1",),
                     hidden=32, dilation=2, dd_width=16).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        only = model(x, heads=("main",))
    assert "logits/sub" not in only and "hidden/sub" not in only
    assert torch.equal(full["logits/main"], only["logits/main"])
    with pytest.raises(KeyError):
        model(x, heads=("base",))


def test_frozen_stem_keeps_imagenet_weights_through_classifier_training(sample):
    """cls.freeze_stem (PSA / IRN): a classifier step on real sample crops updates the later
    blocks and the CAM layer but leaves the stem bit-identical, with no gradient reaching it."""
    from ssdd_core.datasets import ClsDataset
    from ssdd_core.models.backbones import freeze_stem
    from ssdd_core.models.nets import Classifier
    from ssdd_core.psa import cls_step
    from ssdd_core.train import make_optimizer

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = Classifier(build_backbone("efficientnet_lite0", 16))
    stem = {id(p) for m in model.backbone.stem_modules() for p in m.parameters()}
    assert freeze_stem(model.backbone) == len(stem) > 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = sample.read_ids("train_aug")[:8]
    labels = {i: sample.image_labels(i).tolist() for i in ids}
    ds = ClsDataset(sample, ids, labels, 96, seed=0, scale_range=(1.0, 1.2))
    batch = torch.utils.data.default_collate([ds[k] for k in range(len(ids))])
    opt = make_optimizer(model, 0.01, 0.0005)
    assert not stem & {id(p) for g in opt.param_groups for p in g["params"]}
    model.train()
    loss, _ = cls_step(model, batch, torch.device("cpu"))
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for m in model.backbone.stem_modules() for p in m.parameters())
    opt.step()
    after = model.state_dict()
    net = model.backbone.net
    stem_names = [f"backbone.net.{n}" for n, _ in net.named_parameters()
                  if n.startswith(("_conv_stem", "_bn0", "_blocks.0.", "_blocks.1.", "_blocks.2."))]
    assert stem_names and all(torch.equal(before[k], after[k]) for k in stem_names)
    assert not torch.equal(before["backbone.net._blocks.3._expand_conv.weight"],
                           after["backbone.net._blocks.3._expand_conv.weight"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


# --------------------------------------------------------------------------- geometry (issues 17, 28)

TAPS = ("low", "mid", "high", "out")
CASES = [("efficientnet_lite0", 32), ("efficientnet_lite0", 16), ("efficientnet_lite0", 8), ("resnet50", 32),
         ("resnet50", 16), ("resnet50", 8), ("resnet38", 16), ("resnet38", 8)]


def test_geometry_cases_cover_the_registry():
    from ssdd_core.models.backbones import available

    assert {name for name, _ in CASES} == set(available())


def _to_pixels(bb, key, f, size):
    from ssdd_core.models.backbones import block_grid, resample_grid

    return resample_grid(f, bb.grids[key], block_grid(1), size)


def _centroid_error(bb, key, x, pixels):
    """Centroid of |∂f/∂x| (summed over RGB) of one pixel of tap ``key`` resampled onto the
    pixel grid, minus that pixel, in px (x, y); mean over ``pixels`` on the diagonal."""
    errs = []
    H, W = x.shape[2:]
    proj = torch.randn(4, bb.channels[key], generator=torch.Generator().manual_seed(0))
    coords = torch.arange(H, dtype=torch.float64)
    for p in pixels:
        xi = x.clone().requires_grad_(True)
        f = torch.einsum("kc,bchw->bkhw", proj, bb(xi)[key])  # project first: resampling is linear
        _to_pixels(bb, key, f, (H, W))[0, :, p, p].sum().backward()
        a = xi.grad[0].abs().sum(0).double()
        errs.append((float((a.sum(0) * coords).sum() / a.sum()) - p, float((a.sum(1) * coords).sum() / a.sum()) - p))
    return np.array(errs).mean(0)


def centroid_errors(name: str, os_: int):
    """Per tap, the (x, y) centroid error of :func:`_centroid_error` with centred kernels
    (random weights; EfficientNet with ``flip_trained`` off): mean over weight seeds (4 for
    EfficientNet, whose single draws scatter by ~3 px at ``out``) and three pixels of a fixed
    noise image. Returns (tap → (2,) error in px, the last backbone built)."""
    size = 192 if name == "resnet38" else 256
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    seeds = 4 if name == "efficientnet_lite0" else 1
    errs = {k: np.zeros(2) for k in TAPS}
    for seed in range(seeds):
        torch.manual_seed(seed)
        bb = build_backbone(name, os_, pretrained=False).eval()
        if name == "efficientnet_lite0":
            bb.flip_trained = False
        for k in TAPS:
            errs[k] += _centroid_error(bb, k, x, (size // 2 - 5, size // 2, size // 2 + 6)) / seeds
    return errs, bb


@pytest.mark.parametrize("name, os_", CASES)
def test_every_tap_is_centred_where_its_grid_says(name, os_):
    """DESIGN §4 check (a): with centred kernels (random weights; EfficientNet with
    ``flip_trained`` off), the centroid of |∂f/∂x| of one pixel of each tap resampled with the
    tap's :class:`Grid` lies within s/4 of that pixel, in x and y. Mean over weight seeds (a
    single random draw scatters by ~3 px at EfficientNet's ``out``) and three pixels of a noise
    image. The old code, measured the same way on a real image: ResNet-50 at stride 16 ``out``
    −14.3 / −16.4 px (bound 4), ResNet-38 at stride 8 ``out`` −8.5 / −7.4 (bound 2),
    EfficientNet-Lite0 at stride 8 ``mid`` −4.2 / −5.5 (bound 2)."""
    torch.set_num_threads(2)
    errs, bb = centroid_errors(name, os_)
    bad = {k: (bb.grids[k], e.round(1)) for k, e in errs.items() if np.abs(e).max() > bb.grids[k].stride / 4}
    assert not bad, f"{name} at output stride {os_}: taps off their grid by more than s/4: {bad}"


def flip_shift(f, x: torch.Tensor, to_pixels) -> float:
    """How far (image px, along x) f's features of the mirrored image, mirrored back, lie from
    f's features of the image: ``2 × (actual − assumed)`` cell centre, 0 for a right grid.

    Both maps are projected on 16 fixed random directions, resampled to pixels with
    ``to_pixels`` and compared at integer shifts within ±48 px (parabolic sub-pixel refinement
    of the least squared difference). Only left-right mirroring: images seen upside down are
    not natural images, and every backbone pads x and y alike."""
    H, W = x.shape[2:]
    fa, fb = f(x), f(x.flip(-1))
    proj = torch.randn(16, fa.shape[1], generator=torch.Generator().manual_seed(0))
    a = to_pixels(torch.einsum("kc,bchw->bkhw", proj, fa), (H, W))
    b = to_pixels(torch.einsum("kc,bchw->bkhw", proj, fb), (H, W)).flip(-1)
    m = 48
    err = np.array([float(((a[..., m:W - m] - b[..., m + d:W - m + d]) ** 2).mean()) for d in range(-m, m + 1)])
    k = int(err.argmin())
    sub = 0.0
    if 0 < k < len(err) - 1 and err[k - 1] - 2 * err[k] + err[k + 1] > 0:
        sub = 0.5 * (err[k - 1] - err[k + 1]) / (err[k - 1] - 2 * err[k] + err[k + 1])
    return k - m + sub


def _val_crops(sample, n=3, size=320):
    """The sample's last ``n`` val images: never used to choose anything in the code."""
    ids = sample.read_ids("val")[-n:]
    return [torch.from_numpy(normalize(resize_image(sample.load_image(i), (size, size))))[None] for i in ids]


# Flip shifts measured with the grids of the code (px, 3 images): (output stride, tap) → shifts
_FLIP_MISSES = {(32, "low"): "+2.5, +2.2, +2.4", (16, "low"): "+2.5, +2.2, +2.4", (8, "low"): "+2.5, +2.2, +2.4",
                (8, "high"): "+3.7, +3.5, +3.4", (8, "out"): "+2.9, +4.0, +2.6"}


@pytest.mark.parametrize("os_, key", [(os_, k) for os_ in (32, 16, 8) for k in TAPS])
@torch.no_grad()
def test_efficientnet_imagenet_taps_pass_the_flip_test(sample, os_, key, request):
    """DESIGN §4 check (b): with the ImageNet weights, each tap's features of a mirrored image,
    mirrored back onto the pixel grid with the tap's :class:`Grid`, match the image's own
    within s/4 px of flip shift (s/8 of centre error). Old code, stride 16 (issue 28): ``out``
    +1.3, +0.7, 0.0 but ``high`` −15.2, −15.0, −15.3. With geometric centres (``flip_trained``
    off) the deep taps fail by about their whole offset (stride 16 ``out`` −29, ``high`` −13):
    the weights learnt flip-symmetric kernels. Now: ``mid`` −0.3…−0.7, ``high`` +2.2…+2.5,
    ``out`` −0.2…+3.7 (stride 32), +1.8…+3.9 (16). The rule is not exact for the stem
    (``low``) nor at stride 8: those cases are strict xfails with their numbers."""
    if (os_, key) in _FLIP_MISSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"flip shifts {_FLIP_MISSES[os_, key]} px"))
    torch.set_num_threads(2)
    bb = build_backbone("efficientnet_lite0", os_).eval()
    shifts = [flip_shift(lambda t: bb(t)[key], x, lambda f, size: _to_pixels(bb, key, f, size))
              for x in _val_crops(sample)]
    assert max(abs(v) for v in shifts) <= bb.grids[key].stride / 4, f"stride {os_} {key}: flip shifts {shifts}"


@pytest.mark.parametrize("name, os_", [c for c in CASES if (c[0], 2 * c[1]) in CASES])
@torch.no_grad()
def test_conversion_is_exact_a_trous(name, os_):
    """DESIGN §4 check (c): the stride-s network computed densely is the stride-2s one on the
    same input (its even cells, every tap, the same grid offsets), so a model trained at one
    stride runs at another on the same grid. Any weights (random here; EfficientNet's ImageNet
    ones). Relative difference in the central third ≤ 2e-6 measured; the old code needed the
    image moved by s/2 px and then differed by 0.03 (EfficientNet)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    fine = build_backbone(name, os_, pretrained=name == "efficientnet_lite0").eval()
    coarse = build_backbone(name, 2 * os_, pretrained=False).eval()
    coarse.load_state_dict(fine.state_dict())
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    a, b = fine(x), coarse(x)
    for key in TAPS:
        fg, cg = fine.grids[key], coarse.grids[key]
        assert fg.offset == cg.offset, (key, fg, cg)
        step = cg.stride // fg.stride
        av = a[key][..., ::step, ::step]
        n = b[key].shape[-1]
        c = slice(n // 3, n - n // 3)
        rel = float((av[..., c, c] - b[key][..., c, c]).norm() / b[key][..., c, c].norm())
        assert rel < 1e-4, f"{name} stride {os_} vs {2 * os_}, {key}: relative difference {rel:.2e}"


def test_resample_grid_moves_cell_centres_to_their_pixels():
    """Independent references: from a block grid it is ``F.interpolate`` (``align_corners=False``)
    by the stride, cropped; from a grid with offset φ, a response at cell j lands on pixel
    φ + s·j (a 200-px image: 13 stride-16 cells span 208 px, so resizing them straight to 200,
    the old CAM upsampling, pulls x = 160 to ~154)."""
    import torch.nn.functional as F

    from ssdd_core.models.backbones import Grid, block_grid, resample_grid

    t = torch.randn(2, 3, 13, 13)
    ref = F.interpolate(t, (208, 208), mode="bilinear", align_corners=False)[..., :200, :200]
    assert torch.allclose(resample_grid(t, block_grid(16), block_grid(1), (200, 200)), ref, atol=1e-5)
    cols = torch.arange(200, dtype=torch.float32)

    def centre(m):
        w = m[0, 0].mean(0)
        return float((w * cols).sum() / w.sum())

    for offset in (0.0, 7.5, 15.5, 31.0):
        cells = torch.zeros(1, 1, 13, 13)
        cells[..., 8] = 1.0  # column 8: centred on offset + 128
        up = resample_grid(cells, Grid(16, offset), block_grid(1), (200, 200))
        assert abs(centre(up) - (offset + 128)) < 0.01, offset
        assert float(up[0, 0, 0, round(offset + 128)]) == pytest.approx(1.0, abs=0.05)
    assert abs(centre(F.interpolate(cells, (200, 200), mode="bilinear", align_corners=False)) - 135.5) > 4
    # to a coarser grid of the same image: the DD grid (blocks of 4 px) takes pixel centres 1.5 + 4k
    px = torch.arange(64, dtype=torch.float32).view(1, 1, 1, 64).expand(1, 1, 8, 64).contiguous()
    dd = resample_grid(px, block_grid(1), block_grid(4), (8, 16))
    assert torch.allclose(dd[0, 0, 0], 1.5 + 4 * torch.arange(16, dtype=torch.float32))


class _PositionBackbone(torch.nn.Module):
    """A stand-in backbone whose every tap holds, per cell, the x and y pixel coordinates of the
    cell's centre on the grid it reports (each tap at another offset)."""

    channels = {"low": 2, "mid": 2, "high": 2, "out": 2}
    output_stride = 16

    def __init__(self):
        super().__init__()
        from ssdd_core.models.backbones import Grid

        self.grids = {"low": Grid(4, 1.5), "mid": Grid(8, 3.5), "high": Grid(16, 7.5), "out": Grid(16, 15.5)}

    def forward(self, x):
        H, W = x.shape[2:]
        out = {}
        for k, g in self.grids.items():
            h, w = -(-H // g.stride), -(-W // g.stride)
            ys = g.offset + g.stride * torch.arange(h, dtype=torch.float32)
            xs = g.offset + g.stride * torch.arange(w, dtype=torch.float32)
            out[k] = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])[None].repeat(
                x.shape[0], 1, 1, 1)
        return out


@torch.no_grad()
def test_consumers_resample_every_tap_from_its_own_grid():
    """AffinityNet's concatenation of mid / high / out and a seg model's DD-Net features all see
    one image position per cell: fed taps that hold their cells' pixel coordinates, each
    resampled channel equals the target grid's own block centres (before issue 28, AffinityNet
    assumed (s − 1)/2 for every tap and the DD-Net features were stretched to the DD size)."""
    from ssdd_core.models.nets import AffinityNet, SegModel

    bb = _PositionBackbone()
    x = torch.zeros(1, 3, 96, 128)
    aff = AffinityNet(bb, 8)
    feats = bb(x)
    aff.f8 = aff.f16 = aff.fout = aff.f = torch.nn.Identity()
    cat = aff(x)  # coordinates are positive: the ELUs pass them unchanged
    centres_x = 3.5 + 8 * torch.arange(16, dtype=torch.float32)
    for i in range(3):  # mid, high, out
        inner = slice(2, 14)  # away from the borders, where positions beyond the first / last cell clamp
        assert torch.allclose(cat[0, 2 * i, 0, inner], centres_x[inner], atol=1e-4), (i, cat[0, 2 * i, 0])
    seg = SegModel(bb, ("base",), ("d0",), hidden=8, dilation=1, dd_width=4)
    out = {"low": feats["low"], "hidden/base": feats["out"]}
    captured = {}
    seg.ddnets["d0"].features = lambda eh, el, size: captured.update(eh=eh, el=el) or torch.zeros(1, 8, *size)
    seg.ddnets["d0"].head = lambda f, m: torch.zeros(m.shape)
    seg.dd("d0", out, "base", torch.zeros(1, 24, 32, dtype=torch.long))
    dd_x = 1.5 + 4 * torch.arange(32, dtype=torch.float32)
    for k in ("eh", "el"):
        inner = slice(4, 28)  # away from the clamped borders
        assert torch.allclose(captured[k][0, 0, 5, inner], dd_x[inner], atol=1e-4), k


@pytest.mark.parametrize("config", ["paper.yaml", "gpu_mini.yaml"])
@torch.no_grad()
def test_every_model_kind_builds_and_runs_for_the_shipped_presets(config):
    """The paper preset (ResNet-38 at output stride 8, 512-wide heads at dilation 12) and the GPU
    preset build every model kind through the factory and run a forward pass with the shapes the
    stages expect (no ImageNet weights: ResNet-38's are user-supplied)."""
    import yaml
    from snakemake.utils import update_config

    from ssdd_core.models import factory

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config" / config).read_text()))
    torch.manual_seed(0)
    os_ = cfg["model"]["train_output_stride"]
    x = torch.randn(1, 3, 64, 64)
    assert factory.build(cfg, "cls", os_).eval()(x).shape == (1, 20)
    aff = factory.build(cfg, "aff", cfg["psa"]["output_stride"]).eval()(x)
    assert aff.shape[-2:] == (64 // cfg["aff"]["grid_stride"],) * 2
    dd = 64 // cfg["seg"]["dd_stride"]
    for kind, (heads, ddnets, head) in factory.SEG_KINDS.items():
        model = factory.build(cfg, kind, os_).eval()
        assert set(model.heads) == set(heads) and set(model.ddnets) == set(ddnets)
        out = model(x)
        assert out[f"logits/{head}"].shape == (1, 21, dd, dd), kind
        for name in ddnets:
            src = "base" if kind == "static" else ("main" if name == "d1" else "sub")
            d = model.dd(name, out, src, torch.zeros(1, dd, dd, dtype=torch.long))
            assert d.shape[-2:] == (dd, dd) and torch.isfinite(d).all(), (kind, name)
    with pytest.raises(ValueError, match="unknown model kind"):
        factory.build(cfg, "baseline", os_)


@torch.no_grad()
def test_init_from_static_starts_every_head_and_ddnet_from_the_static_model(tmp_path):
    """``dynamic.init: static`` / ``baseline.init: static`` (issue 18): the dynamic model's heads
    main and sub both compute the static model's head ``base``, its DD-Nets d1 and d2 the static
    d0, with the same encoder, so its first masks are the static stage's; a seg row likewise. A
    checkpoint of another kind (no head ``base``) is refused, naming the file."""
    import yaml

    from ssdd_core.io import ArtifactError, save_checkpoint
    from ssdd_core.models import factory

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    torch.manual_seed(0)
    static = factory.build(cfg, "static", 16).eval()
    for p in static.parameters():  # not the fresh init, which two fresh models could share by chance
        p.add_(0.01 * torch.randn_like(p))
    pt = tmp_path / "static.pt"
    save_checkpoint(pt, static.state_dict())
    x = torch.randn(2, 3, 64, 64)
    ref = static(x)
    mask = ref["logits/base"].argmax(1)
    dyn = factory.for_training(cfg, "dynamic", None, str(pt)).eval()
    out = dyn(x)
    for head, dd in (("main", "d1"), ("sub", "d2")):
        assert torch.equal(out[f"logits/{head}"], ref["logits/base"]), head
        assert torch.equal(dyn.dd(dd, out, head, mask), static.dd("d0", ref, "base", mask)), dd
    seg = factory.for_training(cfg, "seg", None, str(pt)).eval()
    assert torch.equal(seg(x)["logits/base"], ref["logits/base"])
    # the classifier start point leaves heads fresh: they do not compute the static head
    fresh = factory.for_training(cfg, "dynamic", None).eval()
    assert not torch.allclose(fresh(x)["logits/main"], ref["logits/base"])
    save_checkpoint(tmp_path / "dynamic.pt", dyn.state_dict())
    with pytest.raises(ArtifactError, match="dynamic.pt: not a static-stage model"):
        factory.for_training(cfg, "dynamic", None, str(tmp_path / "dynamic.pt"))


@pytest.mark.parametrize("stage,block", [("train_seg", "baseline"), ("train_dynamic", "dynamic")])
def test_init_static_without_a_static_model_is_refused_before_training(tmp_path, stage, block):
    """``<block>.init: static`` with no static model given (a caller that forgot the input) stops
    with a ValueError naming the key, before any checkpoint is written; the workflow's rules pass
    ``static.pt`` exactly then (tests/test_pipeline.py)."""
    import yaml

    from ssdd_core import stages

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg[block]["init"] = "static"
    out = tmp_path / "model.pt"
    with pytest.raises(ValueError, match=rf"{block}\.init is 'static' but no static-stage model"):
        getattr(stages, stage)(cfg, None, str(tmp_path / "labels.json"), [], [], str(out), 1)
    assert not out.exists()
    cfg[block]["init"] = "classifier"  # the other start point gets past the check (and fails on the missing labels)
    with pytest.raises(Exception) as e:
        getattr(stages, stage)(cfg, None, str(tmp_path / "labels.json"), [], [], str(out), 1)
    assert "static-stage model" not in str(e.value)


@pytest.mark.parametrize("kind", ["cls", "aff", "dynamic"])
def test_channels_last_models_compute_what_contiguous_ones_do(sample, kind):
    """Issue 29: the factory stores 4-d weights channels-last (the speed-up); a copy in the default
    layout gives the same outputs and gradients on a real image, up to float rounding (1e-4 of
    each tensor's scale), and the factory's model really is channels-last (else no speed-up)."""
    import copy

    import yaml

    from ssdd_core.models import factory

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    torch.manual_seed(0)
    model = factory.build(cfg, kind, cfg["model"]["train_output_stride"]).eval()
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)
             and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]  # (depthwise / 1×1: both layouts coincide)
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert all(p.is_contiguous() for p in plain.parameters())
    img = resize_image(sample.load_image(sample.read_ids("train_aug")[0]), (96, 96))
    x = torch.from_numpy(normalize(img))[None]

    def run(m):
        out = m(x)
        if kind == "dynamic":
            dd = m.dd("d1", out, "main", out["logits/main"].argmax(1))
            out = torch.cat([out["logits/main"].flatten(), out["logits/sub"].flatten(), dd.flatten()])
        loss = (out.float() ** 2).mean()
        m.zero_grad()
        loss.backward()
        return out.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    (ya, ga), (yb, gb) = run(model), run(plain)
    scale = yb.abs().max()
    assert (ya - yb).abs().max() <= 1e-4 * scale
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        assert (ga[n] - gb[n]).abs().max() <= 1e-4 * gb[n].abs().max() + 1e-12, n
