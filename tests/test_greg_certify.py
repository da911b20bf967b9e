"""Eq. (4) certified radius: linear regions of a ReLU net, Lipschitz estimates, the certificate holds."""
import pytest
import torch
import torch.nn as nn

from ood_utils import greg
from ood_utils.greg import certify
from ood_utils.greg.toy import ToyMLP


def _net(seed=0):
    torch.manual_seed(seed)
    return ToyMLP(hidden=16).double().eval()


def _points(n=20, seed=1):
    return 2 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_linear_region_jacobian_and_radius():
    model, x = _net(), _points()
    jac, radius = certify.linear_region(model, x)
    auto = torch.stack([torch.autograd.functional.jacobian(model, xi[None])[0, :, 0] for xi in x])
    torch.testing.assert_close(jac, auto)
    assert (radius > 0).all()
    # inside the region the network is exactly affine: f(x + d) = f(x) + A d
    d = torch.randn(len(x), 2, dtype=torch.float64)
    d = 0.99 * radius[:, None] * d / d.norm(dim=1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x + d), model(x) + (jac @ d[..., None])[..., 0])


def test_region_radius_is_a_certificate():
    """Every point within the 'region' radius of a detected ID point is still detected as ID."""
    model, x = _net(), _points(40)
    with torch.no_grad():
        gamma = greg.energy_score(model(x)).median().item()
    cert = certify.certified_radius(model, x, gamma, eps=1.0, side="id", estimate="region")
    inside = cert["s"] < gamma
    assert inside.sum() >= 10 and (cert["radius"][inside] > 0).all()
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        d = torch.randn(len(x), 2, generator=g, dtype=torch.float64)
        moved = x + cert["radius"][:, None] * d / d.norm(dim=1, keepdim=True)
        with torch.no_grad():
            s = greg.energy_score(model(moved))
        assert (s[cert["detected"]] <= gamma + 1e-9).all()


def test_eq4_by_hand_with_the_gradient_estimate():
    model, x = _net(), _points()
    with torch.no_grad():
        s = greg.energy_score(model(x))
    gamma, eps = s.median().item(), 0.3
    _, norms = greg.scores_and_gradient_norms(model, x)
    expected = torch.where(s <= gamma, torch.minimum(torch.full_like(s, eps), (gamma - s) / norms), 0 * s)
    got = certify.certified_radius(model, x, gamma, eps, side="id", estimate="gradient")
    torch.testing.assert_close(got["radius"], expected)
    ood = certify.certified_radius(model, x, gamma, eps, side="ood", estimate="gradient")
    assert ((ood["radius"] > 0) == (s > gamma)).all()


def test_sampled_estimate_is_at_least_the_gradient_at_the_point():
    model, x = _net(), _points()
    _, at_x = greg.scores_and_gradient_norms(model, x)
    sampled = certify.sampled_lipschitz(model, x, eps=0.5, n_samples=32)
    assert (sampled >= at_x).all() and (sampled > at_x).any()
    inside = certify.sample_ball(x[:3], 0.5, 500, torch.Generator().manual_seed(0))
    assert ((inside - x[:3, None]).norm(dim=2) <= 0.5 + 1e-12).all()


def test_bad_arguments_are_refused():
    model, x = _net(), _points()
    with pytest.raises(ValueError, match="valid: gradient, sampled, region"):
        certify.certified_radius(model, x, 0.0, 0.5, estimate="exact")
    with pytest.raises(ValueError, match="side"):
        certify.certified_radius(model, x, 0.0, 0.5, side="both")
    with pytest.raises(ValueError, match="eps"):
        certify.certified_radius(model, x, 0.0, 0.0)
    tanh_net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="Linear and ReLU"):
        certify.linear_region(tanh_net, x)


def test_steepest_flip_crosses_when_the_tangent_says_so():
    """Inside a linear region S = -LSE(Ax + b) is concave, so it lies below its tangent: a step along -grad S
    longer than (S - gamma) / ||grad S|| (and inside the region) must cross the threshold."""
    model, x = _net(), _points(10)
    s, norms = greg.scores_and_gradient_norms(model, x)
    _, region = certify.linear_region(model, x)
    for i in range(len(x)):
        gamma = (s[i] - 0.5 * region[i] * norms[i]).item()     # crossing needs half the region's radius
        need = (s[i].item() - gamma) / norms[i].item()
        assert certify.steepest_flip(model, x[i:i + 1], gamma, 1.01 * need, side="ood").item()
        assert not certify.steepest_flip(model, x[i:i + 1], gamma, 0.5 * need, side="ood").item()
