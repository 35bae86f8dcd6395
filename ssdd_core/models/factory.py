"""The models of the pipeline, built from the config in one place (DESIGN §4).

Kinds:

* ``cls``: the PSA classifier (:class:`~ssdd_core.models.nets.Classifier`);
* ``aff``: AffinityNet;
* seg models (:class:`~ssdd_core.models.nets.SegModel`), by the heads and DD-Nets they carry:
  ``static`` (head ``base`` + DD-Net ``d0``: the static stage, DESIGN §3.5), ``dynamic`` (heads
  ``main`` / ``sub`` + DD-Nets ``d1`` / ``d2``: SSDD's final model, §3.6) and ``seg`` (head
  ``base`` alone: the static-only rows K0 / A0 / D0 and the baseline, §3.7).
"""
from __future__ import annotations

import torch

from ..io import ArtifactError, load_checkpoint
from .backbones import Backbone, build_backbone
from .nets import AffinityNet, Classifier, SegModel

# kind → (heads, DD-Nets, the head that predicts at test time)
SEG_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "static": (("base",), ("d0",), "base"),
    "dynamic": (("main", "sub"), ("d1", "d2"), "main"),
    "seg": (("base",), (), "base"),
}
KINDS = ("cls", "aff", *SEG_KINDS)


def backbone(cfg: dict, output_stride: int, pretrained: bool = True) -> Backbone:
    """The config's backbone (``model.backbone``, ``model.weights``) at ``output_stride``."""
    m = cfg["model"]
    return build_backbone(m["backbone"], output_stride, pretrained=pretrained, weights=m["weights"])


def build(cfg: dict, kind: str, output_stride: int, pretrained: bool = False) -> torch.nn.Module:
    """A fresh model of ``kind`` at ``output_stride``; ``pretrained`` loads the backbone's
    ImageNet weights.

    The model's 4-d weights are stored channels-last (NHWC, :func:`channels_last`): every
    convolution then runs channels-last whatever the input's layout, the same numbers up to float
    rounding, 1.1-1.4× faster per training step on CPU (issue 29; ``tools/profile_rules.py
    --scaling --layouts``). Loading a state_dict keeps the layout.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "cls":
        return channels_last(Classifier(backbone(cfg, output_stride, pretrained)))
    if kind == "aff":
        return channels_last(AffinityNet(backbone(cfg, output_stride, pretrained), cfg["aff"]["grid_stride"]))
    if kind not in SEG_KINDS:
        raise ValueError(f"unknown model kind {kind!r} (one of {KINDS})")
    heads, ddnets, _ = SEG_KINDS[kind]
    s = cfg["seg"]
    return channels_last(SegModel(backbone(cfg, output_stride, pretrained), heads, ddnets, s["head_hidden"],
                                  s["head_dilation"], s["dd_width"], s["dd_stride"], s["dd_bn"]))


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its 4-d parameters and buffers in channels-last memory layout (in place).

    A convolution whose weight is channels-last computes in NHWC and returns an NHWC tensor, so
    the whole network runs in that layout from the first convolution on; oneDNN's NHWC kernels
    (depthwise above all) are faster on CPU than its NCHW ones, and cuDNN's are under AMP.
    Values are unchanged; results move only by float rounding (summation order).
    """
    return model.to(memory_format=torch.channels_last)


def load_weights(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """Load a checkpoint (a plain state_dict, ``weights_only``) into ``model``.

    Raises:
        ArtifactError: missing / unreadable file, or a state_dict of another architecture.
    """
    sd = load_checkpoint(path)
    try:
        model.load_state_dict(sd)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path}: checkpoint does not match the {type(model).__name__} built from "
                            f"the config (another architecture?): {str(e)[:300]}") from e
    return model


def load(cfg: dict, kind: str, path: str, output_stride: int, device="cpu") -> torch.nn.Module:
    """A trained model of ``kind`` from ``path`` at ``output_stride``, on ``device``, in eval mode."""
    return load_weights(build(cfg, kind, output_stride), path).to(device).eval()


def init_from_classifier(model: SegModel, cls_pt: str) -> SegModel:
    """Encoder θ_e initialised from the PSA classifier's backbone (DESIGN §3.5, §3.6).

    Raises:
        ArtifactError: no backbone weights in the checkpoint, or another backbone.
    """
    sd = load_checkpoint(cls_pt)
    bb = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if not bb:
        raise ArtifactError(f"{cls_pt}: no backbone weights in this classifier checkpoint")
    try:
        model.backbone.load_state_dict(bb)
    except RuntimeError as e:
        raise ArtifactError(f"{cls_pt}: classifier backbone does not match config 'model': {str(e)[:300]}") from e
    return model


def init_from_static(model: SegModel, static_pt: str) -> SegModel:
    """Initialise a seg model from the static stage's model (``static.pt``, DESIGN §3.5): the
    encoder θ_e as trained there, every seg head from its head ``base`` and every DD-Net from its
    ``d0``. Beyond the paper (which starts the dynamic stage from the classifier): issue 18's lever
    for a dynamic model whose predictions start at the quality of the seeds (docs/deviations.md).

    Raises:
        ArtifactError: unreadable file, or a checkpoint that is not a static model of this config
            (missing ``base`` head, or a DD-Net needed and no ``d0``, or other shapes).
    """
    sd = load_checkpoint(static_pt)
    new = {}
    for k, v in sd.items():
        part, _, rest = k.partition(".")
        if part == "backbone":
            new[k] = v
        elif k.startswith("heads.base."):
            new.update({f"heads.{h}.{rest.removeprefix('base.')}": v for h in model.heads})
        elif k.startswith("ddnets.d0."):
            new.update({f"ddnets.{d}.{rest.removeprefix('d0.')}": v for d in model.ddnets})
    try:
        model.load_state_dict(new)
    except (RuntimeError, TypeError) as e:
        raise ArtifactError(f"{static_pt}: not a static-stage model matching config 'model' / 'seg' "
                            f"(heads base, DD-Net d0): {str(e)[:300]}") from e
    return model


def for_training(cfg: dict, kind: str, cls_pt: str | None, static_pt: str | None = None) -> SegModel:
    """A seg model of ``kind`` to train, at ``model.train_output_stride``: from the static stage's
    model when ``static_pt`` is given (:func:`init_from_static`), else the encoder from the PSA
    classifier, or from ImageNet weights when there is none (``seeds.source: precomputed``)."""
    model = build(cfg, kind, cfg["model"]["train_output_stride"], pretrained=cls_pt is None and static_pt is None)
    if static_pt is not None:
        return init_from_static(model, static_pt)
    return init_from_classifier(model, cls_pt) if cls_pt is not None else model
