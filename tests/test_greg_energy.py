"""GReg energy score and the energy loss with margins, eq. (1)."""
import pytest
import torch

from ood_utils import greg


def test_energy_score_is_minus_logsumexp():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = -torch.log(torch.exp(logits).sum(1))
    torch.testing.assert_close(greg.energy_score(logits), expected)
    torch.testing.assert_close(greg.id_score(logits), -expected)
    # a confident prediction has a LOWER energy (more ID) than a flat one
    assert greg.energy_score(torch.tensor([[10.0, 0.0]])) < greg.energy_score(torch.tensor([[0.0, 0.0]]))


def test_energy_score_checks_shape_and_temperature():
    with pytest.raises(ValueError, match="shape"):
        greg.energy_score(torch.zeros(5))
    with pytest.raises(ValueError, match="temperature"):
        greg.energy_score(torch.zeros(2, 3), temperature=0)


def test_energy_loss_by_hand():
    s_in = torch.tensor([-30.0, -20.0])     # -30 is past m_in = -25: no loss; -20 costs (5)^2
    s_aux = torch.tensor([-10.0, -5.0])     # -5 is past m_aux = -7: no loss; -10 costs (3)^2
    loss = greg.energy_loss(s_in, s_aux, -25.0, -7.0)
    assert loss.item() == pytest.approx(25.0 / 2 + 9.0 / 2)
    assert greg.energy_loss(torch.tensor([-30.0]), torch.tensor([0.0]), -25, -7).item() == 0.0


def test_energy_loss_gradient_pushes_the_right_way():
    s_in = torch.tensor([-20.0], requires_grad=True)
    s_aux = torch.tensor([-10.0], requires_grad=True)
    greg.energy_loss(s_in, s_aux, -25.0, -7.0).backward()
    assert s_in.grad.item() > 0 and s_aux.grad.item() < 0    # descent lowers ID energy, raises outlier energy


@pytest.mark.parametrize("m_in, m_aux", [(-7.0, -25.0), (-7.0, -7.0), (float("nan"), 1.0), ("a", 1.0)])
def test_margins_in_the_wrong_order_are_refused(m_in, m_aux):
    with pytest.raises(ValueError, match="m_in"):
        greg.energy_loss(torch.zeros(2), torch.zeros(2), m_in, m_aux)


def test_energy_loss_wants_energies_not_logits():
    with pytest.raises(ValueError, match="energy_score"):
        greg.energy_loss(torch.zeros(2, 3), torch.zeros(2), -25, -7)
