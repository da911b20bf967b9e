"""GReg's gradient regulariser, eq. (3): finite differences, masks, differentiability, the two forms, AMP."""
import pytest
import torch
import torch.nn as nn

from ood_utils import greg
from ood_utils.greg import regularizer


def _mlp(seed=0, dtype=torch.float64, act=nn.Tanh, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 16), *( [nn.BatchNorm1d(16)] if bn else [] ), act(), nn.Linear(16, 16), act(),
              nn.Linear(16, 3)]
    return nn.Sequential(*layers).to(dtype)


def _batch(seed=1, n_in=6, n_aux=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_in, 4, generator=g, dtype=dtype), 3 * torch.randn(n_aux, 4, generator=g, dtype=dtype)


def _margins_splitting(model, x_in, x_aux):
    """Margins that keep about half of each group (so masks matter), in the right order."""
    with torch.no_grad():
        s_in, s_aux = greg.energy_score(model(x_in)), greg.energy_score(model(x_aux))
    mid = lambda s: s.sort().values[len(s) // 2 - 1: len(s) // 2 + 1].mean().item()  # between two samples
    m_in, m_aux = mid(s_in), mid(s_aux)
    assert m_in < m_aux
    return m_in, m_aux


def _fd_input_grad(model, x, h=1e-6):
    """Central finite differences of S(x) per sample, coordinate by coordinate."""
    grads = torch.zeros_like(x)
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        with torch.no_grad():
            grads[:, j] = (greg.energy_score(model(x + e)) - greg.energy_score(model(x - e))) / (2 * h)
    return grads


def test_matches_finite_differences():
    model = _mlp()
    x_in, x_aux = _batch()
    m_in, m_aux = _margins_splitting(model, x_in, x_aux)
    with torch.no_grad():
        s_in, s_aux = greg.energy_score(model(x_in)), greg.energy_score(model(x_aux))
    norm_in = _fd_input_grad(model, x_in).norm(dim=1)
    norm_aux = _fd_input_grad(model, x_aux).norm(dim=1)
    expected = (norm_in * (s_in <= m_in)).mean() + (norm_aux * (s_aux >= m_aux)).mean()
    got = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux, form="printed")
    assert 0 < (s_in <= m_in).sum() < len(s_in) and 0 < (s_aux >= m_aux).sum() < len(s_aux)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_masked_samples_contribute_exactly_zero():
    model = _mlp()
    x_in, x_aux = _batch()
    m_in, m_aux = _margins_splitting(model, x_in, x_aux)
    x = torch.cat([x_in, x_aux]).requires_grad_(True)
    s = greg.energy_score(model(x))
    term = greg.gradient_term(x, s, len(x_in), m_in, m_aux, form="printed")
    (dx,) = torch.autograd.grad(term, x)
    keep = torch.cat([s[:len(x_in)] <= m_in, s[len(x_in):] >= m_aux]).detach()
    assert (dx[~keep] == 0).all() and (dx[keep].abs().sum(1) > 0).all()
    # margins that exclude every sample: the term and all its weight gradients are exactly zero
    s_max = s.max().item()
    none_kept = greg.gradient_regularizer(model, x_in, x_aux, s.min().item() - 1, s_max + 1)
    assert none_kept.item() == 0.0
    grads = torch.autograd.grad(none_kept, list(model.parameters()), allow_unused=True)
    assert all(g is None or (g == 0).all() for g in grads)


def test_differentiable_in_the_weights():
    """d L_grad / d w by double backprop equals a central finite difference on one weight (float64)."""
    model = _mlp()
    x_in, x_aux = _batch()
    m_in, m_aux = _margins_splitting(model, x_in, x_aux)
    weight = model[2].weight
    loss = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux)
    (grad,) = torch.autograd.grad(loss, weight)
    h = 1e-6
    with torch.no_grad():
        weight[3, 5] += h
    up = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux).item()
    with torch.no_grad():
        weight[3, 5] -= 2 * h
    down = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux).item()
    assert grad[3, 5].abs() > 1e-6
    assert grad[3, 5].item() == pytest.approx((up - down) / (2 * h), rel=1e-5)


def test_public_code_form_is_printed_over_batch():
    model = _mlp()
    x_in, x_aux = _batch()
    m_in, m_aux = _margins_splitting(model, x_in, x_aux)
    printed = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux, form="printed")
    public = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux, form="public_code")
    batch = len(x_in) + len(x_aux)
    torch.testing.assert_close(public, printed / batch)
    gap = greg.form_gap(model, x_in, x_aux, m_in, m_aux)
    assert gap["ratio"] == pytest.approx(1 / batch) and gap["batch"] == batch
    assert regularizer.DEFAULT_FORM == "public_code"


def _bn_model_in_train_mode():
    model = _mlp(bn=True)
    x_in, x_aux = _batch()
    with torch.no_grad():   # running statistics that are not the BatchNorm defaults
        model.train()
        model(torch.cat([x_in, x_aux]) * 2 + 1)
    model.eval()
    m_in, m_aux = _margins_splitting(model, x_in, x_aux)
    model.train()
    return model, x_in, x_aux, m_in, m_aux


