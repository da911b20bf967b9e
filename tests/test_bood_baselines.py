"""Ablation generators (Tables 3, 6) and DreamOOD's sampler: shapes, what they select, how far they move."""
import pytest
import torch
import torch.nn.functional as F

from ood_utils import bood
from ood_utils.bood import baselines as B


@pytest.fixture
def problem():
    torch.manual_seed(0)
    g = torch.randn(3, 10)
    y = torch.arange(90) % 3
    z = F.normalize(g, dim=1)[y] * (0.5 + torch.rand(90, 1)) + 0.4 * torch.randn(90, 10)
    return z, y, g


def test_boundary_only_is_the_selected_features_unmoved(problem):
    z, y, g = problem
    out = B.boundary_only(z, y, g, ratio=20, alpha=0.05)
    assert torch.equal(out.source, bood.boundary_features(z, y, g, 20, alpha=0.05)[0])
    assert torch.allclose(F.normalize(out.z, dim=1), F.normalize(z[out.source], dim=1), atol=1e-6)


def test_random_selection_matches_counts_and_is_seeded(problem):
    _, y, _ = problem
    a, b = B.random_selection(y, 20, 3, seed=1), B.random_selection(y, 20, 3, seed=1)
    assert torch.equal(a, b) and torch.bincount(y[a]).tolist() == [6, 6, 6]
    assert not torch.equal(a, B.random_selection(y, 20, 3, seed=2))


def test_random_then_perturb_crosses(problem):
    z, y, g = problem
    out = B.random_then_perturb(z, y, g, ratio=20, alpha=0.05, extra_steps=1)
    assert len(out) > 0 and (bood.predict(out.z, g) != out.labels).float().mean() > 0.5


@pytest.mark.parametrize("method", ["gaussian_noise", "away_from_centroids"])
def test_table6_variants_move_by_the_given_distance(problem, method):
    z, y, g = problem
    fn = getattr(B, method)
    out = fn(z, y, g, 0.3, ratio=20, alpha=0.05)
    moved = (F.normalize(out.z, dim=1) - F.normalize(z, dim=1)[out.source])
    assert len(out) == 18
    if method == "away_from_centroids":
        zn = F.normalize(z, dim=1)
        mu = B.class_centroids(zn, y, 3)
        before = (zn[out.source] - mu[out.labels]).norm(dim=1)
        after = (zn[out.source] + 0.3 * F.normalize(zn[out.source] - mu[out.labels], dim=1) - mu[out.labels]).norm(dim=1)
        assert torch.allclose(after - before, torch.full_like(before, 0.3), atol=1e-5)
    assert torch.isfinite(moved).all()


def test_gaussian_noise_is_seeded_isotropic_noise_of_that_length():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(3000, 64), dim=1)
    y = torch.arange(3000) % 2
    g = torch.randn(2, 64)
    out = B.gaussian_noise(z, y, g, 0.5, ratio=100, max_steps=1, seed=3)
    noise = torch.randn(len(out), 64, generator=torch.Generator().manual_seed(3)) * (0.5 / 8)
    assert abs(noise.norm(dim=1).mean() - 0.5) < 0.02
    assert torch.allclose(F.normalize(out.z, dim=1), F.normalize(z[out.source] + noise, dim=1), atol=1e-5)


def test_knn_distance_excludes_self():
    bank = torch.tensor([[0.0], [1.0], [3.0]])
    assert torch.allclose(B.knn_distance(bank, bank, 1, exclude_self=True), torch.tensor([1.0, 1.0, 2.0]))
    assert torch.allclose(B.knn_distance(bank, bank, 1), torch.zeros(3))


def test_dreamood_picks_low_density_anchors_and_far_candidates(problem):
    z, y, g = problem
    out = B.dreamood(z, y, g, ratio=20, k=5, sigma=0.05, n_candidates=10)
    assert len(out) == 18 and out.method == "DreamOOD"
    zn = F.normalize(z, dim=1)
    for c in range(3):
        members = (y == c).nonzero().squeeze(1)
        dens = B.knn_distance(zn[members], zn[members], 5, exclude_self=True)
        chosen = out.source[out.labels == c]
        threshold = dens.sort(descending=True).values[5]
        assert (B.knn_distance(zn[chosen], zn[members], 5, exclude_self=True) >= threshold).all()
    assert torch.allclose(out.z.norm(dim=1), g.norm(dim=1)[out.labels], atol=1e-5)


def test_mean_walk_distance_positive(problem):
    z, y, g = problem
    assert B.mean_walk_distance(z, y, g, ratio=20, alpha=0.05) > 0
