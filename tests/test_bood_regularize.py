"""Eq. (7): energy, phi, the OOD loss, outlier preparation and the paired dataset."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ood_utils import models
from ood_utils.bood import regularize as R


def test_energy_is_logsumexp():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    assert torch.allclose(R.energy(logits), torch.tensor([math.log(2.0), 10.0]), atol=1e-4)


def test_phi_shapes_and_the_papers_default():
    assert isinstance(R.build_phi(0).net, torch.nn.Linear)
    assert R.build_phi(16)(torch.zeros(3, 1)).shape == (3, 2)
    default = R.build_phi()                  # the paper's 3-layer MLP: 1 -> 512 -> 2
    assert [m.weight.shape for m in default.net if isinstance(m, torch.nn.Linear)] == [(512, 1), (2, 512)]
    with pytest.raises(ValueError):
        R.build_phi(-1)


@pytest.mark.parametrize("hidden", [0, 512])
@pytest.mark.parametrize("scale", [1.0, 13.0, 1000.0])
def test_l_ood_starts_at_log2_whatever_the_energy_scale(hidden, scale):
    torch.manual_seed(1)
    logits_id, logits_ood = torch.randn(32, 6) * scale + scale, torch.randn(32, 6) * scale
    phi = R.build_phi(hidden)
    assert R.ood_loss(phi, logits_id, logits_ood).item() == pytest.approx(math.log(2), abs=1e-6)
    # standardised from the start model's energies, phi reads numbers of order one
    phi.standardise(torch.cat([R.energy(logits_id), R.energy(logits_ood)]))
    z = (R.energy(logits_id) - phi.center) / phi.scale
    assert z.abs().max() < 5 and R.ood_loss(phi, logits_id, logits_ood).item() == pytest.approx(math.log(2), abs=1e-6)


def test_a_few_steps_teach_phi_the_right_direction():
    """From chance, gradient steps on phi alone make it read higher energy as ID (not the wrong way)."""
    torch.manual_seed(0)
    e_id, e_ood = torch.randn(64) * 2 + 13, torch.randn(64) * 2 + 7
    phi = R.build_phi()
    phi.standardise(torch.cat([e_id, e_ood]))
    opt = torch.optim.SGD(phi.parameters(), lr=0.05)
    for _ in range(50):
        two = phi(torch.cat([e_id, e_ood])[:, None])
        loss = F.cross_entropy(two, torch.cat([torch.ones(64), torch.zeros(64)]).long())
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < math.log(2) - 0.2
    assert phi.id_logit(e_id).mean() > 0 > phi.id_logit(e_ood).mean()


def test_phi_is_built_under_the_seed():
    torch.manual_seed(3)
    a = R.build_phi().net[0].weight.clone()
    torch.manual_seed(3)
    assert torch.equal(a, R.build_phi().net[0].weight)
    with pytest.raises(ValueError, match="two finite"):
        R.build_phi().standardise(torch.tensor([1.0]))


def test_ood_loss_is_eq7_binary_cross_entropy():
    torch.manual_seed(0)
    phi = torch.nn.Linear(1, 2)          # random weights: a zero-started phi would hide a sign error
    li, lo = torch.randn(5, 4), torch.randn(3, 4)
    e_in, e_out = R.energy(li), R.energy(lo)
    s_in = phi(e_in[:, None])   # two logits; their difference is the logit of "ID"
    s_out = phi(e_out[:, None])
    d_in, d_out = s_in[:, 1] - s_in[:, 0], s_out[:, 1] - s_out[:, 0]
    by_hand = torch.cat([-F.logsigmoid(d_in), -F.logsigmoid(-d_out)]).mean()
    assert torch.allclose(R.ood_loss(phi, li, lo), by_hand, atol=1e-6)


def test_bood_loss_combines_ce_and_beta():
    torch.manual_seed(0)
    model = R.RegularizedClassifier(models.build_model("mnist_cnn", 10), phi_hidden=0)
    x, y, xo = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)), torch.randn(4, 1, 28, 28)
    l0 = R.bood_loss(0.0)(model, (x, y, xo))
    l2 = R.bood_loss(2.0)(model, (x, y, xo))
    logits = model(torch.cat([x, xo]))
    reg = R.ood_loss(model.phi, logits[:4], logits[4:])
    assert torch.allclose(l0, F.cross_entropy(logits[:4], y), atol=1e-6)
    assert torch.allclose(l2, l0 + 2.0 * reg, atol=1e-5)
    with pytest.raises(ValueError):
        R.bood_loss(-1.0)


def test_prepare_resizes_not_crops_and_normalises():
    img = torch.zeros(1, 3, 64, 64)
    img[..., :32, :] = 1.0                       # top half white
    out = R.prepare_outliers(img, 32, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, 0, :14].mean(), torch.tensor(1.0)) and torch.allclose(out[0, 0, 18:].mean(), torch.tensor(-1.0))
    grey = R.prepare_outliers(torch.rand(2, 3, 28, 28), 28, 1, (0.1307,), (0.3081,))
    assert grey.shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        R.prepare_outliers(torch.full((1, 1, 28, 28), 2.0), 28, 1, (0.0,), (1.0,))
    with pytest.raises(ValueError, match="N, C, H, W"):
        R.prepare_outliers(torch.rand(28, 28), 28, 1, (0.0,), (1.0,))


def test_with_outliers_pairs_every_item():
    base = TensorDataset(torch.arange(6).float()[:, None], torch.arange(6))
    ds = R.WithOutliers(base, torch.full((3, 1), -1.0))
    x, y, xo = ds[2]
    assert len(ds) == 6 and y == 2 and xo.item() == -1.0
    with pytest.raises(ValueError, match="no outlier"):
        R.WithOutliers(base, torch.zeros(0, 1))


def test_prepare_reads_uint8_as_the_same_image():
    img = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    stats = ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert torch.allclose(R.prepare_outliers(img, 32, 3, *stats), R.prepare_outliers(img.float() / 255, 32, 3, *stats))


def _crops(size=32, side=64):
    img = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side) / (side * side)
    return R.OutlierCrops(img.expand(3, 3, side, side).clone(), size, 3, (0.0,) * 3, (1.0,) * 3)


def test_random_crops_are_windows_of_the_whole_image_drawn_again_at_every_use():
    crops = _crops()
    torch.manual_seed(0)
    draws = [crops[0] for _ in range(20)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert len({round(float(d[0, 16, 16]), 6) for d in draws}) > 10   # different windows
    # each draw is a window of the (zero-padded) 64 px image, not a resize of it: neighbours one pixel apart
    for d in draws:
        both = (d[0, :, 1:] > 0) & (d[0, :, :-1] > 0)               # both inside the image, not padding
        step = (d[0, :, 1:] - d[0, :, :-1])[both]
        assert both.any() and torch.allclose(step, torch.full_like(step, 1 / 4096.0))
    torch.manual_seed(0)                                            # fit checkpoints this generator
    assert all(torch.equal(a, crops[0]) for a in draws)


def test_centred_crops_are_fixed_and_small_images_are_refused():
    crops = _crops()
    a = crops.centred(torch.tensor([0, 1]))
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, crops.centred(torch.tensor([0, 1])))
    assert torch.isclose(a[0, 0, 0, 0], torch.tensor((16 * 64 + 16) / 4096.0))
    with pytest.raises(ValueError, match="too small"):
        R.OutlierCrops(torch.zeros(2, 3, 16, 16), 32, 3, (0.0,) * 3, (1.0,) * 3)


def test_training_outliers_follow_the_transform():
    imgs = torch.rand(4, 1, 28, 28)
    resized = R.training_outliers(imgs, "mnist5k", "resize")
    crops = R.training_outliers(imgs, "mnist5k", "random_crop")
    assert isinstance(resized, torch.Tensor) and resized.shape == (4, 1, 28, 28)
    assert isinstance(crops, R.OutlierCrops) and crops[1].shape == (1, 28, 28)
    assert R.outliers_digest(crops) == "crop" + R.digest(imgs) != R.outliers_digest(resized)
    with pytest.raises(ValueError, match="resize, random_crop"):
        R.training_outliers(imgs, "mnist5k", "stretch")
    ds = R.WithOutliers(TensorDataset(torch.zeros(6, 1, 28, 28), torch.arange(6)), crops)
    assert ds[0][2].shape == (1, 28, 28)


def test_regularized_classifier_exposes_features_and_head():
    base = models.build_model("mnist_cnn", 10)
    model = R.RegularizedClassifier(base, 16)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), base(x)) and models.unwrap_model(model) is model
    assert any(n.startswith("phi.") for n, _ in model.named_parameters())


def test_digest_changes_with_content():
    a = torch.zeros(2, 2)
    assert R.digest(a) == R.digest(a.clone()) != R.digest(a + 1)


def test_random_crops_larger_than_the_saved_images_fail_before_any_work():
    from ood_utils import profiles
    from ood_utils.bood import experiments

    cfg = profiles.resolve("paper", "bood", outlier_transform="random_crop", sd_size=64)
    experiments._check_crops(cfg, ("cifar100",))                   # 32 px windows of 64 px images
    with pytest.raises(profiles.ConfigError, match="raise sd_size"):
        experiments._check_crops(cfg, ("imagenet100",))            # 224 px windows of 64 px images
    paper = profiles.resolve("paper", "bood", outlier_transform="random_crop", sd_size=512)   # saves 256 px
    experiments._check_crops(paper, ("imagenet100",))
    with pytest.raises(profiles.ConfigError, match="resize, random_crop"):
        experiments.check_setup(profiles.resolve("mini", "bood", outlier_transform="stretch"))
