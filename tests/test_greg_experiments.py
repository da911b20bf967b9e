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
    assert c.m_in is None and c.m_aux is None and c.margin_rule and c.grad_form == "public_code"
    assert ex.settings(c) == [("mnist5k", "mnist_cnn"), ("mnist6", "mnist_cnn")]


def test_paper_defaults_are_the_papers_tables(monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "0")
    c = ex.resolve_config("paper")
    assert c.id_datasets == ("cifar10", "cifar100") and c.archs == ("resnet18", "wrn40_2", "densenet100")
    assert (c.ft_epochs, c.lambda_s, c.lambda_grad, c.m_in, c.m_aux) == (20, 0.1, 1.0, -25.0, -7.0)
    assert (c.grad_form, c.ft_weight_decay, c.nesterov, c.margin_rule) == ("public_code", 1e-4, True, False)
    s = ex.resolve_config("paper", "sampling")
    assert s.id_datasets == ("cifar100",) and s.archs == ("densenet100",) and s.plus_init == "scratch"
    assert ex.recipe(s, "sampling") == {"init": "scratch", "epochs": 60, "lr": 0.1, "milestones": [50],
                                        "optimizer": "sgd", "weight_decay": 1e-4}
    imagenet = ex.resolve_config("paper", "sampling", id_datasets=["imagenet10"])
    assert imagenet.archs == ("densenet121",) and imagenet.plus_init == "base"
    # Table 3 as the public code trains it: Adam lr 1e-4 from the pre-trained weights, x0.1 at 10, 25 epochs
    assert ex.recipe(imagenet, "sampling") == {"init": "base", "epochs": 25, "lr": 1e-4, "milestones": [10],
                                               "optimizer": "adam", "weight_decay": 0.0}


def test_imagenet_plus_recipe_yields_to_what_the_user_sets(monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "0")
    c = ex.resolve_config("paper", "sampling", id_datasets=["imagenet10"], plus_optimizer="sgd", plus_lr=0.01)
    assert ex.recipe(c, "sampling") == {"init": "base", "epochs": 25, "lr": 0.01, "milestones": [10],
                                        "optimizer": "sgd", "weight_decay": 1e-4}
    quick = ex.resolve_config("quick", "sampling", id_datasets=["imagenet10"])
    assert (quick.plus_optimizer, quick.plus_epochs) == ("adam", 2)     # quick keeps its own epochs
    assert ex.resolve_config("paper", "sampling").plus_optimizer == "sgd"   # CIFAR GReg+: the paper's SGD
    monkeypatch.setenv("OOD_KIT_SMOKE", "1")                             # smoke mode shrinks Table 3's 25 epochs too
    assert ex.resolve_config("paper", "sampling", id_datasets=["imagenet10"]).plus_epochs == 1


def test_smoke_keeps_the_first_setting_only():
    c = ex.resolve_config("paper")
    assert len(ex.settings(c)) == 1 and c.n_seeds == 1


