"""The mini profile's latent diffusion decoder: shapes, the DDIM sampler, learning on a toy problem,
resumable training, the atomic cache and its corruption check, and decode() on a latent space."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from ood_utils.bood import mini_ldm

SMOKE = mini_ldm.LDMConfig().smoke()


def _toy(n=64, dim=8, seed=0):
    """Two 'classes': left-half vs right-half bright images, conditioned on +e0 / -e0 directions."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.zeros(n, 1, 28, 28)
    x[y == 0, :, :, :14] = 1.0
    x[y == 1, :, :, 14:] = 1.0
    cond = torch.zeros(n, dim)
    cond[:, 0] = 1 - 2 * y.float()
    return x, cond + 0.05 * torch.randn(n, dim, generator=g), y


def test_timestep_embedding_is_sinusoidal():
    e = mini_ldm.timestep_embedding(torch.tensor([0, 10]), 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(e[1, :4], torch.cos(10 * freqs)) and torch.allclose(e[1, 4:], torch.sin(10 * freqs))


def test_condition_is_the_direction_of_the_feature():
    z = torch.randn(5, 8)
    assert torch.allclose(mini_ldm.MiniLDM.condition(3 * z), F.normalize(z, dim=1))


def test_sample_shapes_range_and_determinism():
    x, c, _ = _toy()
    model, info = mini_ldm.train_mini_ldm(x, c, SMOKE, progress=False)
    a = model.sample(c[:4], seed=1)
    assert a.shape == (4, 1, 28, 28) and (a >= 0).all() and (a <= 1).all()
    assert torch.equal(a, model.sample(c[:4], seed=1))
    assert not torch.equal(a, model.sample(c[:4], seed=2))
    images, traj = model.sample(c[:2], seed=1, return_trajectory=True)
    assert traj.shape == (2, SMOKE.sample_steps + 1, SMOKE.latent_dim)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        model.sample(torch.randn(2, 5))


def test_bad_inputs_are_refused_before_training():
    with pytest.raises(ValueError, match="28, 28"):
        mini_ldm.train_mini_ldm(torch.rand(4, 3, 32, 32), torch.randn(4, 8), SMOKE, progress=False)
    with pytest.raises(ValueError, match="features"):
        mini_ldm.train_mini_ldm(torch.rand(4, 1, 28, 28), torch.randn(3, 8), SMOKE, progress=False)


def test_the_condition_steers_the_image():
    """A short real training run on the toy: the +e0 condition draws the left half, -e0 the right half."""
    x, c, _ = _toy(n=256)
    cfg = mini_ldm.LDMConfig(ae_steps=150, denoiser_steps=300, hidden=64, ae_hidden=128, batch_size=64,
                             sample_steps=20, cond_noise=0.0)
    model, info = mini_ldm.train_mini_ldm(x, c, cfg, progress=False)
    losses = [h["loss"] for h in info["history"] if h["phase"] == "denoiser"]
    assert losses[-1] < losses[0]
    cond = torch.zeros(16, 8)
    cond[:8, 0], cond[8:, 0] = 1.0, -1.0
    img = model.sample(cond, seed=0)
    left, right = img[..., :14].mean((1, 2, 3)), img[..., 14:].mean((1, 2, 3))
    assert (left[:8] > right[:8]).float().mean() >= 0.75
    assert (right[8:] > left[8:]).float().mean() >= 0.75


def test_training_resumes_to_the_same_weights(tmp_path):
    x, c, _ = _toy()
    cfg = mini_ldm.LDMConfig(ae_steps=20, denoiser_steps=20, hidden=32, ae_hidden=64, batch_size=16,
                             sample_steps=3, checkpoint_every=10)
    full, _ = mini_ldm.train_mini_ldm(x, c, cfg, seed=0, progress=False)
    # interrupt at the second checkpoint (10 steps into the denoiser phase), then resume from the checkpoint
    ckpt = tmp_path / "ldm.train.pt"
    calls = {"n": 0}
    orig = mini_ldm._checkpoint

    def stop_after_second(*args, **kw):
        orig(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    mini_ldm._checkpoint = stop_after_second
    try:
        with pytest.raises(KeyboardInterrupt):
            mini_ldm.train_mini_ldm(x, c, cfg, seed=0, ckpt_path=ckpt, progress=False)
    finally:
        mini_ldm._checkpoint = orig
    resumed, info = mini_ldm.train_mini_ldm(x, c, cfg, seed=0, ckpt_path=ckpt, progress=False)
    assert info["resumed_from"] == {"ae": 20, "denoiser": 10}
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_cache_round_trip_and_corruption(tmp_path):
    x, c, _ = _toy()
    model, _ = mini_ldm.train_mini_ldm(x, c, SMOKE, progress=False)
    path = tmp_path / "ldm.safetensors"
    mini_ldm.save_model(model, path, {"dataset": "toy"})
    loaded, meta = mini_ldm.load_model(path, SMOKE)
    assert meta["dataset"] == "toy" and meta["cond_dim"] == 8
    assert torch.equal(loaded.sample(c[:3], seed=0), model.sample(c[:3], seed=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert mini_ldm.load_model(path, mini_ldm.LDMConfig()) is None   # another configuration: not served
        path.write_bytes(path.read_bytes()[:-10])
        assert mini_ldm.load_model(path, SMOKE) is None
    assert any("unusable" in str(w.message) for w in caught)


def test_decode_on_a_latent_space(tmp_path):
    """decode() in smoke mode: trains the decoder once, caches it, returns [0, 1] images at 28x28."""
    from ood_utils import profiles
    from ood_utils.bood import decoders, experiments

    cfg = profiles.resolve("mini", "bood")
    space = experiments.latent_space(cfg, "mnist5k", progress=False)
    z, y = torch.as_tensor(space.train.feats[:6]), torch.as_tensor(space.train.labels[:6])
    images = decoders.decode(cfg, space, z, y, progress=False)
    assert images.shape == (6, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    decoders._MODELS.clear()                       # a fresh process reads the cache back
    model, info = decoders.get_mini_ldm(cfg, space, progress=False)
    assert info["source"] == "cache"
    assert torch.equal(decoders.decode(cfg, space, z, y, progress=False), images)
    with pytest.raises(ValueError, match="-d"):
        decoders.decode(cfg, space, torch.randn(2, 5), torch.tensor([0, 1]))
    x = decoders.to_classifier_input(images, "mnist5k")
    assert torch.allclose(x * 0.3081 + 0.1307, images, atol=1e-6)


def _history(ae, den):
    return ([{"phase": "ae", "step": 50 * i, "loss": v} for i, v in enumerate(ae)]
            + [{"phase": "denoiser", "step": 50 * i, "loss": v} for i, v in enumerate(den)])


@pytest.mark.parametrize("ae,den,fid,failed", [
    ([0.5, 0.3, 0.2, 0.1, 0.1], [1.0, 0.8, 0.6, 0.5, 0.5], 0.95, []),
    ([0.5, 0.3, 0.2, 0.1, 0.1], [0.5, 0.6, 0.8, 1.0, 2.0], 0.95, ["mini LDM denoiser loss"]),
    ([0.5, 0.3, 0.2, 0.1, 0.1], [1.0, 0.8, 0.6, 0.5, 0.5], 0.30, ["class fidelity"]),
])
def test_decoder_health_fails_a_constructed_bad_decoder(monkeypatch, ae, den, fid, failed):
    """A diverging denoiser or a decoder whose images the base classifier cannot read fails its health
    check, and a claim resting on it becomes undetermined."""
    from types import SimpleNamespace

    from ood_utils import results
    from ood_utils.bood import decoders

    monkeypatch.setattr(decoders, "get_mini_ldm", lambda cfg, space, progress=True: (None, {"history": _history(ae, den)}))
    monkeypatch.setattr(decoders, "class_fidelity", lambda cfg, space, base, n, seed=0: {"fidelity": fid})
    cfg = SimpleNamespace(profile="mini", seed=0)
    h = decoders.decoder_health(cfg, SimpleNamespace(dataset="toy"), base_model=None)
    assert [c.name for c in h.checks if not c.passed] == failed
    assert h.ok == (not failed)
    row = results.claim("BOOD", "decoded outliers look unlike their source class", ours=0.4, verdict="agrees",
                        profile="mini", setting="toy", health=[h])
    assert (row["verdict"] == "undetermined") == bool(failed)
    with pytest.raises(ValueError, match="pretrained"):
        decoders.decoder_health(SimpleNamespace(profile="quick", seed=0), None, None)
