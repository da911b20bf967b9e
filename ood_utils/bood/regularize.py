"""OOD regularisation with generated outliers (BOOD eq. 7).

The classifier g_theta is trained on ID images (cross-entropy) and, at the same time, taught to give a
different *energy* to the generated outliers. A small network phi reads the energy E(x) = log sum_j exp
g_j(x) and outputs two logits (ID, OOD); its binary cross-entropy is the regulariser:

    L = L_CE + beta * L_OOD,
    L_OOD = E_id[ -log sigma(phi(E(x_id))) ] + E_ood[ -log (1 - sigma(phi(E(x_ood)))) ]

(with two logits, sigma(.) is their softmax: the same binary cross-entropy). phi is Linear(1, 2) in the
public CIFAR code, Linear(1, h)-ReLU-Linear(h, 2) for ImageNet-100 (``phi_hidden = h``). At test time the
OOD score is the energy itself, higher = more ID.

Generated images are *resized* to the classifier's input (the public code random-crops 256 px images to
32 px, which keeps a 32 px corner of the outlier: we do not copy that), then normalised like the ID data.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import data, features, metrics, models, profiles
from .. import train as train_mod

FINE_TUNE_LR_FACTOR = 0.2       # reg_init='base' fine-tunes the base classifier at a fifth of its learning rate


def energy(logits: torch.Tensor) -> torch.Tensor:
    """E(x) = log sum_j exp(logit_j): the score (higher = more ID) and phi's input."""
    return torch.logsumexp(logits, dim=1)


def build_phi(hidden: int = 0) -> nn.Module:
    """phi: energy -> (ID, OOD) logits. ``hidden = 0``: Linear(1, 2); else a one-hidden-layer MLP."""
    if hidden < 0:
        raise ValueError(f"phi_hidden must be >= 0, got {hidden}")
    if hidden == 0:
        return nn.Linear(1, 2)
    return nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 2))


class RegularizedClassifier(models.Classifier):
    """A classifier plus phi, trained together (phi's weights live in the same checkpoint).

    ``features`` and ``head`` are the classifier's, so feature extraction and detectors see a plain model.
    """

    def __init__(self, classifier: nn.Module, phi_hidden: int = 0):
        super().__init__()
        self.classifier = models.unwrap_model(classifier)
        self.head = self.classifier.head
        self.phi = build_phi(phi_hidden)

    def features(self, x):
        return self.classifier.features(x)


def ood_loss(phi: nn.Module, logits_id: torch.Tensor, logits_ood: torch.Tensor) -> torch.Tensor:
    """Eq. (7)'s L_OOD: binary cross-entropy of phi(E), ID = class 1, OOD = class 0 (as VOS labels them),
    one mean over the ID and OOD images."""
    e = torch.cat([energy(logits_id), energy(logits_ood)]).unsqueeze(1)
    target = torch.cat([torch.ones(len(logits_id)), torch.zeros(len(logits_ood))]).long().to(e.device)
    return F.cross_entropy(phi(e), target)


def bood_loss(beta: float):
    """``fit``'s loss_fn for batches ``(x_id, y_id, x_ood)``: CE + beta * L_OOD (eq. 7)."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")

    def loss_fn(model, batch):
        x_id, y, x_ood = batch
        logits = model(torch.cat([x_id, x_ood]))
        logits_id, logits_ood = logits[:len(x_id)], logits[len(x_id):]
        phi = models.unwrap_model(model).phi
        return F.cross_entropy(logits_id, y) + beta * ood_loss(phi, logits_id, logits_ood)

    return loss_fn


def prepare_outliers(images01: torch.Tensor, size: int, channels: int, mean, std) -> torch.Tensor:
    """Generated images in [0, 1] (N, C, H, W) -> the classifier's input: resized (antialiased) to
    ``size`` x ``size``, grey <-> RGB as needed, normalised with the ID dataset's mean / std."""
    x = torch.as_tensor(images01).float()
    if x.ndim != 4:
        raise ValueError(f"outlier images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise ValueError(f"outlier images must be in [0, 1], got range [{x.min():.3f}, {x.max():.3f}]")
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    if x.shape[1] != channels:
        if channels == 1:
            x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        else:
            raise ValueError(f"cannot map {x.shape[1]} channels to {channels}")
    mean = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


class WithOutliers(Dataset):
    """Each ID item ``(x, y)`` comes with one outlier drawn uniformly at random (torch's global generator,
    which ``fit`` checkpoints, so a resumed run draws the same outliers)."""

    def __init__(self, id_dataset: Dataset, outliers: torch.Tensor):
        if len(outliers) == 0:
            raise ValueError("no outlier images: synthesis produced none")
        self.base, self.outliers = id_dataset, outliers

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index][:2]
        return x, y, self.outliers[int(torch.randint(len(self.outliers), ()))]


