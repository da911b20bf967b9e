"""Architectures: shapes of features and logits, the head as numpy, safe checkpoint loading."""
import numpy as np
import pytest
import torch

from ood_utils import models
from ood_utils.models import CheckpointError, build_model, feature_dim, head_weights, load_checkpoint

torch.set_num_threads(2)

# arch -> (input shape of one image, feature dim D)
SPECS = {
    "mnist_cnn": ((1, 28, 28), 128),
    "resnet18": ((3, 32, 32), 512),
    "wrn40_2": ((3, 32, 32), 128),
    "densenet100": ((3, 32, 32), 342),
    "resnet34": ((3, 32, 32), 512),
    "resnet34_768": ((3, 32, 32), 768),
    "densenet121": ((3, 64, 64), 1024),
    "bit_s_r101x1": ((3, 64, 64), 2048),
    "vit_b16": ((3, 224, 224), 768),
}


def test_registry_is_complete():
    assert set(SPECS) == set(models.ARCHITECTURES)


@pytest.mark.parametrize("arch", list(SPECS))
def test_features_logits_and_head_weights(arch):
    """forward == head(features); W h + b (numpy) reproduces the logits."""
    torch.manual_seed(0)
    shape, dim = SPECS[arch]
    model = build_model(arch, 7).eval()
    n = 1 if arch in ("vit_b16", "bit_s_r101x1", "densenet121") else 3
    x = torch.randn(n, *shape)
    with torch.no_grad():
        h = model.features(x)
        logits = model(x)
    assert h.shape == (n, dim) and logits.shape == (n, 7)
    assert feature_dim(model) == dim and isinstance(model.head, torch.nn.Linear)
    W, b = head_weights(model)
    assert W.shape == (7, dim) and b.shape == (7,) and W.dtype == b.dtype == np.float32
    np.testing.assert_allclose(h.numpy() @ W.T + b, logits.numpy(), rtol=1e-4, atol=1e-4)


def test_unknown_arch_lists_valid():
    with pytest.raises(ValueError, match="valid: mnist_cnn, resnet18"):
        build_model("resnet1000", 10)


def test_checkpoint_roundtrip_wrapped_and_prefixed(tmp_path):
    """A {'model': ...} file saved from a DataParallel model ('module.' prefix) loads exactly."""
    src = build_model("mnist_cnn", 10)
    path = tmp_path / "w.pt"
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    dst = load_checkpoint(build_model("mnist_cnn", 10), path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_checkpoint_safetensors(tmp_path):
    from safetensors.torch import save_file

    src = build_model("wrn40_2", 10)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    dst = build_model("wrn40_2", 10, checkpoint=tmp_path / "w.safetensors")
    assert torch.equal(src.head.weight, dst.head.weight)


def test_checkpoint_wrong_head_names_shapes(tmp_path):
    torch.save(build_model("mnist_cnn", 5).state_dict(), tmp_path / "w.pt")
    model = build_model("mnist_cnn", 10)
    before = model.fc.weight.clone()
    with pytest.raises(CheckpointError, match=r"head has shape \(5, 128\).*num_classes=10"):
        load_checkpoint(model, tmp_path / "w.pt")
    assert torch.equal(model.fc.weight, before)  # nothing was copied


def test_checkpoint_missing_and_unexpected_keys(tmp_path):
    state = build_model("mnist_cnn", 10).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["conv2.bias"]
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \[conv2.bias\].*unexpected keys \[extra.weight\]"):
        load_checkpoint(build_model("mnist_cnn", 10), tmp_path / "w.pt")


def test_checkpoint_refuses_pickled_objects_and_missing_files(tmp_path):
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "cfg": object()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(build_model("mnist_cnn", 10), tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(build_model("mnist_cnn", 10), tmp_path / "nope.pt")


def test_timm_native_checkpoint_is_renamed(tmp_path):
    """A checkpoint in timm's own names (BiT's 1x1-conv head) loads into the wrapper and gives its logits."""
    import timm

    torch.manual_seed(0)
    native = timm.create_model("resnetv2_101x1_bit", pretrained=False, num_classes=4).eval()
    torch.save(native.state_dict(), tmp_path / "bit.pt")
    model = build_model("bit_s_r101x1", 4, checkpoint=tmp_path / "bit.pt").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), native(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", models.SIZED_STEM)
def test_resnet_stem_follows_the_input_size(arch):
    """32 px: CIFAR stem (full resolution into stage 1); 224 px: ImageNet stem (4x smaller per side)."""
    seen = {}
    for size in (32, 224):
        model = build_model(arch, 5, image_size=size).eval()
        stage1 = []
        model.layer1.register_forward_hook(lambda m, i, o: stage1.append(o.shape[-1]))
        with torch.no_grad():
            h = model.features(torch.randn(2, 3, size, size))
        assert h.shape == (2, feature_dim(model))
        seen[size] = (model.imagenet_stem, stage1[0])
    assert seen == {32: (False, 32), 224: (True, 56)}


def test_image_size_is_ignored_by_fixed_resolution_archs():
    assert feature_dim(build_model("mnist_cnn", 10, image_size=28, in_channels=1)) == 128
