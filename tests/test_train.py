"""Training loop: resume after an interruption is bit-exact on CPU, bad checkpoints are never used;
get_classifier trains once and then reads its cache."""
import math
import sys
import types
import zlib
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ood_utils import profiles, train
from ood_utils.models import build_model
from ood_utils.train import evaluate_accuracy, fit

torch.set_num_threads(2)


def _toy_data(n=160, seed=1):
    """Separable 28x28 'digits': class c brightens row block c."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 28, 28, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 2 * c:2 * c + 3] += 2.0
    return x, y


X, Y = _toy_data()


class Interrupt(Exception):
    pass


def _run(ckpt, epochs=2, stop_at_step=None, lr=0.05, **kw):
    """Fresh model + loader with fixed seeds, as a new process would build them."""
    profiles.seed_everything(0)
    model = build_model("mnist_cnn", 10)
    loader = DataLoader(TensorDataset(X, Y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    steps = [0]

    def loss_fn(m, batch):
        steps[0] += 1
        if steps[0] == stop_at_step:
            raise Interrupt
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    out = fit(model, loader, epochs=epochs, lr=lr, weight_decay=5e-4, device="cpu", ckpt_path=ckpt,
              loss_fn=loss_fn, progress=False, **kw)
    return model, out


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_resume_after_interruption_is_bit_exact(tmp_path):
    ref, ref_out = _run(tmp_path / "ref.pt")
    assert ref_out["start_epoch"] == 0 and len(ref_out["history"]) == 2
    with pytest.raises(Interrupt):
        _run(tmp_path / "run.pt", stop_at_step=7)  # 5 steps per epoch: stops inside epoch 2
    model, out = _run(tmp_path / "run.pt")
    assert out["start_epoch"] == 1  # resumed at the second epoch
    assert [h["loss"] for h in out["history"]] == [h["loss"] for h in ref_out["history"]]
    assert _same(model, ref)


def test_finished_run_is_not_retrained(tmp_path):
    ref, _ = _run(tmp_path / "a.pt")
    again, out = _run(tmp_path / "a.pt")
    assert out["start_epoch"] == 2 and _same(ref, again)


def test_same_seed_same_weights(tmp_path):
    a, _ = _run(tmp_path / "a.pt", epochs=1)
    b, _ = _run(tmp_path / "b.pt", epochs=1)
    assert _same(a, b)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "sidecar"])
def test_corrupt_checkpoint_restarts_with_warning(tmp_path, damage):
    ref, _ = _run(tmp_path / "ref.pt")
    with pytest.raises(Interrupt):
        _run(tmp_path / "run.pt", stop_at_step=7)
    ckpt = tmp_path / "run.pt"
    if damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint")
    elif damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    else:
        (tmp_path / "run.pt.json").unlink()
    with pytest.warns(RuntimeWarning, match="starts from scratch"):
        model, out = _run(ckpt)
    assert out["start_epoch"] == 0 and _same(model, ref)


def test_other_recipe_restarts(tmp_path):
    with pytest.raises(Interrupt):
        _run(tmp_path / "run.pt", stop_at_step=7)
    with pytest.warns(RuntimeWarning, match="another recipe"):
        _, out = _run(tmp_path / "run.pt", lr=0.01)
    assert out["start_epoch"] == 0


def test_adam_trains_and_resumes_bit_exact(tmp_path):
    ref, ref_out = _run(tmp_path / "ref.pt", optimizer="adam", lr=1e-3, milestones=[1])
    assert ref_out["history"][-1]["loss"] < ref_out["history"][0]["loss"]
    assert ref_out["history"][1]["lr"] == pytest.approx(1e-4)      # x0.1 at epoch 1
    with pytest.raises(Interrupt):
        _run(tmp_path / "run.pt", stop_at_step=7, optimizer="adam", lr=1e-3, milestones=[1])
    model, out = _run(tmp_path / "run.pt", optimizer="adam", lr=1e-3, milestones=[1])
    assert out["start_epoch"] == 1 and _same(model, ref)
    sgd, _ = _run(tmp_path / "sgd.pt", lr=1e-3, milestones=[1])
    assert not _same(sgd, ref)                                     # the option changes the update


def test_a_checkpoint_of_another_optimizer_is_not_resumed(tmp_path):
    with pytest.raises(Interrupt):
        _run(tmp_path / "run.pt", stop_at_step=7)
    with pytest.warns(RuntimeWarning, match="another recipe"):
        _, out = _run(tmp_path / "run.pt", optimizer="adam")
    assert out["start_epoch"] == 0


def test_unknown_optimizer_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="sgd, adam"):
        _run(tmp_path / "a.pt", optimizer="lion")
    assert not (tmp_path / "a.pt").exists()


def test_amp_is_ignored_on_cpu_and_accuracy(tmp_path):
    model, out = _run(tmp_path / "a.pt", epochs=2, amp=True, lr=0.1)
    assert out["history"][-1]["loss"] < out["history"][0]["loss"]
    acc = evaluate_accuracy(model, DataLoader(TensorDataset(X, Y), batch_size=64), "cpu")
    assert 0.5 < acc <= 1.0


# ----------------------------------------------------------------------------------------------------------
# get_classifier on a stand-in dataset registry (the real one is exercised by the notebooks)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_data(monkeypatch, tmp_path):
    mod = types.ModuleType("ood_utils.data")
    mod.ID_DATASETS = {"mnist5k": SimpleNamespace(name="mnist5k", num_classes=10, image_size=28)}
    mod.calls = []

    def get_dataset(name, split="train", *, train_transform=False, max_n=None, seed=0, id_dataset=None):
        mod.calls.append((name, split, max_n))
        x, y = _toy_data(600 if split == "train" else 200, seed=zlib.crc32(f"{name}{split}".encode()))
        n = len(y) if max_n is None else min(max_n, len(y))
        return TensorDataset(x[:n], y[:n])

    mod.get_dataset = get_dataset
    monkeypatch.setitem(sys.modules, "ood_utils.data", mod)
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path / "cache"))
    return mod


def test_get_classifier_trains_once_then_loads(fake_data, monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "1")
    cfg = profiles.resolve("mini", device="cpu")
    model, info = train.get_classifier(cfg=cfg, progress=False)
    assert info["source"] == "trained" and info["smoke"] is True and 0 <= info["test_accuracy"] <= 1
    assert ("mnist5k", "train", profiles.SMOKE_CAPS["max_train"]) in fake_data.calls  # smoke caps the training set
    fake_data.calls.clear()
    cached, info2 = train.get_classifier(cfg=cfg, progress=False)
    assert info2["source"] == "cache" and info2["test_accuracy"] == info["test_accuracy"]
    assert not fake_data.calls  # nothing trained or evaluated again
    assert _same(model, cached) and not cached.training
    # training is deterministic: a forced retrain gives the same weights
    again, info3 = train.get_classifier(cfg=cfg, retrain=True, progress=False)
    assert info3["source"] == "trained" and _same(model, again)


def test_smoke_weights_never_serve_a_real_run(fake_data, monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "1")
    _, info = train.get_classifier(cfg=profiles.resolve("mini", device="cpu"), progress=False)
    monkeypatch.delenv("OOD_KIT_SMOKE")
    cfg = profiles.resolve("mini", device="cpu", epochs=1, max_train=512)  # same recipe, not smoke
    _, info2 = train.get_classifier(cfg=cfg, progress=False)
    assert info2["source"] == "trained" and info2["path"] != info["path"]


def test_corrupt_cached_classifier_is_retrained(fake_data, monkeypatch):
    monkeypatch.setenv("OOD_KIT_SMOKE", "1")
    cfg = profiles.resolve("mini", device="cpu")
    model, info = train.get_classifier(cfg=cfg, progress=False)
    with open(info["path"], "r+b") as fh:
        fh.seek(-16, 2)
        fh.write(b"\0" * 16)
    with pytest.warns(RuntimeWarning, match="unusable"):
        again, info2 = train.get_classifier(cfg=cfg, progress=False)
    assert info2["source"] == "trained" and _same(model, again)


def test_user_checkpoint_is_loaded_and_checked(fake_data, monkeypatch, tmp_path):
    monkeypatch.setenv("OOD_KIT_SMOKE", "1")
    src = build_model("mnist_cnn", 10)
    torch.save({"model": src.state_dict()}, tmp_path / "mine.pt")
    cfg = profiles.resolve("mini", device="cpu", checkpoint=str(tmp_path / "mine.pt"))
    model, info = train.get_classifier(cfg=cfg, progress=False)
    assert info["source"] == "checkpoint" and _same(model, src)
    assert not any(split == "train" for _, split, _ in fake_data.calls)
    torch.save(build_model("mnist_cnn", 3).state_dict(), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="num_classes=10"):
        train.get_classifier(cfg=profiles.resolve("mini", device="cpu", checkpoint=str(tmp_path / "bad.pt")))


def test_a_nan_loss_stops_training_naming_epoch_and_step(tmp_path):
    profiles.seed_everything(0)
    model = build_model("mnist_cnn", 10)
    loader = DataLoader(TensorDataset(X, Y), batch_size=32)          # 5 steps per epoch
    calls = [0]

    def loss_fn(m, batch):
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(m(batch[0]), batch[1])
        return loss * float("nan") if calls[0] == 8 else loss          # epoch 2, step 3

    with pytest.raises(FloatingPointError, match=r"epoch 2, step 3 of 5"):
        fit(model, loader, epochs=3, lr=0.05, weight_decay=5e-4, device="cpu", ckpt_path=tmp_path / "m.pt",
            loss_fn=loss_fn, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (AMP path)")
def test_amp_on_cuda_trains_and_resumes(tmp_path):
    """fp16 autocast + GradScaler on a GPU: finite, falling losses; the scaler's state is checkpointed and a
    finished run is read back instead of retrained."""
    def run():
        profiles.seed_everything(0)
        model = build_model("mnist_cnn", 10)
        loader = DataLoader(TensorDataset(X, Y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
        return model, fit(model, loader, epochs=3, lr=0.05, weight_decay=5e-4, device="cuda",
                          ckpt_path=tmp_path / "amp.pt", amp=True, progress=False)

    model, out = run()
    losses = [h["loss"] for h in out["history"]]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    state = torch.load(tmp_path / "amp.pt", weights_only=True)
    assert state["recipe"]["amp"] and state["scaler"]["scale"] > 0
    again, out2 = run()
    assert out2["start_epoch"] == 3 and _same(model, again)
