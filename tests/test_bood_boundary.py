"""Eq. (3) kappa, boundary selection, eqs. (4)-(5) synthesis: the batched code equals the per-feature loop."""
import pytest
import torch
import torch.nn.functional as F

from ood_utils import bood


def _ce_sign(z, y, g, t):
    z = z.clone().requires_grad_(True)
    logits = F.normalize(z, dim=0) @ F.normalize(g, dim=1).T / t
    loss = F.cross_entropy(logits[None], y[None])
    (grad,) = torch.autograd.grad(loss, z)
    return grad.sign()


def _pred(z, g):
    return int((F.normalize(z, dim=0) @ F.normalize(g, dim=1).T).argmax())


def loop_kappa(z, y, g, alpha, K, t):
    """The paper's description, one feature at a time."""
    out = []
    for zi, yi in zip(F.normalize(z, dim=1), y):
        k = 0
        while _pred(zi, g) == int(yi) and k < K:
            zi = zi + alpha * _ce_sign(zi, yi, g, t)
            k += 1
        out.append(k)
    return torch.tensor(out)


def loop_synth(z, y, g, alpha, c, K, t):
    kept, rows = [], []
    for i, (zi, yi) in enumerate(zip(F.normalize(z, dim=1), y)):
        k = 0
        while _pred(zi, g) == int(yi) and k < K:
            zi = zi + alpha * _ce_sign(zi, yi, g, t)
            k += 1
        if _pred(zi, g) == int(yi):
            continue
        for _ in range(c):
            zi = zi + alpha * _ce_sign(zi, yi, g, t)
        kept.append(zi)
        rows.append(i)
    return torch.stack(kept), rows


@pytest.fixture
def problem():
    torch.manual_seed(0)
    g = torch.randn(4, 12)
    y = torch.randint(0, 4, (60,))
    z = F.normalize(g, dim=1)[y] * torch.rand(60, 1) * 2 + torch.randn(60, 12) * 0.5
    return z, y, g


@pytest.mark.parametrize("alpha,t", [(0.015, 1.0), (0.05, 0.1)])
def test_kappa_equals_the_per_feature_loop(problem, alpha, t):
    z, y, g = problem
    kappa = bood.boundary_steps(z, y, g, alpha=alpha, max_steps=100, temperature=t)
    assert torch.equal(kappa, loop_kappa(z, y, g, alpha, 100, t))
    assert kappa.min() >= 0 and kappa.max() <= 100
    assert len(kappa.unique()) > 2


def test_kappa_zero_when_already_wrong_and_capped(problem):
    z, y, g = problem
    wrong = (bood.predict(F.normalize(z, dim=1), g) != y)
    kappa = bood.boundary_steps(z, y, g, alpha=1e-4, max_steps=3)
    assert (kappa[wrong] == 0).all() and (kappa[~wrong] == 3).all()


def test_synthesis_equals_the_loop_and_crosses(problem):
    z, y, g = problem
    z_ood, crossed = bood.synthesize(z, y, g, alpha=0.05, extra_steps=2, max_steps=100)
    ref, rows = loop_synth(z, y, g, 0.05, 2, 100, 1.0)
    assert crossed.nonzero().squeeze(1).tolist() == rows
    assert torch.allclose(z_ood, ref, atol=1e-6)
    assert (bood.predict(z_ood, g) != y[crossed]).float().mean() > 0.5


def test_never_crossing_features_are_dropped_with_a_count(problem):
    z, y, g = problem
    kappa = bood.boundary_steps(z, y, g, alpha=0.015, max_steps=100)
    K = int(kappa.float().median())
    with pytest.warns(RuntimeWarning, match=r"\d+ of 60 features never crossed"):
        z_ood, crossed = bood.synthesize(z, y, g, alpha=0.015, extra_steps=0, max_steps=K)
    assert len(z_ood) == int(crossed.sum()) < 60


def test_all_dropped_says_k_is_too_small(problem):
    z, y, g = problem
    ok = bood.predict(F.normalize(z, dim=1), g) == y
    with pytest.raises(bood.BoundaryError, match="K is too small"):
        bood.synthesize(z[ok], y[ok], g, alpha=1e-5, max_steps=1)


def test_selection_per_class_with_index_tie_break_without_margins():
    kappa = torch.tensor([3, 1, 1, 2, 1, 5, 5, 5, 5, 5])
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert bood.select_boundary(kappa, y, ratio=40).tolist() == [1, 2, 5, 6]   # 2 of each class, ties by index
    assert bood.select_boundary(kappa, y, ratio=20).tolist() == [1, 5]


def test_selection_ties_broken_by_margin_then_index():
    kappa = torch.tensor([3, 1, 1, 2, 1, 5, 5, 5, 5, 5])
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    margin = torch.tensor([0.1, 0.3, 0.2, 0.0, 0.1, 0.4, 0.4, 0.1, 0.2, 0.4])
    # class 0: kappa 1 at 1, 2, 4 -> smallest margins 4 (0.1), 2 (0.2); class 1: margins 7 (0.1), 8 (0.2)
    assert bood.select_boundary(kappa, y, ratio=40, margin=margin).tolist() == [2, 4, 7, 8]
    # equal margins fall back to the index; kappa always comes first
    assert bood.select_boundary(kappa, y, ratio=60, margin=torch.zeros(10)).tolist() == [1, 2, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="one value per feature"):
        bood.select_boundary(kappa, y, ratio=40, margin=torch.zeros(3))


