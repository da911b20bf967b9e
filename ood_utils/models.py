"""Classifiers used by the three papers, all with one shape: ``logits = head(features(x))``.

Every detector in the kit reads the penultimate feature ``h = model.features(x)`` (N, D) and the last layer
``f(x) = W h + b`` (``model.head``, an ``nn.Linear``). Keeping that split explicit in every architecture is
what lets energy, ViM, NME, fDBD, ... be written once.

=================  ==========================================  ======  =================================
name               what                                        D       used by
=================  ==========================================  ======  =================================
``mnist_cnn``      LeNet-like CNN for 28x28 grey images        128     every track, profile ``mini``
``resnet18``       ResNet-18, CIFAR stem (3x3 conv, no pool)*  512     GReg, MME (CIFAR)
``wrn40_2``        Wide-ResNet-40-2                            128     GReg (CIFAR)
``densenet100``    DenseNet-BC-100, growth 12                  342     GReg, MME (CIFAR)
``resnet34``       ResNet-34, CIFAR stem*                      512     BOOD (CIFAR-100, ImageNet-100)
``resnet34_768``   ResNet-34 + Linear(512, 768) projection     768     BOOD: the text-aligned latent
``densenet121``    torchvision DenseNet-121                    1024    GReg (ImageNet-10)
``bit_s_r101x1``   timm ResNetV2-101x1 (BiT)                   2048    MME (ImageNet)
``vit_b16``        timm ViT-B/16                               768     MME (ImageNet)
=================  ==========================================  ======  =================================

* The ResNets take the stem that fits their input (``image_size``): the CIFAR stem up to 64 px, the
ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool) above, as for BOOD's ImageNet-100 at 224 px. A CIFAR
stem at 224 px would keep 224 x 224 x 64 activations through the first stage: 16x the memory and compute.

ImageNet models are built with random weights and never download anything; pretrained weights come only
from a checkpoint file the user supplies (:func:`load_checkpoint`, safe loading, keys and head checked).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded into the model (missing/unexpected keys, wrong head, unreadable file)."""


class Classifier(nn.Module):
    """Base class: subclasses build ``self.head`` and implement :meth:`features`."""

    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a checkpoint written by the architecture's home library onto this module's names."""
        return state


# ----------------------------------------------------------------------------------------------------------
# mini: a LeNet-sized CNN (about 0.06 s per training step of 128 images on 2 CPU cores)
# ----------------------------------------------------------------------------------------------------------
class MnistCNN(Classifier):
    """conv5-pool-conv5-pool-fc for 28x28 grey digits; the 128-d ReLU output of the fc layer is ``h``.

    The features are non-negative like a ResNet's pooled features, so activation-shaping detectors
    (ReAct, ASH, SCALE) behave on ``mini`` as they do on the papers' networks.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, dim: int = 128):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 5, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 5, padding=2)
        self.fc = nn.Linear(2 * width * 7 * 7, dim)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)   # 28 -> 14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # 14 -> 7
        return F.relu(self.fc(x.flatten(1)))