@pytest.mark.parametrize("params, match", [
    ({"m_in": -5.0, "m_aux": -15.0}, "wrong order"),
    ({"pool_factor": 1}, "candidate pool"),
    ({"n_clusters": 99}, "n_clusters"),
    ({"grad_form": "mine"}, "public_code, printed"),
    ({"plus_milestones": [50, 10]}, "increasing"),
    ({"plus_init": "imagenet"}, "base, scratch"),
    ({"plus_optimizer": "lion"}, "sgd, adam"),
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
    same = ex.resolve_config("mini", **{**TINY, "plus_epochs": 1, "plus_lr": ex.resolve_config("mini", **TINY).ft_lr})
    assert ex.run_key(same, setting, "poem", 0, "abc", "sampling") == ex.run_key(same, setting, "poem", 0, "abc")


# ------------------------------------------------------------------------------------------------ training

def test_nan_loss_skips_the_step_naming_epoch_and_step(cfg):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    loss_fn = ex.objective(ex.with_margins(cfg, ("mnist5k", "mnist_cnn")), "greg", 0, steps_per_epoch=4)
    x = torch.randn(4, 1, 28, 28)
    with pytest.warns(RuntimeWarning, match=r"epoch 1, step 1 of 4: step skipped"):
        loss_fn(model, (x, torch.zeros(4, dtype=torch.long), torch.randn(8, 1, 28, 28)))
    assert loss_fn.skipped == 1


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


# ------------------------------------------------------------------------------------------------ margins, health

def test_margin_rule_reads_the_base_models_energies(cfg):
    setting = ("mnist5k", "mnist_cnn")
    rule = ex.margin_rule(cfg, setting)
    base, _ = ex.base_classifier(cfg, setting)
    id_set, aux_set = ex._train_sets(cfg, setting)
    s_in, s_aux = ex.energies(base, id_set, cfg), ex.energies(base, aux_set, cfg)
    assert rule["m_in"] == pytest.approx(np.quantile(s_in, ex.MARGIN_QUANTILES["m_in"]), abs=1e-9)
    assert rule["m_aux"] == pytest.approx(np.quantile(s_aux, ex.MARGIN_QUANTILES["m_aux"]), abs=1e-9)
    scfg = ex.with_margins(cfg, setting)
    assert (scfg.m_in, scfg.m_aux) == (rule["m_in"], rule["m_aux"])
    shares = ex.pool_shares(base, cfg, setting)     # the median: about half the pool inside the margin
    assert 0.4 <= shares["aux_inside"] <= 0.6 and shares["aux_inside"] + shares["mask_aux"] == pytest.approx(1)
    fixed = ex.with_margins(ex.resolve_config("mini", **{**TINY, "m_in": -30.0}), setting)
    assert (fixed.m_in, fixed.m_aux) == (-30.0, rule["m_aux"])


def test_epoch_shares_average_the_steps_of_each_epoch():
    steps = [{"in_inside": a, "aux_inside": b, "mask_in": 1 - a, "mask_aux": 1 - b}
             for a, b in ((1.0, 0.5), (0.5, 0.5), (0.0, 0.25), (0.0, 0.75))]
    shares = ex.epoch_shares({"steps": steps, "steps_per_epoch": 2})
    assert [s["epoch"] for s in shares] == [1, 2]
    assert shares[0]["in_inside"] == 0.75 and shares[1]["aux_inside"] == 0.5 and shares[1]["mask_in"] == 1.0
    assert ex.epoch_shares({"history": []}) == []


def test_a_collapsed_run_fails_its_health_checks(cfg):
    """A constructed failing run: constant logits (no accuracy, no spread, no separation), a loss that
    rises and half of the steps skipped."""
    setting = ("mnist5k", "mnist_cnn")

    class Collapsed(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10)
    meta = {"steps": [{"total": v} for v in (1.0, 1.2, 1.5, 2.0)], "skipped": 2}
    h = ex.run_health(Collapsed(), cfg, setting, "greg seed 0", meta, 0.1, 0.98, np.zeros(50),
                      np.random.default_rng(0).normal(size=50))
    assert not h.ok
    failed = {c.name for c in h.checks if not c.passed}
    assert failed == {"ID accuracy", "score spread on ID", "energy separation of the training ID / auxiliary data",
                      "training loss", "skipped steps"}


def test_table3_averages_its_four_sets_only():
    rng = np.random.default_rng(0)
    sets = ex.data.ood_sets("imagenet10")
    scores = {"id": rng.normal(1, 1, 200), **{n: rng.normal(0.2 * i, 1, 200) for i, n in enumerate(sets)}}
    rows = ex.evaluate_scores("energy", scores, ("imagenet10", "densenet121"), 0)
    per = {r["dataset"]: r["auroc"] for r in rows}
    assert per["average"] == pytest.approx(np.mean([per[n] for n in ex.TABLE3_AVERAGE]))
    assert set(ex.TABLE3_AVERAGE) < set(sets)


def test_missing_imagenet_weights_name_the_file_to_download(tmp_path, monkeypatch):
    from ood_utils import models

    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"densenet121-a639ec97\.pth"):
        models.torchvision_weights_path("densenet121")


def test_imagenet_weights_load_safely_with_the_subset_rows(tmp_path, monkeypatch):
    """torchvision-named weights (1000 classes) load into a 10-class DenseNet-121 keeping the chosen rows."""
    from ood_utils import models

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    torch.manual_seed(0)
    full = models.build_model("densenet121", 1000)
    state = {k.replace("trunk.", "features.", 1).replace("head.", "classifier.", 1): v
             for k, v in full.state_dict().items()}
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "densenet121-a639ec97.pth")
    rows = [3, 999, 0]
    small = models.load_imagenet_pretrained(models.build_model("densenet121", 3), "densenet121", rows)
    assert torch.equal(small.head.weight, full.head.weight[rows]) and torch.equal(small.head.bias, full.head.bias[rows])


def test_fit_with_milestones_steps_the_learning_rate(tmp_path):
    """GReg+'s published schedule: a constant learning rate multiplied by 0.1 at each milestone epoch."""
    from ood_utils import train

    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g))
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    model = torch.nn.Linear(4, 2)
    run = train.fit(model, loader, epochs=3, lr=0.1, weight_decay=1e-4, device="cpu", ckpt_path=tmp_path / "c.pt",
                    nesterov=True, milestones=[2], progress=False)
    assert [round(h["lr"], 6) for h in run["history"]] == [0.1, 0.01, 0.01]


def test_a_diverged_model_gives_nan_metrics_and_fails_health(cfg):
    setting = ("mnist5k", "mnist_cnn")
    base, _ = ex.base_classifier(cfg, setting)

    from ood_utils.models import build_model

    model = build_model("mnist_cnn", 10)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    model.eval()
    with pytest.warns(RuntimeWarning, match="non-finite energy scores"):
        rows = ex.evaluate_model(model, cfg, setting, "greg", "diverged_test", 0)
    assert all(np.isnan(r["auroc"]) for r in rows if "auroc" in r)
    h = ex.run_health(model, cfg, setting, "greg seed 0", {"steps": [{"total": 1.0}]}, rows[-1]["id_accuracy"], 0.9,
                      ex._id_test_scores(model, cfg, setting, "diverged_test"), np.arange(10.0))
    assert not h.ok and "diverged" in h.reason
