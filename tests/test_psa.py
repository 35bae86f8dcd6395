"""PSA and CRF pieces on real images (DESIGN §3.2-3.3)."""
import numpy as np
import pytest
import torch

from ssdd_core import psa
from ssdd_core.crf import CRFParams, dense_crf
from ssdd_core.models.backbones import build_backbone
from ssdd_core.models.nets import AffinityNet, Classifier


@pytest.fixture(scope="module")
def real(sample):
    i = sample.read_ids("train_aug")[3]
    img = sample.load_image(i)
    # keep tests fast: a real image at half size
    from ssdd_core.data import resize_image, resize_mask
    h, w = img.shape[0] // 2, img.shape[1] // 2
    return resize_image(img, (h, w)), resize_mask(sample.load_mask(i), (h, w)), sample.image_labels(i).tolist()


def test_cam_shapes_and_range(real):
    img, _, labels = real
    torch.manual_seed(0)
    model = Classifier(build_backbone("efficientnet_lite0", 16)).eval()
    cam = psa.compute_cam(model, img, labels, scales=(1.0, 0.5), flip=True)
    assert cam.shape == (len(labels),) + img.shape[:2] and cam.dtype == np.float32
    assert cam.min() >= 0 and np.allclose(cam.reshape(len(labels), -1).max(1), 1.0, atol=1e-5)


def test_affinity_label_rule():
    # 2 present classes on a 4x4 image, stride 2 → 2x2 grid
    la = torch.zeros(3, 4, 4)
    ha = torch.zeros(3, 4, 4)
    la[1, :2, :2] = 1.0   # cell (0,0): la says class 1 (confident fg)
    ha[1, :2, :2] = 1.0   #             and ha does not say bg
    la[0, :2, 2:] = 1.0   # cell (0,1): la says bg → 255 unless ha says bg
    ha[0, :2, 2:] = 1.0   #             ha says bg → 0
    la[0, 2:, :2] = 1.0   # cell (1,0): la bg, ha fg → 255
    ha[2, 2:, :2] = 1.0
    la[2, 2:, 2:] = 1.0   # cell (1,1): la class 2 but outside the image → 255
    valid = torch.ones(4, 4)
    valid[2:, 2:] = 0
    lab = psa.labels_from_scores(la, ha, valid, 2)
    assert lab.tolist() == [[1, 0], [255, 255]]


def test_pair_offsets_radius():
    offs = psa.pair_offsets(5)
    assert all(dy * dy + dx * dx < 25 for dy, dx in offs)
    assert (0, 0) not in offs and (0, 5) not in offs and (3, 4) not in offs and (4, 2) in offs
    full = set(offs) | {(-dy, -dx) for dy, dx in offs}
    assert len(full) == 2 * len(offs)  # each ± pair once


def test_random_walk_rows_sum_to_one_and_probabilities(real):
    img, _, labels = real
    torch.manual_seed(0)
    aff = AffinityNet(build_backbone("efficientnet_lite0", 16), 8).eval()
    x = torch.randn(1, 3, 64, 96)
    T = psa.transition_matrix(aff(x), radius=5, beta=8)
    rows = torch.sparse.sum(T.to_sparse_coo(), 1).to_dense()
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    cam = np.random.default_rng(0).random((len(labels),) + img.shape[:2]).astype(np.float32)
    p = psa.random_walk(aff, img, cam, logt=3)
    assert p.shape == (len(labels) + 1,) + img.shape[:2]
    assert np.allclose(p.sum(0), 1, atol=1e-4) and p.min() >= 0
    # at another scale: the walk's grid shrinks (cheaper), the output keeps the image's size
    q = psa.random_walk(aff, img, cam, logt=3, long_side=96)
    assert q.shape == p.shape and np.allclose(q.sum(0), 1, atol=1e-4) and q.min() >= 0
    assert not np.allclose(p, q, atol=1e-3)


VOC_LONG_SIDE = 500  # PASCAL VOC images are at most 500 px on their long side


@pytest.mark.parametrize("configfile", [None, "config/tiny.yaml", "config/voc2012_mini.yaml", "config/paper.yaml"])
def test_shipped_configs_walk_at_affinitynets_training_scale(configfile):
    """Issue 17: the random walk's scale lies in AffinityNet's training range for every shipped
    config (the old configs walked at the image's own ~500 px after training at 192-288 px),
    and a scale far from it is refused with a message naming the keys."""
    import yaml
    from conftest import REPO
    from snakemake.utils import update_config

    from ssdd_core.config import check_walk_scale, walk_scale_range

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if configfile:
        update_config(cfg, yaml.safe_load((REPO / configfile).read_text()))
    a = cfg["aff"]
    walk = cfg["psa"]["walk_long_side"] or VOC_LONG_SIDE
    lo, hi = walk_scale_range(a["crop"], a["scale_range"])
    assert lo <= walk <= hi, f"{configfile}: walk at {walk} px, AffinityNet trained at {lo:.0f}-{hi:.0f} px"
    assert check_walk_scale(walk, a["crop"], a["scale_range"]) is None
    msg = check_walk_scale(int(hi * 2), a["crop"], a["scale_range"], " (psa.walk_long_side)")
    assert "psa.walk_long_side" in msg and "aff.crop x aff.scale_range" in msg


