"""ood_utils.metrics: agreement with scikit-learn (random and heavily tied scores), hand-computed cases,
input validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ood_utils import metrics


def _sklearn_fpr_at_tpr(id_scores, ood_scores, tpr=0.95):
    """Reference: the first point of the full ROC curve (ID positive) whose TPR reaches ``tpr``."""
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    fpr, tprs, _ = roc_curve(y, np.r_[id_scores, ood_scores], drop_intermediate=False)
    return fpr[np.searchsorted(tprs, tpr, side="left")]


def _cases():
    """(id, ood) pairs: continuous scores, integer scores 0..3 (many ties), unbalanced and tiny sizes."""
    rng = np.random.default_rng(1234)
    cases = []
    for i in range(60):
        n_in, n_out = rng.integers(1, 300, size=2)
        if i % 3 == 0:
            cases.append((rng.normal(1.0, 1.0, n_in), rng.normal(0.0, 1.5, n_out)))
        elif i % 3 == 1:
            cases.append((rng.integers(0, 4, n_in).astype(float), rng.integers(0, 4, n_out).astype(float)))
        else:  # ties between ID and OOD but also mostly separated
            cases.append((np.round(rng.normal(2, 1, n_in), 1), np.round(rng.normal(0, 1, n_out), 1)))
    cases.append((np.arange(20.0), np.arange(20.0)))           # n_id = 20: 95% is exactly 19 images
    cases.append((np.full(7, 3.0), np.full(5, 3.0)))            # everything tied
    return cases


CASES = _cases()


@pytest.mark.parametrize("i", range(len(CASES)))
def test_agrees_with_sklearn(i):
    s_in, s_out = CASES[i]
    y = np.r_[np.ones(s_in.size), np.zeros(s_out.size)]
    s = np.r_[s_in, s_out]
    assert metrics.auroc(s_in, s_out) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.aupr_in(s_in, s_out) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert metrics.aupr_out(s_in, s_out) == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    for tpr in (0.95, 0.9, 0.5, 1.0):
        assert metrics.fpr_at_tpr(s_in, s_out, tpr) == pytest.approx(_sklearn_fpr_at_tpr(s_in, s_out, tpr), abs=1e-12)
    fpr, tprs = metrics.roc_curve(s_in, s_out)
    ref_fpr, ref_tpr, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tprs, ref_tpr)


def test_evaluate_returns_the_four_fractions():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1, 1, 500), rng.normal(0, 1, 400)
    m = metrics.evaluate(s_in, s_out)
    assert list(m) == ["auroc", "fpr95", "aupr_in", "aupr_out"]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in m.values())
    assert m["auroc"] == metrics.auroc(s_in, s_out)
    assert m["fpr95"] == metrics.fpr_at_tpr(s_in, s_out, 0.95)


# ------------------------------------------------------------------------------------------ hand cases

def test_auroc_hand_cases():
    assert metrics.auroc([1, 2, 3], [0]) == 1.0
    assert metrics.auroc([0], [1, 2]) == 0.0
    assert metrics.auroc([1], [1]) == 0.5                    # a tie counts one half
    assert metrics.auroc([1, 2], [1]) == 0.75                # (1/2 + 1) / 2
    assert metrics.auroc([0, 2], [1, 1]) == 0.5              # (0 + 0 + 1 + 1) / 4
    a, b = np.array([3.0, 1, 2, 2]), np.array([2.0, 0, 5])
    assert metrics.auroc(a, b) + metrics.auroc(b, a) == pytest.approx(1.0)


def test_fpr_at_tpr_hand_cases():
    # 20 ID scores 1..20: keeping 95% = 19 images puts the threshold at 2.
    s_in = np.arange(1.0, 21.0)
    assert metrics.fpr_at_tpr(s_in, [1.5, 2.0, 3.0]) == pytest.approx(2 / 3)   # 2.0 is accepted (>=)
    assert metrics.fpr_at_tpr(s_in, [1.99]) == 0.0
    assert metrics.fpr_at_tpr(s_in, [0.0, 1.0], tpr=1.0) == 0.5                 # threshold = min ID = 1
    # Ties at the threshold: 10 ID at 5 and 10 at 1; 95% needs the 1s too, so the threshold is 1 and
    # every ID image is kept (TPR 100%); OOD at 1 is accepted.
    s_in = np.r_[np.full(10, 5.0), np.full(10, 1.0)]
    assert metrics.fpr_at_tpr(s_in, [1, 1, 0, 0]) == 0.5
    assert metrics.fpr_at_tpr(s_in, [1, 1, 0, 0], tpr=0.5) == 0.0               # 50% is reached at 5
    # One ID image: the threshold is its score.
    assert metrics.fpr_at_tpr([2.0], [2.0, 1.0, 3.0]) == pytest.approx(2 / 3)
    # Perfect separation and complete overlap.
    assert metrics.fpr_at_tpr([5, 6, 7], [1, 2]) == 0.0
    assert metrics.fpr_at_tpr([1, 1, 1], [1, 1]) == 1.0


def test_aupr_hand_cases():
    assert metrics.aupr_in([1.0], [0.0]) == 1.0
    assert metrics.aupr_in([0.0], [1.0]) == 0.5              # ranked second: precision 1/2 at recall 1
    assert metrics.aupr_out([0.0], [1.0]) == 0.5             # OOD positive, negated scores
    assert metrics.aupr_out([1.0], [0.0]) == 1.0
    # ID [3, 1], OOD [2]: ranking 3(ID) 2(OOD) 1(ID): AP = 1/2 * 1 + 1/2 * 2/3.
    assert metrics.aupr_in([3.0, 1.0], [2.0]) == pytest.approx(0.5 + 1 / 3)
    # All tied: one threshold, precision = prevalence.
    assert metrics.aupr_in([1.0, 1.0, 1.0], [1.0]) == pytest.approx(0.75)


def test_roc_curve_endpoints():
    fpr, tpr = metrics.roc_curve([1.0, 2.0, 3.0], [0.0, 2.0])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_accuracy():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    assert metrics.accuracy(logits, [0, 1, 2, 2]) == 0.75
    assert metrics.accuracy(np.array([0, 1, 1]), np.array([0, 1, 2])) == pytest.approx(2 / 3)
    assert metrics.accuracy([1, 2], np.array([1.0, 2.0])) == 1.0            # integral floats are fine
    torch = pytest.importorskip("torch")
    assert metrics.accuracy(torch.tensor(logits), torch.tensor([0, 1, 2, 0])) == 1.0


def test_accuracy_rejects_bad_input():
    with pytest.raises(ValueError, match="predictions but"):
        metrics.accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.accuracy([0, 1], [0.5, 1.0])
    with pytest.raises(ValueError, match="shape"):
        metrics.accuracy(np.zeros((2, 2, 2)), [0, 1])
    with pytest.raises(ValueError, match="non-empty"):
        metrics.accuracy([], [])


def test_mean_std():
    assert metrics.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, math.sqrt(2 / 3)))
    assert metrics.mean_std([1.0, 2.0, 3.0], ddof=1) == pytest.approx((2.0, 1.0))
    assert metrics.mean_std([0.7]) == (0.7, 0.0)
    assert metrics.mean_std([0.7], ddof=1) == (0.7, 0.0)
    assert metrics.mean_std(v for v in (1.0, 3.0)) == (2.0, 1.0)            # any iterable
    with pytest.raises(ValueError, match="empty"):
        metrics.mean_std([])
    with pytest.raises(ValueError, match="non-finite"):
        metrics.mean_std([1.0, float("nan")])


# ------------------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("fn", [metrics.auroc, metrics.fpr_at_tpr, metrics.aupr_in, metrics.aupr_out,
                                metrics.evaluate, metrics.roc_curve])
def test_scores_are_validated(fn):
    good = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros((3, 2)), good)
    with pytest.raises(ValueError, match="empty"):
        fn(good, [])
    with pytest.raises(ValueError, match="non-finite"):
        fn(good, [0.1, np.nan])
    with pytest.raises(ValueError, match="non-finite"):
        fn([np.inf, 0.0], good)
    with pytest.raises(ValueError, match="numeric"):
        fn(["a", "b"], good)
    with pytest.raises(ValueError, match="ood_scores"):
        fn(good, [[1.0]])


@pytest.mark.parametrize("tpr", [0.0, -0.1, 1.5, 95, "0.95"])
def test_tpr_is_validated(tpr):
    with pytest.raises(ValueError, match="tpr"):
        metrics.fpr_at_tpr([1.0, 2.0], [0.0], tpr=tpr)


def test_accepts_lists_ints_and_bools():
    assert metrics.auroc([1, 2, 3], [0, 1]) == pytest.approx(roc_auc_score([1, 1, 1, 0, 0], [1, 2, 3, 0, 1]))
    assert metrics.auroc(np.array([True, True]), np.array([False, True])) == 0.75
