"""SSDD module: integration (each branch of Eq. 17), bad-sample flags, J, DD-Net, training."""
import numpy as np
import pytest
import torch

from ssdd_core import ssdd

LOGIT = {0.9: float(np.log(0.9 / 0.1)), 0.1: float(np.log(0.1 / 0.9)), 0.5: 0.0}


def one(dk, da, mk, ma, flags=(), b_dd=0.0, b_class=1.0, b_bg=0.0):
    f = np.zeros(21, bool)
    f[list(flags)] = True
    def arr(v, t):
        return np.array([[v]], t)

    return int(ssdd.integrate(arr(LOGIT[dk], np.float32), arr(LOGIT[da], np.float32), arr(mk, np.int64),
                              arr(ma, np.int64), f, b_dd, b_class, b_bg)[0, 0])


def test_integrate_branches():
    # DD confidence: knowledge likely wrong (σ(d_k)=0.9), advice likely right → advice
    assert one(0.9, 0.1, 8, 12) == 12
    # the reverse → knowledge
    assert one(0.1, 0.9, 8, 12) == 8
    # a tie: w = b_dd decides (≥ 0 → advice)
    assert one(0.5, 0.5, 8, 12, b_dd=0.0) == 12
    assert one(0.5, 0.5, 8, 12, b_dd=-0.1) == 8
    # b_bg: knowledge is background → pushed towards knowledge...
    assert one(0.5, 0.5, 0, 12, b_dd=0.05, b_bg=0.1) == 0
    # ...advice is background → pushed towards advice
    assert one(0.5, 0.5, 12, 0, b_dd=-0.05, b_bg=0.1) == 0
    # flagged class in the knowledge → keep knowledge even when DD prefers advice
    assert one(0.9, 0.1, 8, 0, flags=[8], b_dd=0.1) == 8
    # flagged class in the advice → take advice even when DD prefers knowledge
    assert one(0.1, 0.9, 0, 8, flags=[8]) == 8
    # unflagged: DD decides
    assert one(0.1, 0.9, 0, 8, flags=[12]) == 0


def test_integrate_batch_flags_and_shapes():
    mk = torch.tensor([[[8, 8]], [[8, 8]]])
    ma = torch.tensor([[[0, 0]], [[0, 0]]])
    flags = torch.zeros(2, 21, dtype=torch.bool)
    flags[1, 8] = True
    d = torch.zeros(2, 1, 2)
    out = ssdd.integrate(d, d, mk, ma, flags, 0.0, 1.0, 0.0)
    assert out[0].tolist() == [[0, 0]] and out[1].tolist() == [[8, 8]]
    with pytest.raises(ValueError, match="shapes differ"):
        ssdd.integrate(d, d[:1], mk, ma, flags, 0.0, 1.0, 0.0)


def test_bad_class_flags():
    mk = np.zeros((10, 10), np.int64)
    ma = np.zeros((10, 10), np.int64)
    mk[:5] = 8
    ma[:2] = 8  # r = 20/50 = 0.4 < 0.5 → flagged
    mk[5:, :4] = 12
    ma[5:, :3] = 12  # r = 15/20 = 0.75 → fine
    f = ssdd.bad_class_flags(mk, ma, [8, 12, 15])
    assert f[8] and not f[12]
    assert f[15]  # absent from both masks → r = 0 → flagged
    assert not f[0] and f.sum() == 2
    bf = ssdd.batch_flags(torch.from_numpy(mk)[None], torch.from_numpy(ma)[None],
                          torch.tensor([[1] + [1 if c in (8, 12, 15) else 0 for c in range(1, 21)]]))
    assert bf[0].numpy().tolist() == f.tolist()