def test_crf_valid_and_changes_input(real):
    img, gt, labels = real
    rng = np.random.default_rng(0)
    probs = rng.random((len(labels) + 1,) + img.shape[:2]).astype(np.float32)
    probs /= probs.sum(0)
    q = dense_crf(img, probs, CRFParams())
    assert q.shape == probs.shape and np.allclose(q.sum(0), 1, atol=1e-4) and q.min() >= 0
    assert np.abs(q - probs).mean() > 0.05
    # noisy label maps get smoother: fewer label changes between neighbours
    def edges(m):
        return (m[1:] != m[:-1]).sum() + (m[:, 1:] != m[:, :-1]).sum()

    assert edges(q.argmax(0)) < edges(probs.argmax(0)) / 2
    with pytest.raises(ValueError, match="probs"):
        dense_crf(img, probs[:, :10], CRFParams())


def test_affinity_labels_at_half_scale_match_full_scale(sample):
    """aff.label_scale 0.5 (CRF at half size) gives nearly the same stride-8 affinity labels."""
    from torchvision.transforms.functional import gaussian_blur

    i = sample.read_ids("train_aug")[5]
    img, gt, labels = sample.load_image(i), sample.load_mask(i), sample.image_labels(i).tolist()
    # a CAM-like map from the real mask: blurred class indicators, max-normalised
    ind = torch.stack([torch.from_numpy((gt == c).astype(np.float32)) for c in labels])
    cam = gaussian_blur(ind[:, None], [49, 49], [12.0, 12.0])[:, 0].numpy()
    cam /= cam.reshape(len(labels), -1).max(1)[:, None, None]
    h, w = (img.shape[0] // 8) * 8, (img.shape[1] // 8) * 8
    valid = torch.ones(h, w)
    labs = {}
    for scale in (1.0, 0.5):
        la = psa.affinity_label_scores(img, cam, 4, CRFParams(), scale)
        ha = psa.affinity_label_scores(img, cam, 32, CRFParams(), scale)
        assert la.shape == (len(labels) + 1,) + img.shape[:2] and np.allclose(la.sum(0), 1, atol=1e-3)
        labs[scale] = psa.labels_from_scores(torch.from_numpy(la[:, :h, :w]), torch.from_numpy(ha[:, :h, :w]), valid, 8)
    agree = (labs[1.0] == labs[0.5]).float().mean().item()
    assert agree > 0.85, agree
    assert len(set(labs[0.5].unique().tolist())) >= 2  # not a degenerate all-unknown map
    with pytest.raises(ValueError, match="scale"):
        psa.affinity_label_scores(img, cam, 4, CRFParams(), 0.0)


@pytest.mark.parametrize("radius, beta", [(3, 1.0), (5, 8.0)])
def test_transition_matrix_matches_a_dense_reference(radius, beta):
    """T = D⁻¹ A^β from a dense N×N computation written from the definition (PSA Eq. 3 / 9):
    a_ij = exp(−mean_k |f_ik − f_jk|) for the pixel pairs at Euclidean distance < radius, 1 on the
    diagonal; and 2^logt walk steps with the sparse T equal the dense matrix power."""
    g = torch.Generator().manual_seed(0)
    h, w, d = 7, 9, 4
    feat = torch.rand(1, d, h, w, generator=g) * 2
    f = feat[0].reshape(d, -1).t().double()  # (N, D)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    dist2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    a = torch.exp(-(f[:, None] - f[None]).abs().mean(-1))
    a = torch.where(dist2 < radius ** 2, a, torch.zeros_like(a)) ** beta
    a.fill_diagonal_(1.0)
    ref = a / a.sum(1, keepdim=True)
    T = psa.transition_matrix(feat, radius=radius, beta=beta)
    assert torch.allclose(T.to_dense().double(), ref, atol=1e-6)
    x = torch.rand(h * w, 3, generator=g)
    y = x.clone()
    for _ in range(2 ** 3):
        y = T @ y
    assert torch.allclose(y.double(), torch.linalg.matrix_power(ref, 8) @ x.double(), atol=1e-5)
