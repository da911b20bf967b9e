"""GReg experiments (ood_utils.greg.experiments): configuration checks, cache keys, cached and resumable
fine-tuning, evaluation rows. Smoke mode (tests/conftest.py) keeps every run to a few steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_utils import profiles
from ood_utils.greg import experiments as ex

TINY = dict(id_datasets=["mnist5k"], epochs=1, max_train=256, ft_max_train=32, ft_batch_size=16,
            ft_eval_max=32, n_seeds=2)


@pytest.fixture(scope="module")
def cfg():
    return ex.resolve_config("mini", **TINY)


# ------------------------------------------------------------------------------------------------ config

def test_mini_defaults_cover_both_id_datasets_and_three_seeds(monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "0")
    c = ex.resolve_config("mini")
    assert c.id_datasets == ("mnist5k", "mnist6") and c.archs == ("mnist_cnn",) and ex.seeds(c) == [0, 1, 2]
    assert ex.settings(c) == [("mnist5k", "mnist_cnn"), ("mnist6", "mnist_cnn")]


def test_paper_defaults_are_the_papers_tables(monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "0")
    c = ex.resolve_config("paper")
    assert c.id_datasets == ("cifar10", "cifar100") and c.archs == ("resnet18", "wrn40_2", "densenet100")
    assert (c.ft_epochs, c.lambda_s, c.lambda_grad, c.m_in, c.m_aux) == (20, 0.1, 1.0, -25.0, -7.0)
    s = ex.resolve_config("paper", "sampling")
    assert s.id_datasets == ("cifar100",) and s.archs == ("densenet100",) and s.plus_init == "scratch"
    assert ex.resolve_config("paper", "sampling", id_datasets=["imagenet10"]).archs == ("densenet121",)


def test_smoke_keeps_the_first_setting_only():
    c = ex.resolve_config("paper")
    assert len(ex.settings(c)) == 1 and c.n_seeds == 1


@pytest.mark.parametrize("params, match", [
    ({"m_in": -5.0, "m_aux": -15.0}, "wrong order"),
    ({"pool_factor": 1}, "candidate pool"),
    ({"n_clusters": 99}, "n_clusters"),
    ({"grad_form": "mine"}, "paper, public_code"),
    ({"plus_init": "imagenet"}, "base, scratch"),
    ({"id_datasets": ["mnist7"]}, "mnist5k"),
    ({"archs": ["resnet1000"]}, "mnist_cnn"),
    ({"ft_epochs": 0}, ">= 1"),
])
def test_bad_parameters_fail_before_any_work(params, match):
    with pytest.raises(profiles.ConfigError, match=match):
        ex.resolve_config("mini", **params)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="energy_clustering"):
        ex.check_methods(["greg", "gregg"])
    with pytest.raises(ValueError, match="msp"):
        ex.check_methods(["odin", "vim"], tuple(ex.POSTHOC))
    with pytest.raises(ValueError, match="finetune, sampling"):
        ex.recipe(ex.resolve_config("mini"), "scratchpad")
    with pytest.raises(profiles.ConfigError, match="finetune, sampling"):
        ex.resolve_config("mini", "tables")


def test_every_run_is_a_known_objective_and_table_names_exist():
    from ood_utils.greg import METHODS
    from ood_utils.greg import report as rp

    assert all(r.objective in METHODS for r in ex.RUNS.values())
    assert set(ex.FINETUNE_METHODS) <= set(rp.TITLES["4"]) and set(ex.SAMPLING_METHODS) <= set(rp.TITLES["5"])
    assert {ex.GRAD_PAIRS[k] for k in ex.GRAD_PAIRS} | set(ex.GRAD_PAIRS) == set(ex.FINETUNE_METHODS)


# ------------------------------------------------------------------------------------------------ cache keys

def test_run_key_changes_with_everything_that_changes_the_weights(cfg):
    setting = ("mnist5k", "mnist_cnn")
    key = ex.run_key(cfg, setting, "greg", 0, "abc")
    assert key == ex.run_key(cfg, setting, "greg", 0, "abc")
    others = [ex.run_key(cfg, setting, "energy", 0, "abc"), ex.run_key(cfg, setting, "greg", 1, "abc"),
              ex.run_key(cfg, setting, "greg", 0, "abd"), ex.run_key(cfg, ("mnist6", "mnist_cnn"), "greg", 0, "abc"),
              ex.run_key(ex.resolve_config("mini", **{**TINY, "lambda_grad": 0.5}), setting, "greg", 0, "abc"),
              ex.run_key(ex.resolve_config("mini", **{**TINY, "m_in": -20.0}), setting, "greg", 0, "abc"),
              ex.run_key(ex.resolve_config("mini", **{**TINY, "ft_lr": 0.5}), setting, "greg", 0, "abc")]
    assert len({key, *others}) == len(others) + 1
    # the sampling recipe shares runs with the fine-tuning recipe when their budgets agree (mini)
    same = ex.resolve_config("mini", **{**TINY, "plus_epochs": 1, "plus_lr": TINY.get("ft_lr", 0.02)})
    assert ex.run_key(same, setting, "poem", 0, "abc", "sampling") == ex.run_key(same, setting, "poem", 0, "abc")


# ------------------------------------------------------------------------------------------------ training

def test_nan_loss_stops_naming_epoch_and_step(cfg):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    loss_fn = ex.objective(cfg, "greg", 0, steps_per_epoch=4)
    x = torch.randn(4, 1, 28, 28)
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1 of 4"):
        loss_fn(model, (x, torch.zeros(4, dtype=torch.long), torch.randn(8, 1, 28, 28)))


def test_loader_gives_plain_batches_and_candidate_pools(cfg):
    setting = ("mnist5k", "mnist_cnn")
    x_in, y_in, x_aux = next(iter(ex.train_loader(cfg, setting, "greg", 0)))
    assert x_in.shape == (16, 1, 28, 28) and x_aux.shape[0] == cfg.aux_per_id * 16 and (y_in >= 0).all()
    _, _, pool = next(iter(ex.train_loader(cfg, setting, "greg_plus", 0)))
    assert pool.shape[0] == cfg.pool_factor * 16


def test_finetune_is_cached_and_a_corrupt_cache_is_rebuilt(cfg):
    setting = ("mnist5k", "mnist_cnn")
    model, meta = ex.finetune(cfg, setting, "greg", 0)
    assert meta["source"] in ("trained", "cache") and not model.training
    again, meta2 = ex.finetune(cfg, setting, "greg", 0)
    assert meta2["source"] == "cache"
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    base, _ = ex.base_classifier(cfg, setting)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    weights = next((p for p in (ex.paths.cache_dir("greg", "mini", "finetuned")).glob(f"{meta2['key']}.safetensors")))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="unusable"):
        _, meta3 = ex.finetune(cfg, setting, "greg", 0)
    assert meta3["source"] == "trained"


def test_evaluation_rows_have_every_set_the_summaries_and_accuracy(cfg):
    from ood_utils import data

    rows = ex.run_methods(cfg, ("mnist5k", "mnist_cnn"), ["energy"], progress=False)
    sets = set(data.ood_sets("mnist5k"))
    for method in ("base", "energy"):
        sel = rows[rows["method"] == method]
        assert sets | {"average", "near", "far", "id"} <= set(sel["dataset"])
        scores = sel.dropna(subset=["auroc"])
        assert ((scores["auroc"] >= 0) & (scores["auroc"] <= 1)).all()
        assert 0 < sel.loc[sel["dataset"] == "id", "id_accuracy"].iloc[0] <= 1
    assert sorted(rows.loc[rows["method"] == "energy", "seed"].unique()) == [0, 1]


def test_posthoc_baselines_come_with_intervals(cfg):
    rows = ex.posthoc_baselines(cfg, ("mnist5k", "mnist_cnn"), n_boot=20, names=("msp", "odin"))
    assert set(rows["method"]) == {"msp", "odin"}
    assert (rows["auroc_lo"] <= rows["auroc_hi"] + 1e-12).all()


def test_energy_id_score_is_logsumexp():
    logits = np.random.default_rng(0).normal(size=(5, 7)) * 30
    assert np.allclose(ex.energy_id_score(logits), torch.logsumexp(torch.tensor(logits), 1).numpy())


def test_posthoc_rows_are_cached_and_a_broken_cache_is_rebuilt(cfg):
    from ood_utils import paths

    first = ex.posthoc_baselines(cfg, ("mnist5k", "mnist_cnn"), n_boot=10, names=("msp",))
    files = list(paths.cache_dir("greg", "mini", "posthoc").glob("*_msp_b10_*.csv"))
    assert len(files) == 1
    assert ex.posthoc_baselines(cfg, ("mnist5k", "mnist_cnn"), n_boot=10, names=("msp",))["auroc"].tolist() == \
        pytest.approx(first["auroc"].tolist())
    files[0].write_text("garbage\n")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        again = ex.posthoc_baselines(cfg, ("mnist5k", "mnist_cnn"), n_boot=10, names=("msp",))
    assert again["auroc"].tolist() == pytest.approx(first["auroc"].tolist())
