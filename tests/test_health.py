"""Health checks of training runs: each check passes on a healthy run and fails on a constructed failing one."""
import numpy as np
import pytest

from ood_utils import health


def test_accuracy_check():
    assert health.accuracy_check(0.97, 0.98).passed
    c = health.accuracy_check(0.653, 0.982)
    assert not c.passed and "drop 0.329" in c.detail


def test_spread_check_catches_a_collapsed_score():
    rng = np.random.default_rng(0)
    base = rng.normal(13, 4.3, 500)
    assert health.spread_check(rng.normal(10, 3.0, 500), base).passed
    collapsed = health.spread_check(rng.normal(7, 0.14, 500), base)
    assert not collapsed.passed and "score std on ID" in collapsed.detail
    assert health.spread_check(rng.normal(0, 1, 50), min_std=0.5).passed
    with pytest.raises(ValueError, match="base_id_scores or min_std"):
        health.spread_check([1.0, 2.0])


def test_separation_check():
    rng = np.random.default_rng(1)
    assert health.separation_check(rng.normal(2, 1, 300), rng.normal(0, 1, 300)).passed
    inverted = health.separation_check(rng.normal(0, 1, 300), rng.normal(0.6, 1, 300))
    assert not inverted.passed and inverted.value < 0.5
    assert not health.separation_check([1.0, np.nan], [0.0]).passed


def test_loss_check():
    assert health.loss_check(np.linspace(2.0, 0.5, 50)).passed
    assert not health.loss_check(np.linspace(0.5, 2.0, 50)).passed
    assert not health.loss_check([1.0, np.inf, 0.5]).passed


def test_health_bundle_reason_and_round_trip():
    h = health.assess("run a", [health.accuracy_check(0.5, 0.98), health.loss_check([2.0, 1.0])])
    assert not h.ok and h.reason.startswith("ID accuracy 0.500") and "FAILED" in str(h)
    assert health.Health.from_json(h.to_json()) == h
    assert len(h.rows()) == 2 and h.rows()[0]["run"] == "run a"
    ok = health.assess("run b", [health.loss_check([2.0, 1.0])])
    assert health.failure_diagnosis([ok, None]) == ""
    assert health.failure_diagnosis([ok, h]).startswith("training failed: run a: ID accuracy")
    with pytest.raises(ValueError):
        health.assess("empty", [])
