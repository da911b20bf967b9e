"""Feature cache: extracted once, served to the same model only, rebuilt when damaged."""
import sys
import types
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from ood_utils import profiles
from ood_utils.features import Features, cache_paths, get_features, model_fingerprint
from ood_utils.models import build_model, head_weights

torch.set_num_threads(2)


@pytest.fixture
def fake_data(monkeypatch, tmp_path):
    """A stand-in dataset registry: ID 'mnist5k' (labels 0-9) and an OOD set (labels -1)."""
    mod = types.ModuleType("ood_utils.data")
    mod.ID_DATASETS = {"mnist5k": SimpleNamespace(name="mnist5k", num_classes=10)}
    mod.calls = []

    def get_dataset(name, split="train", *, train_transform=False, max_n=None, seed=0, id_dataset=None):
        mod.calls.append((name, split, max_n))
        assert id_dataset == (None if name in mod.ID_DATASETS else "mnist5k")
        g = torch.Generator().manual_seed(zlib.crc32(f"{name}{split}".encode()))
        n = min(max_n or 300, 300)
        y = torch.randint(0, 10, (n,), generator=g) if name == "mnist5k" else torch.full((n,), -1)
        return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), y)

    mod.get_dataset = get_dataset
    monkeypatch.setitem(sys.modules, "ood_utils.data", mod)
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("OOD_KIT_SMOKE", raising=False)
    return mod


@pytest.fixture
def cfg(fake_data):
    return profiles.resolve("mini", device="cpu", max_eval=100)


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("mnist_cnn", 10)


def test_extracted_once_then_cached(fake_data, cfg):
    model = _model().train()
    out = get_features(model, "mnist5k", "test", cfg, "base", progress=False)
    assert isinstance(out, Features) and model.training  # mode restored
    assert out.feats.shape == (300, 128) and out.logits.shape == (300, 10) and out.labels.shape == (300,)
    assert out.feats.dtype == out.logits.dtype == np.float32 and out.labels.dtype == np.int64
    W, b = head_weights(model)
    np.testing.assert_allclose(out.feats @ W.T + b, out.logits, rtol=1e-4, atol=1e-4)
    fake_data.calls.clear()
    again = get_features(model, "mnist5k", "test", cfg, "base", progress=False)
    assert not fake_data.calls
    np.testing.assert_array_equal(again.feats, out.feats)


def test_sample_caps(fake_data, cfg):
    """All of the ID test set; cfg.max_eval of an OOD set."""
    model = _model()
    ood = get_features(model, "letters", "test", cfg, "base", progress=False)
    get_features(model, "mnist5k", "test", cfg, "base", progress=False)
    assert fake_data.calls == [("letters", "test", 100), ("mnist5k", "test", None)]
    assert len(ood) == 100 and (ood.labels == -1).all()


@pytest.mark.parametrize("damage", ["bytes", "sidecar", "shape"])
def test_damaged_cache_is_rebuilt(fake_data, cfg, damage):
    model = _model()
    out = get_features(model, "mnist5k", "test", cfg, "base", progress=False)
    npz, meta = cache_paths("mnist5k", "test", cfg, "base", None)
    if damage == "bytes":
        data = bytearray(npz.read_bytes())
        data[len(data) // 2] ^= 0xFF
        npz.write_bytes(bytes(data))
    elif damage == "sidecar":
        meta.write_text("{not json")
    else:  # a file that hashes fine but whose arrays disagree with the recorded shapes
        import json

        from ood_utils.train import sha256_file

        np.savez(npz.with_suffix(""), feats=out.feats[:5], logits=out.logits[:5], labels=out.labels[:5])
        m = json.loads(meta.read_text())
        m["sha256"] = sha256_file(npz)
        meta.write_text(json.dumps(m))
    fake_data.calls.clear()
    with pytest.warns(RuntimeWarning, match="rebuilding feature cache"):
        again = get_features(model, "mnist5k", "test", cfg, "base", progress=False)
    assert fake_data.calls  # extracted again
    np.testing.assert_array_equal(again.feats, out.feats)
    fake_data.calls.clear()
    get_features(model, "mnist5k", "test", cfg, "base", progress=False)
    assert not fake_data.calls  # and the rebuilt cache is valid


def test_other_model_never_reads_the_cache(fake_data, cfg):
    a, b = _model(0), _model(1)
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(_model(0))
    fa = get_features(a, "mnist5k", "test", cfg, "base", progress=False)
    with pytest.warns(RuntimeWarning, match="another model"):
        fb = get_features(b, "mnist5k", "test", cfg, "base", progress=False)
    assert not np.array_equal(fa.feats, fb.feats)


def test_smoke_has_its_own_cache(fake_data, monkeypatch):
    cfg = profiles.resolve("mini", device="cpu", max_eval=100)
    monkeypatch.setenv("OOD_KIT_SMOKE", "1")
    smoke = profiles.resolve("mini", device="cpu", max_eval=100)
    assert cache_paths("mnist5k", "test", cfg, "base", None) != cache_paths("mnist5k", "test", smoke, "base", None)
    with pytest.raises(ValueError, match="plain name"):
        cache_paths("mnist5k", "test", cfg, "../x", None)


def test_real_mini_benchmark_end_to_end(monkeypatch, tmp_path):
    """The embedded benchmark through get_classifier and get_features (smoke mode: seconds)."""
    from ood_utils import data, train

    monkeypatch.setenv("OOD_KIT_SMOKE", "1")
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path / "cache"))
    cfg = profiles.resolve("mini", device="cpu")
    model, info = train.get_classifier(cfg=cfg, progress=False)
    assert info["source"] == "trained" and info["smoke"] and 0.0 <= info["test_accuracy"] <= 1.0
    ood_name = next(iter(data.ood_sets(cfg.id_dataset)))
    id_test = get_features(model, cfg.id_dataset, "test", cfg, "base", progress=False)
    ood = get_features(model, ood_name, "test", cfg, "base", progress=False)
    assert id_test.feats.shape[1] == 128 and (id_test.labels >= 0).all()
    assert len(ood) <= cfg.max_eval and (ood.labels == -1).all()
    W, b = head_weights(model)
    np.testing.assert_allclose(ood.feats @ W.T + b, ood.logits, rtol=1e-4, atol=1e-4)