def test_misclassified_features_are_not_boundary_features():
    kappa = torch.tensor([0, 0, 2, 1, 3, 4])
    y = torch.zeros(6, dtype=torch.long)
    assert bood.select_boundary(kappa, y, ratio=50).tolist() == [2, 3, 4]
    assert bood.select_boundary(kappa, y, ratio=50, skip_misclassified=False).tolist() == [0, 1, 3]
    # the share r is of the whole class: fewer correct features than slots keeps them all
    assert bood.select_boundary(torch.tensor([0, 0, 0, 7]), torch.zeros(4, dtype=torch.long), ratio=75).tolist() == [3]
    with pytest.raises(bood.BoundaryError, match="correctly classified"):
        bood.select_boundary(torch.zeros(4), torch.zeros(4, dtype=torch.long), ratio=50)


def test_class_margin_is_the_gap_to_the_best_other_class():
    g = torch.eye(3)
    z = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1]])
    m = bood.class_margin(z, torch.tensor([0, 0]), g)
    zn = F.normalize(z, dim=1)
    assert torch.allclose(m, torch.stack([zn[0, 0] - zn[0, 1], zn[1, 0] - zn[1, 1]]))
    assert m[0] > 0 > m[1]


def test_boundary_features_match_their_parts(problem):
    z, y, g = problem
    idx, kappa = bood.boundary_features(z, y, g, ratio=25, alpha=0.05)
    assert torch.equal(kappa, bood.boundary_steps(z, y, g, alpha=0.05))
    assert torch.equal(idx, bood.select_boundary(kappa, y, 25, len(g), margin=bood.class_margin(z, y, g)))
    assert (kappa[idx] > 0).all()


def test_calibrated_step_gives_the_target_median(problem):
    z, y, g = problem
    alpha = bood.calibrate_step(z, y, g, target_median=10, max_steps=100)
    ok = bood.predict(F.normalize(z, dim=1), g) == y
    median = lambda a: float(bood.boundary_steps(z[ok], y[ok], g, alpha=a, max_steps=100).float().median())
    assert 8 <= median(alpha) <= 12
    assert median(alpha / 4) > median(alpha) > median(alpha * 4)
    assert alpha == bood.calibrate_step(z, y, g, target_median=10, max_steps=100)     # deterministic
    with pytest.raises(ValueError, match="target_median"):
        bood.calibrate_step(z, y, g, target_median=100, max_steps=100)


def test_empty_selection_raises():
    with pytest.raises(bood.BoundaryError, match="raise r"):
        bood.select_boundary(torch.ones(10), torch.zeros(10, dtype=torch.long), ratio=5)
    with pytest.raises(ValueError, match="percentage"):
        bood.select_boundary(torch.zeros(10), torch.zeros(10, dtype=torch.long), ratio=0)


def test_rescale_normalises_first():
    g = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    z = torch.tensor([[10.0, 0.0], [1.0, 1.0]])
    out = bood.rescale_to_anchors(z, torch.tensor([1, 0]), g)
    assert torch.allclose(out.norm(dim=1), torch.tensor([0.5, 3.0]))
    assert torch.allclose(F.normalize(out, dim=1), F.normalize(z, dim=1))


def test_boundary_outliers_end_to_end(problem):
    z, y, g = problem
    out = bood.boundary_outliers(z, y, g, ratio=25, alpha=0.05, extra_steps=1)
    kappa = bood.boundary_steps(z, y, g, alpha=0.05)
    again = bood.boundary_outliers(z, y, g, ratio=25, alpha=0.05, extra_steps=1, kappa=kappa)
    assert torch.equal(again.source, out.source) and torch.equal(again.z, out.z)
    assert len(out) == out.n_selected - out.n_dropped > 0
    assert torch.allclose(out.z.norm(dim=1), g.norm(dim=1)[out.labels], atol=1e-5)
    assert torch.equal(out.labels, y[out.source])


def test_shape_errors():
    with pytest.raises(ValueError, match="same D"):
        bood.boundary_steps(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), torch.randn(2, 5))
    with pytest.raises(ValueError, match="one label per feature"):
        bood.boundary_steps(torch.randn(3, 4), torch.zeros(2, dtype=torch.long), torch.randn(2, 4))
    with pytest.raises(ValueError, match="max_steps"):
        bood.boundary_steps(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), torch.randn(2, 4), max_steps=0)


def test_premise_counts_ties_and_misclassified(problem):
    from ood_utils.bood import walks

    z, y, g = problem
    literal = walks.premise(z, y, g, 0.2, 100, 25, margin_ties=False, skip_misclassified=False)
    kept = walks.premise(z, y, g, 0.2, 100, 25)
    kappa = bood.boundary_steps(z, y, g, alpha=0.2)
    assert literal["misclassified in training"] == int((kappa == 0).sum()) > 0
    assert literal["misclassified selected"] > 0 and kept["misclassified selected"] == 0
    assert literal["distinct kappa"] == len(kappa.unique())
    assert 0 <= kept["selected by a tie-break"] <= kept["selected"]
    assert walks.premise(z, y, g, 0.005, 100, 25)["median kappa"] > literal["median kappa"]


def test_confident_other_and_pick_walks():
    from ood_utils.bood import walks

    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 0.2]]).numpy()
    assert walks.confident_other(logits, [0, 0, 0]).tolist() == [0.0, 1.0, 0.0]   # the third is unsure
    kappa = torch.tensor([3, 9, 30, 5, 0, 7])
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    assert walks.pick_walks(kappa, y, 3, max_kappa=25).tolist() == [1, 5, 3]          # longest first, one per class
    assert walks.pick_walks(kappa, y, 3, max_kappa=25, candidates=[0, 3]).tolist() == [3, 0]
