"""The 2D toy: data, training with the package's objectives, evaluation, the cached experiments."""
import math
import warnings

import numpy as np
import pytest
import torch

from ood_utils.greg import toy


def test_toy_data_is_reproducible_and_where_it_should_be():
    a, b = toy.make_toy(seed=3), toy.make_toy(seed=3)
    assert torch.equal(a.x_aux, b.x_aux) and torch.equal(a.x_near, b.x_near)
    r = lambda x: x.norm(dim=1)  # noqa: E731
    assert (r(a.x_aux) >= 3.5).all() and (r(a.x_aux) <= 6).all()
    assert (r(a.x_far) >= 7).all() and (r(a.x_far) <= 9).all()
    assert set(a.y_in.tolist()) == {0, 1, 2} and a.x_in.shape == (400, 2)
    with pytest.raises(ValueError, match="at least 3"):
        toy.make_toy(n_id=2)


def test_train_toy_logs_fig3_curves_and_learns():
    data = toy.make_toy(n_id=90, n_aux=90, n_ood=30)
    model, hist = toy.train_toy(data, lambda_grad=1.0, m_in=-8, m_aux=-3, steps=60, log_every=5)
    assert hist["step"].tolist() == [1, *range(5, 61, 5)]
    assert np.isfinite(hist["energy_loss"]).all() and np.isfinite(hist["grad_norm"]).all()
    assert hist["energy_loss"][-1] < hist["energy_loss"][0]
    ev = toy.evaluate(model, data)
    assert 0 <= ev["auroc_near"] <= 1 and ev["radius_near_sampled"] >= 0 and 0 <= ev["flip_rate_near"] <= 1
    with pytest.raises(ValueError, match="wrong order"):
        toy.train_toy(data, lambda_grad=1.0, m_in=-3, m_aux=-8, steps=1)


def test_cached_computes_once_and_rebuilds_a_corrupt_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3), "v": 1.5}

    assert toy.cached("t", {"a": 1}, compute)["v"] == 1.5
    assert toy.cached("t", {"a": 1}, compute)["v"] == 1.5 and len(calls) == 1
    toy.cached("t", {"a": 2}, compute)
    assert len(calls) == 2
    path = next(tmp_path.glob("greg/toy/t_*.pt"))
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning, match="unusable"):
        toy.cached("t", {"a": 1} if "a" in path.name else {"a": 1}, compute)
    files = sorted(tmp_path.glob("greg/toy/t_*.pt"))
    assert len(files) == 2 and not list(tmp_path.glob("greg/toy/.*tmp"))


def test_experiment_runs_both_methods_per_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path))
    out = toy.experiment(steps=20, seeds=2, progress=False, n_id=60, n_aux=60, n_ood=30)
    assert len(out["energy"]) == len(out["greg"]) == 2
    assert "grid" in out["greg"][0] and "grid" not in out["greg"][1]
    model = toy.load_model(out["greg"][1])
    assert math.isfinite(toy.threshold(model, torch.randn(10, 2)))
    again = toy.experiment(steps=20, seeds=2, progress=False, n_id=60, n_aux=60, n_ood=30)
    assert np.array_equal(again["energy"][0]["history"]["grad_norm"], out["energy"][0]["history"]["grad_norm"])
