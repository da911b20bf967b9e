"""The text-conditioned latent space: eq. (2)'s cosine logits, the encoder, training through fit."""
import math

import pytest
import torch
import torch.nn.functional as F

from ood_utils import bood, profiles


def test_cosine_logits_match_the_formula():
    torch.manual_seed(0)
    z, g = torch.randn(7, 5), torch.randn(3, 5)
    expected = torch.stack([torch.stack([torch.dot(zi, gj) / (zi.norm() * gj.norm()) for gj in g]) for zi in z])
    assert torch.allclose(bood.cosine_logits(z, g, 1.0), expected, atol=1e-6)
    assert torch.allclose(bood.cosine_logits(z, g, 0.1), expected / 0.1, atol=1e-5)
    # scale-invariant in z and in the anchors
    assert torch.allclose(bood.cosine_logits(3 * z, 0.2 * g), expected, atol=1e-6)


def test_loss_is_eq2():
    torch.manual_seed(1)
    g = torch.randn(4, 6)
    head = bood.CosineHead(g, temperature=0.5)
    h, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    z = F.normalize(h, dim=1)
    by_hand = -torch.stack([math.log(1.0) + (g[y[i]] @ z[i] / g[y[i]].norm() / 0.5)
                            - torch.logsumexp(g @ z[i] / g.norm(dim=1) / 0.5, 0) for i in range(10)]).mean()
    assert torch.allclose(F.cross_entropy(head(h), y), by_hand, atol=1e-5)


def test_anchors_are_fixed_buffers():
    g = torch.randn(10, 384)
    model = bood.build_latent_encoder("mnist_cnn", g)
    names = dict(model.named_parameters())
    assert not any("anchors" in n for n in names)
    assert torch.equal(model.head.anchors, g)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and (out.abs() <= 1 + 1e-5).all()
    assert model.features(torch.randn(2, 1, 28, 28)).shape == (2, 384)


def test_resnet34_768_uses_the_paper_projection():
    model = bood.build_latent_encoder("resnet34_768", torch.randn(5, 32))
    assert isinstance(model.project, torch.nn.Identity) and model.backbone.project.out_features == 32
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        bood.CosineHead(torch.randn(3, 4), temperature=0)


def test_training_learns_and_resumes_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path))
    cfg = profiles.resolve("mini", epochs=1, max_train=256)
    torch.manual_seed(0)
    anchors = bood.anchors_from_table(
        [str(i) for i in range(10)],
        type("T", (), {"unk_token_id": None, "__call__": lambda s, t, add_special_tokens=False: {"input_ids": [int(t)]},
                        "convert_ids_to_tokens": lambda s, ids: [str(i) for i in ids]})(),
        torch.randn(10, 16))
    model, info = bood.train_latent_encoder(cfg, "mnist5k", anchors, progress=False)
    assert info["trained_now"] and info["history"][0]["loss"] < math.log(10) + 0.1
    again, info2 = bood.train_latent_encoder(cfg, "mnist5k", anchors, progress=False)
    assert not info2["trained_now"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
