"""The text-conditioned latent space (BOOD eq. 2).

An image encoder h_theta is trained so that its L2-normalised feature z = h(x) / ||h(x)|| points at the
anchor of its class: the logits are cosine similarities to the fixed anchors, divided by a temperature t,

    L_c = E_(x,y) [ -log( exp(cos(z, Gamma(y)) / t) / sum_j exp(cos(z, Gamma(y_j)) / t) ) ].

The anchors are never trained: the latent space is the text model's embedding space, so a feature can later
stand in for a class token. ``mini`` uses the MNIST CNN's 128-d feature plus a linear map to the anchor
dimension; ``quick``/``paper`` the paper's ResNet-34 with its Linear(512, 768) (``models.ProjectedResNet34``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import models, paths, profiles
from .. import train as train_mod
from .anchors import Anchors

TEMPERATURES = (1.0, 0.1)        # the paper's t = 1; DreamOOD's public code uses 0.1


def cosine_logits(z: torch.Tensor, anchors: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Eq. (2)'s logits: cos(z, Gamma(y_j)) / t for every class j. ``z`` (N, D) need not be normalised."""
    return F.normalize(z, dim=1) @ F.normalize(anchors.to(z), dim=1).T / temperature


class CosineHead(nn.Module):
    """Logits against fixed anchors (a buffer: saved with the model, never trained)."""

    def __init__(self, anchors: torch.Tensor, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.register_buffer("anchors", anchors.detach().float().clone())
        self.temperature = float(temperature)
        self.in_features, self.out_features = anchors.shape[1], anchors.shape[0]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return cosine_logits(h, self.anchors, self.temperature)


class LatentEncoder(models.Classifier):
    """h_theta = ``project(backbone.features(x))``; ``head`` is the cosine classifier of eq. (2)."""

    def __init__(self, backbone: nn.Module, project: nn.Module, anchors: torch.Tensor, temperature: float):
        super().__init__()
        self.backbone, self.project = backbone, project
        self.head = CosineHead(anchors, temperature)

    def features(self, x):
        return self.project(self.backbone.features(x))


def build_latent_encoder(arch: str, anchors: Anchors | torch.Tensor, temperature: float = 1.0,
                         in_channels: int | None = None, image_size: int | None = None) -> LatentEncoder:
    """The encoder of ``arch`` with a projection to the anchor dimension and the cosine head."""
    vectors = anchors.vectors if isinstance(anchors, Anchors) else anchors
    num_classes, dim = vectors.shape
    kw = {"image_size": image_size} | ({} if in_channels is None else {"in_channels": in_channels})
    if arch == "resnet34_768":      # the paper's ResNet-34 already ends in Linear(512, dim)
        backbone = models.build_model(arch, num_classes, dim=dim, **kw)
        project = nn.Identity()
    else:
        backbone = models.build_model(arch, num_classes, **kw)
        project = nn.Linear(models.feature_dim(backbone), dim)
    backbone.head = nn.Identity()   # the cosine head of LatentEncoder replaces it
    return LatentEncoder(backbone, project, vectors, temperature)


def latent_loss(model, batch) -> torch.Tensor:
    """Eq. (2): cross-entropy of the cosine logits (``fit``'s ``loss_fn``)."""
    x, y = batch[0], batch[1]
    return F.cross_entropy(model(x), y)


def _digest(anchors: torch.Tensor) -> str:
    return hashlib.sha256(anchors.detach().cpu().float().numpy().tobytes()).hexdigest()[:12]


def checkpoint_path(cfg, dataset: str, arch: str, anchors: torch.Tensor, temperature: float) -> Path:
    """Training state of one latent encoder: every input that changes the weights is in the name."""
    key = train_mod.cache_key(cfg, dataset, arch).replace(f"{dataset}_{arch}_", "")
    name = f"{dataset}_{arch}_t{temperature:g}_a{_digest(anchors)}_{key}"
    return paths.cache_dir("bood", cfg.profile, "latent") / f"{name}.pt"


def train_latent_encoder(cfg, dataset: str, anchors: Anchors, *, arch: str | None = None,
                         temperature: float = 1.0, epochs: int | None = None, lr: float | None = None,
                         progress: bool = True) -> tuple[LatentEncoder, dict]:
    """Train (or resume, or read back) the aligned encoder of eq. (2) on ``dataset``'s training split.

    ``fit`` writes its checkpoint atomically after every epoch; a finished checkpoint is the cache, so a
    second call loads it in a second. Returns the model (eval mode, on the profile's device) and a dict with
    the ID test accuracy of the cosine classifier.
    """
    from .. import data

    info = data.ID_DATASETS[dataset]
    arch = arch or cfg.arch
    if len(anchors.class_names) != info.num_classes:
        raise ValueError(f"{len(anchors.class_names)} anchors for {info.num_classes} classes of {dataset!r}")
    profiles.seed_everything(cfg.seed)
    model = build_latent_encoder(arch, anchors, temperature, in_channels=info.channels, image_size=info.image_size)
    ckpt = checkpoint_path(cfg, dataset, arch, anchors.vectors, temperature)
    train_set = data.get_dataset(dataset, "train", train_transform=True, max_n=cfg.max_train, seed=cfg.seed)
    loader = train_mod._make_loader(train_set, cfg, train=True)
    run = train_mod.fit(model, loader, epochs=epochs or cfg.epochs, lr=lr or cfg.lr,
                        weight_decay=cfg.weight_decay, device=cfg.torch_device, ckpt_path=ckpt, amp=cfg.amp,
                        nesterov=cfg.profile != "mini", loss_fn=latent_loss, progress=progress)
    model.eval()
    return model, {"dataset": dataset, "arch": arch, "temperature": temperature,
                   "trained_now": run["start_epoch"] < run["epochs"], "checkpoint": str(ckpt),
                   "history": run["history"]}
