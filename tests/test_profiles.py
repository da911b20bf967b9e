"""Profiles: validation before work, smoke caps, explicit overrides win, seeding, device resolution."""
import numpy as np
import pytest
import torch

from ood_utils import profiles
from ood_utils.profiles import ConfigError, resolve


@pytest.fixture
def no_smoke(monkeypatch):
    monkeypatch.delenv(profiles.SMOKE_ENV, raising=False)


def test_unknown_profile_lists_valid(no_smoke):
    with pytest.raises(ConfigError, match="mini, quick, paper"):
        resolve("tiny")


def test_unknown_parameter_lists_valid(no_smoke):
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) epoch .*valid: .*epochs"):
        resolve("mini", epoch=3)


def test_wrong_type_and_range(no_smoke):
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        resolve("mini", epochs=0)
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        resolve("mini", epochs="3")
    with pytest.raises(ConfigError, match="'amp' must be bool"):
        resolve("mini", amp=1)


def test_unknown_device(no_smoke):
    with pytest.raises(ConfigError, match="unknown device"):
        resolve("mini", device="gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_gpu_is_clear(no_smoke):
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve("mini", device="cuda")


def test_defaults_and_none_means_default(no_smoke):
    cfg = resolve("mini", epochs=None, seed=3)
    assert cfg.epochs == profiles.BASE_DEFAULTS["epochs"]["mini"]
    assert cfg.seed == 3 and not cfg.smoke
    assert cfg.torch_device.type in ("cpu", "cuda", "mps")
    with pytest.raises(AttributeError, match="no parameter 'nope'"):
        cfg.nope


def test_smoke_caps_only_what_was_not_set(monkeypatch):
    monkeypatch.setenv(profiles.SMOKE_ENV, "1")
    cfg = resolve("paper")
    assert cfg.smoke and cfg.epochs == profiles.SMOKE_CAPS["epochs"] and cfg.max_train == profiles.SMOKE_CAPS["max_train"]
    assert resolve("paper", epochs=3).epochs == 3  # an explicit override (papermill -p) wins


def test_track_parameters(no_smoke):
    cfg = resolve("mini", track="mme", preset="imagenet")
    assert cfg.preset == "imagenet"
    assert resolve("mini", track="mme", preset="reference_imagenet").preset == "reference_imagenet"  # public code
    with pytest.raises(ConfigError, match="valid: cifar, imagenet"):
        resolve("mini", track="mme", preset="svhn")
    with pytest.raises(ConfigError, match="unknown track"):
        resolve("mini", track="nope")
    with pytest.raises(ConfigError, match="unknown parameter"):
        resolve("mini", preset="cifar")  # a track parameter needs its track


def test_seeding_is_reproducible(no_smoke):
    resolve("mini", seed=7)
    a = (np.random.rand(3), torch.rand(3))
    resolve("mini", seed=7)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_one_cpu_thread_restores_the_thread_count_and_leaves_gpus_alone():
    import torch

    from ood_utils.threads import one_cpu_thread

    before = torch.get_num_threads()
    with one_cpu_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with one_cpu_thread("cpu"):
            raise RuntimeError("the count is restored on errors too")
    assert torch.get_num_threads() == before
    with one_cpu_thread("cuda:0"):                     # a GPU run keeps its CPU threads (no CUDA needed)
        assert torch.get_num_threads() == before

    @one_cpu_thread()
    def threads():
        return torch.get_num_threads()

    assert threads() == 1 and torch.get_num_threads() == before
