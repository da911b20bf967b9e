"""Eq. (7): energy, phi, the OOD loss, outlier preparation and the paired dataset."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ood_utils import models
from ood_utils.bood import regularize as R


def test_energy_is_logsumexp():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    assert torch.allclose(R.energy(logits), torch.tensor([math.log(2.0), 10.0]), atol=1e-4)


def test_phi_shapes():
    assert isinstance(R.build_phi(0), torch.nn.Linear)
    assert R.build_phi(16)(torch.zeros(3, 1)).shape == (3, 2)
    with pytest.raises(ValueError):
        R.build_phi(-1)


def test_ood_loss_is_eq7_binary_cross_entropy():
    torch.manual_seed(0)
    phi = R.build_phi(0)
    li, lo = torch.randn(5, 4), torch.randn(3, 4)
    e_in, e_out = R.energy(li), R.energy(lo)
    s_in = phi(e_in[:, None])   # two logits; their difference is the logit of "ID"
    s_out = phi(e_out[:, None])
    d_in, d_out = s_in[:, 1] - s_in[:, 0], s_out[:, 1] - s_out[:, 0]
    by_hand = torch.cat([-F.logsigmoid(d_in), -F.logsigmoid(-d_out)]).mean()
    assert torch.allclose(R.ood_loss(phi, li, lo), by_hand, atol=1e-6)


def test_bood_loss_combines_ce_and_beta():
    torch.manual_seed(0)
    model = R.RegularizedClassifier(models.build_model("mnist_cnn", 10), phi_hidden=0)
    x, y, xo = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)), torch.randn(4, 1, 28, 28)
    l0 = R.bood_loss(0.0)(model, (x, y, xo))
    l2 = R.bood_loss(2.0)(model, (x, y, xo))
    logits = model(torch.cat([x, xo]))
    reg = R.ood_loss(model.phi, logits[:4], logits[4:])
    assert torch.allclose(l0, F.cross_entropy(logits[:4], y), atol=1e-6)
    assert torch.allclose(l2, l0 + 2.0 * reg, atol=1e-5)
    with pytest.raises(ValueError):
        R.bood_loss(-1.0)


def test_prepare_resizes_not_crops_and_normalises():
    img = torch.zeros(1, 3, 64, 64)
    img[..., :32, :] = 1.0                       # top half white
    out = R.prepare_outliers(img, 32, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, 0, :14].mean(), torch.tensor(1.0)) and torch.allclose(out[0, 0, 18:].mean(), torch.tensor(-1.0))
    grey = R.prepare_outliers(torch.rand(2, 3, 28, 28), 28, 1, (0.1307,), (0.3081,))
    assert grey.shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.prepare_outliers(torch.full((1, 1, 28, 28), 2.0), 28, 1, (0.0,), (1.0,))
    with pytest.raises(ValueError, match="N, C, H, W"):
        R.prepare_outliers(torch.rand(28, 28), 28, 1, (0.0,), (1.0,))


def test_with_outliers_pairs_every_item():
    base = TensorDataset(torch.arange(6).float()[:, None], torch.arange(6))
    ds = R.WithOutliers(base, torch.full((3, 1), -1.0))
    x, y, xo = ds[2]
    assert len(ds) == 6 and y == 2 and xo.item() == -1.0
    with pytest.raises(ValueError, match="no outlier"):
        R.WithOutliers(base, torch.zeros(0, 1))


def test_regularized_classifier_exposes_features_and_head():
    base = models.build_model("mnist_cnn", 10)
    model = R.RegularizedClassifier(base, 16)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), base(x)) and models.unwrap_model(model) is model
    assert any(n.startswith("phi.") for n, _ in model.named_parameters())


def test_digest_changes_with_content():
    a = torch.zeros(2, 2)
    assert R.digest(a) == R.digest(a.clone()) != R.digest(a + 1)
