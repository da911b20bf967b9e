"""Energy-based sampling (Algorithm 1), torch K-Means against scikit-learn, DOS and POEM samplers."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ood_utils import greg
from ood_utils.greg import sampling
from ood_utils.models import build_model


def _blobs(n=600, d=16, centers=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = 4 * torch.randn(centers, d, generator=g)
    return c[torch.randint(centers, (n,), generator=g)] + torch.randn(n, d, generator=g)


@pytest.mark.parametrize("k, centers, seed", [(12, 12, 0), (32, 32, 1), (5, 5, 2), (32, None, 3)])
def test_kmeans_matches_scikit_learn_inertia(k, centers, seed):
    """Blobs with k centers, and unstructured unit vectors (what normalised features of a pool look like)."""
    from sklearn.cluster import KMeans

    if centers is None:
        x = F.normalize(torch.randn(384, 64, generator=torch.Generator().manual_seed(seed)), dim=1)
    else:
        x = _blobs(centers=centers, seed=seed)
    ours = greg.kmeans(x, k, n_init=3, seed=seed)
    ref = KMeans(k, n_init=3, random_state=seed).fit(x.numpy())
    assert ours.inertia <= ref.inertia_ * 1.01
    # the reported inertia is the one of the returned labels and centers
    recomputed = ((x - ours.centers[ours.labels]) ** 2).sum().item()
    assert ours.inertia == pytest.approx(recomputed, rel=1e-4)
    assert len(torch.unique(ours.labels)) == k


def test_kmeans_checks_its_arguments():
    with pytest.raises(ValueError, match="k <= number of points"):
        greg.kmeans(torch.randn(5, 2), 6)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        greg.kmeans(torch.randn(5), 2)


def test_energy_cluster_sample_takes_both_extremes_of_every_cluster():
    feats = _blobs(n=300, seed=3)
    energies = torch.randn(300, generator=torch.Generator().manual_seed(4))
    k, n_select = 12, 30
    picked = greg.energy_cluster_sample(feats, energies, k, n_select, seed=5)
    labels = greg.kmeans(F.normalize(feats, dim=1), k, seed=5).labels
    assert len(picked) == n_select and len(torch.unique(picked)) == n_select
    for c in range(k):
        members = (labels == c).nonzero().squeeze(1)
        assert members[energies[members].argmin()] in picked
        assert members[energies[members].argmax()] in picked


def test_cluster_extremes_by_hand():
    labels = torch.tensor([0, 1, 0, 1, 2, 0])
    energies = torch.tensor([3.0, -1.0, -2.0, 5.0, 0.0, 1.0])
    low, high = sampling.cluster_extremes(labels, energies)
    assert low.tolist() == [2, 1, 4] and high.tolist() == [0, 3, 4]


def test_pool_smaller_than_k_is_refused():
    with pytest.raises(ValueError, match="smaller than k=8"):
        greg.energy_cluster_sample(torch.randn(5, 3), torch.randn(5), 8)
    with pytest.raises(ValueError, match="smaller than k"):
        greg.dos_sample(torch.randn(5, 3), torch.randn(5), 8)


def test_dos_takes_the_most_id_like_outlier_per_cluster():
    feats = _blobs(n=200, seed=6)
    energies = torch.randn(200, generator=torch.Generator().manual_seed(7))
    picked = greg.dos_sample(feats, energies, 10, seed=1)
    labels = greg.kmeans(F.normalize(feats, dim=1), 10, seed=1).labels
    assert len(picked) == 10
    assert set(picked.tolist()) == {(labels == c).nonzero().squeeze(1)[energies[labels == c].argmin()].item()
                                    for c in range(10)}


def test_samplers_pick_twice_the_id_batch_from_a_pool():
    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10)
    model.train()
    x_in, pool = torch.rand(8, 1, 28, 28), torch.rand(48, 1, 28, 28)
    for name in ("random", "energy_cluster", "dos", "poem"):
        idx = greg.make_sampler(name, seed=0)(model, pool, x_in)
        assert len(idx) == 16 and len(torch.unique(idx)) == 16 and int(idx.max()) < 48, name
    assert model.training   # the sampler's eval-mode forward leaves the mode as it was
    with pytest.raises(ValueError, match="smaller than the 16"):
        greg.make_sampler("energy_cluster")(model, pool[:10], x_in)


def test_unknown_sampler_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: none, random, energy_cluster, dos, poem"):
        greg.make_sampler("kmeans++")


def test_poem_posterior_learns_the_boundary_and_mines_id_like_outliers():
    """Features: ID near +e1, outliers spread along e1; the posterior mean must score ID above outliers,
    and the mined outliers must be the ones closest to the ID side."""
    sampler = greg.PosteriorSampler(seed=0, forget=1.0)
    g = torch.Generator().manual_seed(0)
    d = 6
    for _ in range(20):
        h_in = F.pad(F.normalize(torch.randn(16, d, generator=g) * 0.1 + torch.eye(d)[0], dim=1), (0, 1), value=1.)
        h_out = F.pad(F.normalize(torch.randn(16, d, generator=g) * 0.1 - torch.eye(d)[0], dim=1), (0, 1), value=1.)
        if sampler.precision is None:
            sampler._draw(d + 1)
        sampler.update(torch.cat([h_in, h_out]).double(), torch.cat([torch.ones(16), -torch.ones(16)]).double())
    mean = torch.linalg.solve(sampler.precision, sampler.xty)
    t = torch.linspace(-1, 1, 21)
    pool = torch.stack([t, torch.sqrt(1 - t ** 2), *[torch.zeros(21)] * (d - 2), torch.ones(21)], 1).double()
    scores = pool @ mean
    assert (scores[1:] >= scores[:-1]).all()       # more ID-like (larger e1) -> higher boundary score
    draws = torch.stack([pool @ sampler._draw(d + 1) for _ in range(50)])
    assert np.corrcoef(draws.mean(0).numpy(), t.numpy())[0, 1] > 0.9