def test_one_rows_term_ignores_the_other_rows_under_batchnorm_in_train_mode():
    """Per-sample gradients: changing row 0 leaves every other row's term of eq. (3) unchanged, in train
    mode with BatchNorm, and the running statistics are not updated by the regulariser's pass."""
    model, x_in, x_aux, m_in, m_aux = _bn_model_in_train_mode()
    running = model[1].running_mean.clone()
    moved = x_in.clone()
    moved[0] += 5.0
    for form in regularizer.FORMS:
        before = regularizer.per_sample_terms(model, x_in, x_aux, m_in, m_aux, form)
        after = regularizer.per_sample_terms(model, moved, x_aux, m_in, m_aux, form)
        assert (before[1:] > 0).any()
        torch.testing.assert_close(after[1:], before[1:], rtol=1e-12, atol=0)
    assert model.training and model[1].training and torch.equal(model[1].running_mean, running)


def test_the_coupled_computation_would_mix_rows():
    """What the per-sample pass avoids: the gradient of s.sum() through train-mode BatchNorm changes row
    1's gradient when row 0 moves (so the test above can fail)."""
    model, x_in, x_aux, _, _ = _bn_model_in_train_mode()
    moved = x_in.clone()
    moved[0] += 5.0

    def coupled(x):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(greg.energy_score(model(x)).sum(), x)
        return g.norm(dim=1)
    a, b = coupled(torch.cat([x_in, x_aux])), coupled(torch.cat([moved, x_aux]))
    assert not torch.allclose(a[1:], b[1:])


def test_objective_in_train_mode_uses_the_per_sample_pass():
    """The objective's gradient term equals gradient_regularizer's (frozen BatchNorm) in train mode."""
    model, x_in, x_aux, m_in, m_aux = _bn_model_in_train_mode()
    model, x_in, x_aux = model.float(), x_in.float(), x_aux.float()
    objective = greg.make_objective("greg", m_in=m_in, m_aux=m_aux, lambda_grad=1.0)
    objective(model, (x_in, torch.zeros(len(x_in), dtype=torch.long), x_aux))
    # the objective's training pass updated the running statistics its regulariser pass then used
    ref = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux)
    assert objective.last["grad"] == pytest.approx(ref.item(), rel=1e-5)


def test_inner_gradient_is_float32_under_cpu_autocast():
    """Under bfloat16 autocast the regulariser's pass runs in float32: the value of the float32 computation,
    and finite weight gradients."""
    from ood_utils.models import build_model

    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10)
    x_in, x_aux = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        s = greg.energy_score(model(torch.cat([x_in, x_aux])))
    m_in, m_aux = s.median().item() - 1e-3, s.median().item() + 1e-3
    ref = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x_in).dtype == torch.bfloat16     # autocast is on for the training pass
        x, s_pass = regularizer.regulariser_pass(model, torch.cat([x_in, x_aux]))
        amp = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux)
    assert x.dtype == torch.float32 and s_pass.dtype == torch.float32
    assert amp.item() == pytest.approx(ref.item(), rel=1e-3)   # bfloat16 resolves ~4e-3
    amp.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_arguments_are_refused():
    model = _mlp()
    x_in, x_aux = _batch()
    with pytest.raises(ValueError, match="valid: public_code, printed"):
        greg.gradient_regularizer(model, x_in, x_aux, -5, -1, form="nope")
    with pytest.raises(ValueError, match="wrong order"):
        greg.gradient_regularizer(model, x_in, x_aux, -1, -5)
    with pytest.raises(ValueError, match="differ in shape"):
        greg.gradient_regularizer(model, x_in, x_aux[:, :3], -5, -1)
    x = torch.cat([x_in, x_aux])
    with pytest.raises(ValueError, match="requires_grad"):
        greg.gradient_term(x, greg.energy_score(model(x)), len(x_in), -5, -1)


def test_monitoring_norms_equal_autograd_rows():
    model = _mlp()
    x_in, _ = _batch()
    s, norms = greg.scores_and_gradient_norms(model, x_in)
    torch.testing.assert_close(norms, _fd_input_grad(model, x_in).norm(dim=1), rtol=1e-6, atol=1e-9)
    assert not s.requires_grad and not norms.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (AMP path)")
def test_amp_on_cuda_is_finite_and_close_to_fp32():
    from ood_utils.models import build_model

    torch.manual_seed(0)
    model = build_model("mnist_cnn", 10).cuda()
    x_in, x_aux = torch.rand(16, 1, 28, 28, device="cuda"), torch.rand(16, 1, 28, 28, device="cuda")
    with torch.no_grad():
        s = greg.energy_score(model(torch.cat([x_in, x_aux])))
    m_in, m_aux = s.median().item() - 1e-3, s.median().item() + 1e-3
    ref = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux)
    with torch.autocast("cuda", dtype=torch.float16):
        amp = greg.gradient_regularizer(model, x_in, x_aux, m_in, m_aux)
    assert torch.isfinite(amp) and amp.item() == pytest.approx(ref.item(), rel=5e-2)
    amp.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