# ----------------------------------------------------------------------------------------------------------
# ResNets (He et al. 2016): the CIFAR stem (one 3x3 conv, no max-pool) or, above 64 px, the ImageNet stem
# ----------------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection shortcut when the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Classifier):
    """ResNet-18/34; ``h`` is the 512-d global-average-pooled output of the last stage. The stem follows the
    input size: CIFAR's (3x3 conv, stride 1) up to 64 px, ImageNet's (7x7 conv stride 2, max-pool) above."""

    IMAGENET_STEM_ABOVE = 64

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        self.imagenet_stem = image_size > self.IMAGENET_STEM_ABOVE
        if self.imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, cin = [], 64
        for i, n in enumerate(blocks):
            cout, stride = 64 * 2 ** i, 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(BasicBlock(cin, cout, stride if j == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = nn.Linear(512, num_classes)

    def trunk(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.imagenet_stem:
            x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def features(self, x):
        return self.trunk(x)


class ProjectedResNet34(ResNet):
    """BOOD's image encoder: ResNet-34 followed by Linear(512, 768).

    The 768-d output lives in the same space as the diffusion model's token embeddings (eq. 2 of BOOD):
    it is the feature the boundary walks move, so it is ``features(x)`` here and the head reads it.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dim: int = 768, image_size: int = 32):
        super().__init__((3, 4, 6, 3), num_classes, in_channels, image_size)
        self.project = nn.Linear(512, dim)
        self.head = nn.Linear(dim, num_classes)

    def features(self, x):
        return self.project(self.trunk(x))


# ----------------------------------------------------------------------------------------------------------
# Wide-ResNet-40-2 (Zagoruyko & Komodakis 2016): pre-activation blocks, widths 16k, 32k, 64k
# ----------------------------------------------------------------------------------------------------------
class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.drop = drop
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        # the projection shortcut reads the pre-activated input, as in the original implementation
        short = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.drop > 0:
            o = F.dropout(o, self.drop, self.training)
        return self.conv2(o) + short


class WideResNet(Classifier):
    """WRN-depth-k for 32x32 inputs; ``h`` is the 64k-d pooled feature (128-d for WRN-40-2)."""

    def __init__(self, depth: int = 40, widen: int = 2, num_classes: int = 10, in_channels: int = 3,
                 drop: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, stride in enumerate((1, 2, 2)):
            layers = []
            for j in range(n):
                layers.append(WideBlock(cin, widths[i + 1], stride if j == 0 else 1, drop))
                cin = widths[i + 1]
            blocks.append(nn.Sequential(*layers))
        self.block1, self.block2, self.block3 = blocks
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def features(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1)


# ----------------------------------------------------------------------------------------------------------
# DenseNet-BC (Huang et al. 2017): bottleneck layers, compression 0.5
# ----------------------------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k); the k new maps are concatenated to the input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


class Transition(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(Classifier):
    """DenseNet-BC-100 (growth 12): three dense blocks of 16 layers; ``h`` is 342-d (24 + 16*12 per block,
    halved by each transition: 24 -> 216 -> 108 -> 300 -> 150 -> 342)."""

    def __init__(self, depth: int = 100, growth: int = 12, num_classes: int = 10, in_channels: int = 3,
                 reduction: float = 0.5):
        super().__init__()
        n = (depth - 4) // 6  # bottleneck layers per block (each has two convs)
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)
        stages = []
        for i in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            stages.append(nn.Sequential(*layers))
            if i < 2:
                cout = int(c * reduction)
                stages.append(Transition(c, cout))
                c = cout
        self.block1, self.trans1, self.block2, self.trans2, self.block3 = stages
        self.bn = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, num_classes)

    def features(self, x):
        x = self.trans1(self.block1(self.conv1(x)))
        x = self.block3(self.trans2(self.block2(x)))
        return F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1).flatten(1)


# ----------------------------------------------------------------------------------------------------------
# ImageNet models from torchvision / timm, wrapped to expose features + head
# ----------------------------------------------------------------------------------------------------------
_TV_OLD_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class TorchvisionDenseNet121(Classifier):
    """torchvision's DenseNet-121 (random init; ``weights=None``): ``h`` is its 1024-d pooled feature."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        import torchvision

        net = torchvision.models.densenet121(weights=None)
        self.trunk = net.features
        self.head = nn.Linear(net.classifier.in_features, num_classes)

    def features(self, x):
        return F.adaptive_avg_pool2d(F.relu(self.trunk(x)), 1).flatten(1)

    def convert_state_dict(self, state):
        """torchvision names ``features.*`` / ``classifier.*`` (old files: ``norm.1``) -> ``trunk.*`` / ``head.*``."""
        out = {}
        for key, value in state.items():
            m = _TV_OLD_DENSENET.match(key)
            if m:  # 'denselayer1.norm.1.weight' was the name before torchvision 0.3
                key = m.group(1) + m.group(2)
            key = re.sub(r"^features\.", "trunk.", key)
            key = re.sub(r"^classifier\.", "head.", key)
            out[key] = value
        return out


class TimmClassifier(Classifier):
    """A timm backbone created with ``num_classes=0`` (its forward returns pre-logits) plus our own head.

    ``pretrained=False`` always: timm then never reaches the network. Load weights from a file instead.
    """

    def __init__(self, timm_name: str, num_classes: int = 1000, **timm_kw):
        super().__init__()
        import timm

        self.timm_name = timm_name
        self.body = timm.create_model(timm_name, pretrained=False, num_classes=0, **timm_kw)
        self.head = nn.Linear(self.body.num_features, num_classes)

    def features(self, x):
        return self.body(x)

    def convert_state_dict(self, state):
        """timm checkpoint names (``head.fc.*`` 1x1 conv for BiT, ``head.*`` for ViT) -> ``body.*`` / ``head.*``."""
        out = {}
        for key, value in state.items():
            m = re.match(r"^head(?:\.fc)?\.(weight|bias)$", key)
            if m:
                out[f"head.{m.group(1)}"] = value.flatten(1) if value.dim() == 4 else value
            else:
                out[f"body.{key}"] = value
        return out


# ----------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------
ARCHITECTURES: dict[str, Callable[..., Classifier]] = {
    "mnist_cnn": lambda num_classes, **kw: MnistCNN(num_classes, **kw),
    "resnet18": lambda num_classes, **kw: ResNet((2, 2, 2, 2), num_classes, **kw),
    "wrn40_2": lambda num_classes, **kw: WideResNet(40, 2, num_classes, **kw),
    "densenet100": lambda num_classes, **kw: DenseNetBC(100, 12, num_classes, **kw),
    "resnet34": lambda num_classes, **kw: ResNet((3, 4, 6, 3), num_classes, **kw),
    "resnet34_768": lambda num_classes, **kw: ProjectedResNet34(num_classes, **kw),
    "densenet121": lambda num_classes, **kw: TorchvisionDenseNet121(num_classes, **kw),
    "bit_s_r101x1": lambda num_classes, **kw: TimmClassifier("resnetv2_101x1_bit", num_classes, **kw),
    "vit_b16": lambda num_classes, **kw: TimmClassifier("vit_base_patch16_224", num_classes, **kw),
}


#: the architectures whose stem follows the input size (the others are built for one resolution)
SIZED_STEM = ("resnet18", "resnet34", "resnet34_768")


def build_model(arch: str, num_classes: int, *, checkpoint: str | Path | None = None,
                image_size: int | None = None, **kw) -> Classifier:
    """Build ``arch`` with a ``num_classes``-way head (random init unless ``checkpoint`` is given).
    ``image_size``: the input resolution, which picks the ResNets' stem (:data:`SIZED_STEM`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if image_size is not None and arch in SIZED_STEM:
        kw["image_size"] = image_size
    model = ARCHITECTURES[arch](num_classes, **kw)
    model.arch = arch
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def head_weights(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The last layer as numpy: ``W`` (C, D) and ``b`` (C,), float32, so ``logits = h @ W.T + b``."""
    head = unwrap_model(model).head
    W = head.weight.detach().float().cpu().numpy().copy()
    b = head.bias.detach().float().cpu().numpy().copy() if head.bias is not None else np.zeros(len(W), np.float32)
    return W, b


def feature_dim(model: nn.Module) -> int:
    """D, the width of the penultimate feature ``h``."""
    return unwrap_model(model).head.in_features


def num_classes_of(model: nn.Module) -> int:
    return unwrap_model(model).head.out_features


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying classifier of a DataParallel / DistributedDataParallel / compiled wrapper."""
    while hasattr(model, "module") and not hasattr(model, "head"):
        model = model.module
    return getattr(model, "_orig_mod", model)


# ----------------------------------------------------------------------------------------------------------
# checkpoints from outside: safe loading, names normalised, everything checked before a single copy
# ----------------------------------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``: no pickled code).

    Accepts a raw state dict or a dict holding one under ``"model"`` or ``"state_dict"``; strips the
    ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unreadable, truncated, or pickles arbitrary objects
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (top-level keys: {_few(state)})")
    return {_strip_prefixes(k): v for k, v in state.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _few(keys, n: int = 8) -> str:
    keys = list(keys) if isinstance(keys, (dict, set, list, tuple)) else [type(keys).__name__]
    shown = ", ".join(map(str, keys[:n]))
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every mismatch between ``state`` and ``model`` (nothing copied)."""
    model = unwrap_model(model)
    expected = model.state_dict()
    head_w = state.get("head.weight")
    if head_w is not None and head_w.shape != expected["head.weight"].shape:
        raise CheckpointError(
            f"{source}: head has shape {tuple(head_w.shape)} ({head_w.shape[0]} classes, {head_w.shape[-1]}-d "
            f"features) but the model expects {tuple(expected['head.weight'].shape)} "
            f"(num_classes={model.head.out_features}); build the model with the checkpoint's number of classes")
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: "
                              f"missing keys [{_few(missing)}]; unexpected keys [{_few(unexpected)}]")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{source}: shape mismatch: {_few(wrong)}")


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights from ``path`` into ``model`` after checking keys and the head's shape; returns ``model``.

    Checkpoints written by torchvision/timm (``features.*``, ``head.fc.*``, ...) are renamed by the
    wrapper's :meth:`Classifier.convert_state_dict` when the kit's own names do not match.
    """
    inner = unwrap_model(model)
    state = read_state_dict(path)
    own = set(inner.state_dict())
    if set(state) != own and isinstance(inner, Classifier):
        converted = inner.convert_state_dict(state)
        if len(own & set(converted)) > len(own & set(state)):
            state = converted
    check_state_dict(inner, state, source=f"checkpoint {path}")
    inner.load_state_dict(state, strict=True)
    return model


#: torchvision's ImageNet-1K weights the kit fine-tunes from (GReg's Table 3): file name and address
TORCHVISION_WEIGHTS = {"densenet121": ("densenet121-a639ec97.pth",
                                       "https://download.pytorch.org/models/densenet121-a639ec97.pth")}


def torchvision_weights_path(arch: str) -> Path:
    """The local file of torchvision's ImageNet weights of ``arch``: ``<cache>/weights/<file>`` or torch hub's
    checkpoint folder; a FileNotFoundError names the file, its address and where to put it when absent."""
    from . import paths

    if arch not in TORCHVISION_WEIGHTS:
        raise ValueError(f"no torchvision ImageNet weights known for {arch!r}; known: {', '.join(TORCHVISION_WEIGHTS)}")
    name, url = TORCHVISION_WEIGHTS[arch]
    places = [paths.cache_dir("weights") / name, Path(torch.hub.get_dir()) / "checkpoints" / name]
    for place in places:
        if place.is_file():
            return place
    raise FileNotFoundError(f"torchvision's ImageNet weights of {arch} are not here: download {url} and save it "
                            f"as {places[0]} (or {places[1]})")


def load_imagenet_pretrained(model: nn.Module, arch: str, class_rows=None) -> nn.Module:
    """Load torchvision's ImageNet-1K weights of ``arch`` into ``model`` (read with ``weights_only=True``);
    ``class_rows`` (ImageNet-1K class indices, one per class of ``model``) keeps those rows of the 1000-way
    classifier, so an ImageNet subset's classifier starts as the pretrained network's own."""
    inner = unwrap_model(model)
    state = inner.convert_state_dict(read_state_dict(torchvision_weights_path(arch)))
    if class_rows is not None:
        rows = torch.as_tensor(list(class_rows), dtype=torch.long)
        state["head.weight"], state["head.bias"] = state["head.weight"][rows], state["head.bias"][rows]
    check_state_dict(inner, state, source=f"torchvision weights of {arch}")
    inner.load_state_dict(state, strict=True)
    return model