def digest(tensor: torch.Tensor) -> str:
    """A short content hash: the outlier set is part of a regularised model's cache name."""
    t = torch.as_tensor(tensor).detach().cpu().contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- training

def _checkpoint(cfg, dataset: str, name: str, seed: int, beta: float, phi_hidden: int, outliers) -> Path:
    from .. import paths

    base = train_mod.cache_key(cfg, dataset, cfg.arch).replace(f"{dataset}_{cfg.arch}_", "")
    what = "ce" if outliers is None else f"b{beta:g}_phi{phi_hidden}_o{digest(outliers)}"
    key = f"{dataset}_{cfg.arch}_{name}_{cfg.reg_init}_s{seed}_re{cfg.reg_epochs}_{what}_{base}"
    return paths.cache_dir("bood", cfg.profile, "classifiers") / f"{key}.pt"


def _initial_model(cfg, dataset: str) -> nn.Module:
    """``reg_init='base'``: the profile's base classifier of this dataset (cached, shared with the other
    tracks), fine-tuned; ``'scratch'``: a new network, as the paper trains."""
    if cfg.reg_init == "base":
        base, _ = train_mod.get_classifier(cfg=cfg, dataset=dataset, progress=False)
        return copy.deepcopy(base).cpu()
    info = data.ID_DATASETS[dataset]
    return models.build_model(cfg.arch, info.num_classes, in_channels=info.channels, image_size=info.image_size)


def train_classifier(cfg, dataset: str, outlier_images01=None, *, seed: int = 0, beta: float = 2.5,
                     phi_hidden: int = 0, name: str = "bood", progress: bool = True) -> RegularizedClassifier:
    """The OOD classifier of one run: eq. (7) with the decoded outliers, or plain cross-entropy (the
    "Energy" baseline of Tables 1-2) when ``outlier_images01`` is None. Same recipe, same data order for a
    given seed, so the two differ only by the regulariser. Cached by ``fit``'s checkpoint."""
    info = data.ID_DATASETS[dataset]
    dcfg = smoke_batch(with_values(cfg, id_dataset=dataset))
    outliers = None
    if outlier_images01 is not None:
        outliers = prepare_outliers(outlier_images01, info.image_size, info.channels, info.mean, info.std)
    ckpt = _checkpoint(dcfg, dataset, name, seed, beta, phi_hidden, outliers)
    model = RegularizedClassifier(_initial_model(dcfg, dataset), phi_hidden)
    profiles.seed_everything(seed)
    train_set = data.get_dataset(dataset, "train", train_transform=True, max_n=dcfg.max_train, seed=dcfg.seed)
    if outliers is not None:
        train_set = WithOutliers(train_set, outliers)
    loader = train_mod._make_loader(train_set, with_values(dcfg, seed=seed), train=True)
    lr = dcfg.lr * (FINE_TUNE_LR_FACTOR if dcfg.reg_init == "base" else 1.0)
    loss = bood_loss(beta) if outliers is not None else (lambda m, b: F.cross_entropy(m(b[0]), b[1]))
    train_mod.fit(model, loader, epochs=dcfg.reg_epochs, lr=lr, weight_decay=dcfg.weight_decay,
                  device=dcfg.torch_device, ckpt_path=ckpt, amp=dcfg.amp, nesterov=dcfg.profile != "mini",
                  loss_fn=loss, progress=progress)
    return model.eval()


SMOKE_BATCH = 32     # smoke runs of the paper profiles train ResNet-34 at 224 px on a CPU: keep memory small


def smoke_batch(cfg):
    """Smoke mode trains with batches of at most :data:`SMOKE_BATCH` (a 128-image ResNet-34 batch at
    224 px needs over 10 GB on a CPU); real runs keep their batch size."""
    return with_values(cfg, batch_size=min(cfg.batch_size, SMOKE_BATCH)) if cfg.smoke else cfg


def with_values(cfg, **values):
    """A copy of ``cfg`` with some values replaced (e.g. the ID dataset, the seed), without re-seeding."""
    return replace(cfg, values=MappingProxyType({**cfg.values, **values}))


def energy_scores(model, cfg, dataset: str, sets, tag: str, progress: bool = True) -> tuple[dict, float]:
    """Energy scores (higher = more ID) of the ID test set and each OOD set, and the ID test accuracy."""
    dcfg = cfg if cfg.id_dataset == dataset else with_values(cfg, id_dataset=dataset)
    test = features.get_features(model, dataset, "test", dcfg, tag, progress=progress)
    scores = {"id": energy(torch.from_numpy(test.logits)).numpy()}
    for name in sets:
        out = features.get_features(model, name, "test", dcfg, tag, progress=progress)
        scores[name] = energy(torch.from_numpy(out.logits)).numpy()
    return scores, metrics.accuracy(test.logits, test.labels)
