"""Backbones and seg models on real images (DESIGN §4)."""
import numpy as np
import pytest
import torch

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
    from ssdd_core.train import cls_step, make_optimizer

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