def test_difference_loss_halves_and_no_nan():
    logits = torch.tensor([[[2.0, -1.0, 0.5, 0.0]]])
    t = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")[0, 0]
    expect = (bce[0] + bce[1:].mean()) / 2
    assert torch.allclose(ssdd.difference_loss(logits, t), expect)
    # one half empty → the other half's mean, never NaN
    t0 = torch.zeros_like(t)
    l0 = ssdd.difference_loss(logits, t0)
    assert torch.isfinite(l0) and torch.allclose(l0, torch.nn.functional.binary_cross_entropy_with_logits(logits, t0))
    # every sample dropped → 0, finite, with grad
    lg = logits.clone().requires_grad_()
    lz = ssdd.difference_loss(lg, t, keep=torch.tensor([False]))
    lz.backward()
    assert float(lz.detach()) == 0.0 and torch.isfinite(lg.grad).all()
    # 255 pixels carry no target
    mk = torch.tensor([[[1, 255]]])
    ma = torch.tensor([[[2, 2]]])
    target, valid = ssdd.difference_target(mk, ma)
    assert target.tolist() == [[[1.0, 1.0]]] and valid.tolist() == [[[True, False]]]


def test_ddnet_shapes_and_detached_inputs():
    from ssdd_core.models.nets import DDNet

    net = DDNet(32, 24, width=16)
    eh = torch.randn(2, 32, 7, 7, requires_grad=True)
    el = torch.randn(2, 24, 28, 28, requires_grad=True)
    m = torch.randint(0, 21, (2, 28, 28))
    m[0, 0, 0] = 255
    out = net(eh, el, m)
    assert out.shape == (2, 28, 28)
    out.sum().backward()
    assert eh.grad is None and el.grad is None  # L_diff trains only the DD-Net


def test_integration_stats_counts_choices_against_gt():
    from ssdd_core.metrics import integration_stats

    gt = np.array([[0, 0, 8, 8, 255]], dtype=np.uint8)
    mk = np.array([[0, 8, 8, 0, 8]], dtype=np.uint8)   # differs from m^A at columns 1, 3, 4
    ma = np.array([[0, 0, 8, 8, 0]], dtype=np.uint8)
    md = np.array([[0, 0, 8, 0, 0]], dtype=np.uint8)   # took m^A at 1 (right), m^K at 3 (wrong)
    # scored 4 (void left out); differing 2; D took A 1; K right 0; A right 2; D right 1; oracle 2
    assert integration_stats(mk, ma, md, gt).tolist() == [4, 2, 1, 0, 2, 1, 2]


def test_advice_counts_on_a_hand_made_batch():
    """The paper's precondition count (|S^{A,T}| vs |S^{A,F}|) shared by the dynamic diagnostics
    and the CRF sweeps: only pixels with GT where the masks differ; both may be wrong there."""
    from ssdd_core.metrics import advice_counts

    gt = np.array([[[0, 0, 8, 8, 255, 3]], [[12, 12, 12, 0, 0, 0]]])
    mk = np.array([[[0, 8, 8, 0, 8, 5]], [[12, 0, 12, 0, 12, 0]]])
    ma = np.array([[[0, 0, 8, 8, 0, 7]], [[12, 12, 0, 0, 0, 0]]])
    # differing with GT: b0 cols 1, 3, 5 (col 4 is void); b1 cols 1, 2, 4
    # A right: b0 1, 3; b1 1, 4 -> 4. K right: b1 2 -> 1. b0 col 5: both wrong
    assert advice_counts(mk, ma, gt).tolist() == [6, 4, 1]
    with pytest.raises(ValueError, match="shapes"):
        advice_counts(mk[0], ma, gt)


def test_ddnet_bn_modes():
    """seg.dd_bn: ``frozen`` (the authors') keeps the DD-Net's BNs in eval mode in training, so
    a pixel's logit does not depend on the rest of the batch; ``batch`` normalises with the
    batch statistics, so it does."""
    from ssdd_core.models.nets import DDNet, freeze_bn

    torch.manual_seed(0)
    e_h, e_l = torch.randn(2, 32, 6, 6), torch.randn(2, 24, 12, 12)
    mask = torch.randint(0, 21, (2, 12, 12))
    for mode, depends in (("frozen", False), ("batch", True)):
        net = DDNet(32, 24, width=16, bn_mode=mode).train()
        freeze_bn(net)
        assert all(m.training == depends for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
        with torch.no_grad():
            both = net(e_h, e_l, mask)[0]
            alone = net(e_h[:1], e_l[:1], mask[:1])[0]
        assert torch.allclose(both, alone, atol=1e-5) != depends, mode
    with pytest.raises(ValueError, match="bn_mode"):
        DDNet(32, 24, bn_mode="sync")
