"""GReg objectives as train.fit loss functions: parts, registry, NaN guard, paired loader, a short fit."""
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ood_utils import greg, profiles
from ood_utils.models import build_model
from ood_utils.train import fit


def _data(seed=0, n_in=8, n_aux=24):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_in, 1, 28, 28, generator=g), torch.randint(0, 10, (n_in,), generator=g),
            torch.rand(n_aux, 1, 28, 28, generator=g))


def _model():
    torch.manual_seed(0)
    return build_model("mnist_cnn", 10).train()


@pytest.mark.parametrize("method", list(greg.METHODS))
def test_every_method_gives_a_finite_differentiable_loss(method):
    model = _model()
    objective = greg.make_objective(method, m_in=-2.5, m_aux=-2.0)
    loss = objective(model, _data())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert ("grad" in objective.last) == greg.get_method(method).grad
    assert objective.last["total"] == pytest.approx(sum(objective.last[k] for k in ("ce", "score_loss", "grad")
                                                        if k in objective.last), rel=1e-5)


def test_greg_is_ce_plus_weighted_energy_and_gradient_terms():
    model = _model()
    x_in, y_in, x_aux = _data()
    m_in, m_aux = -2.5, -2.0
    total = greg.make_objective("greg", m_in=m_in, m_aux=m_aux, lambda_s=0.1, lambda_grad=1.0)(model, (x_in, y_in, x_aux))
    logits = model(torch.cat([x_in, x_aux]))
    s = greg.energy_score(logits)
    expected = (torch.nn.functional.cross_entropy(logits[:8], y_in)
                + 0.1 * greg.energy_loss(s[:8], s[8:], m_in, m_aux)
                + greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux))
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)


def test_oe_loss_is_cross_entropy_to_uniform():
    assert greg.oe_loss(torch.zeros(4, 10)).item() == pytest.approx(math.log(10))
    confident = torch.tensor([[20.0] + [0.0] * 9])
    assert greg.oe_loss(confident).item() > math.log(10)


def test_unknown_method_and_bad_weights_are_refused():
    with pytest.raises(ValueError, match="valid: energy, greg, oe"):
        greg.make_objective("vos")
    with pytest.raises(ValueError, match="lambda_grad"):
        greg.make_objective("greg", lambda_grad=-1)
    with pytest.raises(ValueError, match="wrong order"):
        greg.make_objective("greg", m_in=-7, m_aux=-25)
    with pytest.raises(ValueError, match="valid: public_code, printed"):
        greg.make_objective("greg", form="exact")


def test_a_nan_skips_the_step_naming_the_part_epoch_and_step():
    model = _model()
    objective = greg.make_objective("greg", m_in=-2.5, m_aux=-2.0, steps_per_epoch=4)
    x_in, y_in, x_aux = _data()
    for _ in range(5):
        objective(model, (x_in, y_in, x_aux))
    x_in[0, 0, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match=r"non-finite ce.*epoch 2, step 2 of 4: step skipped"):
        loss = objective(model, (x_in, y_in, x_aux))
    assert loss.item() == 0.0 and objective.skipped == 1 and objective.last["skipped"]
    loss.backward()
    assert all((p.grad == 0).all() for p in model.parameters())
    assert len(objective.log) == 6 and not objective.log[0]["skipped"]


def test_id_aux_loader_cycles_the_auxiliary_set():
    ids = DataLoader(TensorDataset(torch.arange(10.0), torch.arange(10)), batch_size=2)
    aux = DataLoader(TensorDataset(torch.arange(100.0, 103.0)), batch_size=2)
    batches = list(greg.IDAuxLoader(ids, aux))
    assert len(batches) == 5 == len(greg.IDAuxLoader(ids, aux))
    assert [b[2].tolist() for b in batches] == [[100, 101], [102], [100, 101], [102], [100, 101]]


def test_fit_trains_greg_plus(tmp_path):
    """Two epochs of GReg+ through train.fit: finite history, a checkpoint, and the energy loss lower on
    the training batches than before (the objective does what it says on easy data)."""
    profiles.seed_everything(0)
    g = torch.Generator().manual_seed(0)
    x_id = torch.zeros(32, 1, 28, 28)
    y_id = torch.randint(0, 2, (32,), generator=g)
    x_id[y_id == 0, :, :14] = 1.0
    x_id[y_id == 1, :, 14:] = 1.0
    x_aux = torch.rand(96, 1, 28, 28, generator=g)
    ids = DataLoader(TensorDataset(x_id, y_id), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    aux = DataLoader(TensorDataset(x_aux), batch_size=48, shuffle=True, generator=torch.Generator().manual_seed(1))
    model = build_model("mnist_cnn", 2)
    loader = greg.IDAuxLoader(ids, aux)
    objective = greg.make_objective("greg_plus", m_in=-4.0, m_aux=-1.0, steps_per_epoch=len(loader))

    def energy_part():
        with torch.no_grad():
            s = greg.energy_score(model.eval()(torch.cat([x_id, x_aux])))
        return greg.energy_loss(s[:32], s[32:], -4.0, -1.0).item()

    before = energy_part()
    out = fit(model, loader, epochs=2, lr=0.05, weight_decay=0.0, device="cpu", ckpt_path=tmp_path / "c.pt",
              loss_fn=objective, progress=False)
    assert len(out["history"]) == 2 and all(math.isfinite(h["loss"]) for h in out["history"])
    assert (tmp_path / "c.pt").exists() and objective.step == 2 * len(loader)
    assert energy_part() < before
