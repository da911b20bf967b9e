"""OOD regularisation with generated outliers (BOOD eq. 7).

The classifier g_theta is trained on ID images (cross-entropy) and, at the same time, taught to give a
different *energy* to the generated outliers. A small network phi reads the energy E(x) = log sum_j exp
g_j(x) and outputs two logits (ID, OOD); its binary cross-entropy is the regulariser:

    L = L_CE + beta * L_OOD,
    L_OOD = E_id[ -log sigma(phi(E(x_id))) ] + E_ood[ -log (1 - sigma(phi(E(x_ood)))) ]

(with two logits, sigma(.) is their softmax: the same binary cross-entropy). The paper's phi is "a 3-layer
MLP of the same structure as VOS": Linear(1, 512)-ReLU-Linear(512, 2) (input, hidden, output layer; VOS's
and DreamOOD's ImageNet code), the default here (``phi_hidden = 512``); ``phi_hidden = 0`` gives the
Linear(1, 2) of the public CIFAR code. At test time the OOD score is the energy itself, higher = more ID.

How phi starts matters. A classifier that is already trained (``reg_init='base'``) gives energies around
10-15, and a phi with PyTorch's default initialisation reads that raw number with random weights: its first
L_OOD can be ten times log 2 and point the wrong way, and with beta = 2.5 the regulariser then outweighs the
cross-entropy hundreds of times and flattens the energy. So phi (i) is built under the run's seed,
(ii) reads a *standardised* energy (E - center) / scale, with center and scale fixed from the start model's
energies on one batch (an affine reparametrisation of phi's first layer: still a function of E, as eq. 7
asks), and (iii) has a zero output layer, so it starts at chance: L_OOD = log 2 at step 0 whatever the
energy scale.

Generated images are *resized* to the classifier's input, then normalised like the ID data
(``outlier_transform = "resize"``, the paper's reading: the whole outlier is the training input). DreamOOD's
public code instead random-crops them: RandomCrop(32, padding 4) of a 256 px image keeps a 32 px window of the
outlier, drawn again at every use. ``outlier_transform = "random_crop"`` runs that recipe
(:class:`OutlierCrops`), to compare the two.
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


#: the paper's phi: "a 3-layer MLP as VOS", 1 -> 512 -> 2
PAPER_PHI_HIDDEN = 512
MIN_ENERGY_SCALE = 1.0    # a new network's energies barely vary: do not blow that spread up to 1


class Phi(nn.Module):
    """phi of eq. (7): energy -> (ID, OOD) logits, reading (E - center) / scale.

    ``hidden = 0``: Linear(1, 2); else Linear(1, hidden)-ReLU-Linear(hidden, 2). The output layer starts at
    zero (chance: both logits 0), the standardisation at (0, 1) until :meth:`standardise` fixes it."""

    def __init__(self, hidden: int = PAPER_PHI_HIDDEN):
        super().__init__()
        if hidden < 0:
            raise ValueError(f"phi_hidden must be >= 0, got {hidden}")
        self.hidden = hidden
        self.net = nn.Linear(1, 2) if hidden == 0 else nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        out = self.net if hidden == 0 else self.net[-1]
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.register_buffer("center", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def standardise(self, energies: torch.Tensor) -> None:
        """Fix center / scale from the start model's energies (ID and outliers together)."""
        e = torch.as_tensor(energies, dtype=torch.float32).flatten()
        if e.numel() < 2 or not torch.isfinite(e).all():
            raise ValueError(f"standardise needs at least two finite energies, got {e.numel()}")
        self.center.fill_(float(e.mean()))
        self.scale.fill_(max(float(e.std()), MIN_ENERGY_SCALE))

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net((e - self.center) / self.scale)

    def id_logit(self, e: torch.Tensor) -> torch.Tensor:
        """log p(ID) - log p(OOD): higher = phi reads the energy as ID."""
        two = self(e.reshape(-1, 1))
        return two[:, 1] - two[:, 0]


def build_phi(hidden: int = PAPER_PHI_HIDDEN) -> Phi:
    """phi at chance: see :class:`Phi`. ``hidden = 0``: Linear(1, 2) (the public CIFAR code)."""
    return Phi(hidden)


class RegularizedClassifier(models.Classifier):
    """A classifier plus phi, trained together (phi's weights live in the same checkpoint).

    ``features`` and ``head`` are the classifier's, so feature extraction and detectors see a plain model.
    """

    def __init__(self, classifier: nn.Module, phi_hidden: int = PAPER_PHI_HIDDEN):
        super().__init__()
        self.classifier = models.unwrap_model(classifier)
        self.head = self.classifier.head
        self.phi = build_phi(phi_hidden)
        self.log: dict = {}        # filled by train_classifier: loss curve, phi on its own training data

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
    """Generated images in [0, 1] (N, C, H, W; uint8 in [0, 255] also read) -> the classifier's input:
    resized (antialiased) to ``size`` x ``size``, grey <-> RGB as needed, normalised with the ID dataset's
    mean / std."""
    x = torch.as_tensor(images01)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
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


OUTLIER_TRANSFORMS = ("resize", "random_crop")
CROP_PADDING = 4       # DreamOOD's RandomCrop(32, padding=4)


def crops_fit(side: int, size: int) -> bool:
    """Whether ``size`` px windows fit in an image of ``side`` px once padded."""
    return side + 2 * CROP_PADDING >= size


class OutlierCrops:
    """Outliers as DreamOOD's public code feeds them: each access returns a random ``size`` x ``size`` window
    of the image at the resolution it was generated at, after zero padding of :data:`CROP_PADDING` pixels,
    normalised like the ID data. The windows are drawn with torch's global generator, which ``fit``
    checkpoints, so a resumed run draws the same crops. The images stay at their generated size (uint8 for
    the saved SD images: 100,000 RGB images of 256 px take 20 GB of memory)."""

    def __init__(self, images: torch.Tensor, size: int, channels: int, mean, std):
        images = torch.as_tensor(images)
        if images.ndim != 4:
            raise ValueError(f"outlier images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if not crops_fit(min(images.shape[-2:]), size):
            raise ValueError(f"outlier images of {tuple(images.shape[-2:])} px are too small for {size} px crops")
        self.images, self.size, self.channels, self.mean, self.std = images, size, channels, mean, std

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return prepare_outliers(x, self.size, self.channels, self.mean, self.std)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        x = F.pad(self.images[index], (CROP_PADDING,) * 4)
        i, j = (int(torch.randint(n - self.size + 1, ())) for n in x.shape[-2:])
        return self._prepare(x[None, :, i:i + self.size, j:j + self.size])[0]

    def centred(self, rows: torch.Tensor) -> torch.Tensor:
        """The centre windows of some images (no padding, no randomness): what a health probe reads."""
        h, w = self.images.shape[-2:]
        top, left = max(0, (h - self.size) // 2), max(0, (w - self.size) // 2)
        return self._prepare(self.images[rows][..., top:top + self.size, left:left + self.size])


def training_outliers(images01: torch.Tensor, dataset: str, transform: str = "resize"):
    """The generated images as the classifier trains on them: one normalised tensor at the ID resolution
    (``"resize"``), or :class:`OutlierCrops` (``"random_crop"``, the public code)."""
    info = data.ID_DATASETS[dataset]
    if transform == "resize":
        return prepare_outliers(images01, info.image_size, info.channels, info.mean, info.std)
    if transform == "random_crop":
        return OutlierCrops(images01, info.image_size, info.channels, info.mean, info.std)
    raise ValueError(f"unknown outlier_transform {transform!r}; valid: {', '.join(OUTLIER_TRANSFORMS)}")


def outliers_digest(outliers) -> str:
    """The content hash of the training outliers; the crops' name says they are crops."""
    return f"crop{digest(outliers.images)}" if isinstance(outliers, OutlierCrops) else digest(outliers)


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

PHI_START = "std-chance"    # how phi starts (part of the cache name: a checkpoint from another start is another run)
N_PROBE = 512                # training ID images / outliers on which phi's own separation is measured


def _checkpoint(cfg, dataset: str, name: str, seed: int, beta: float, phi_hidden: int, outliers) -> Path:
    from .. import paths

    base = train_mod.cache_key(cfg, dataset, cfg.arch).replace(f"{dataset}_{cfg.arch}_", "")
    what = (f"ce_phi{phi_hidden}" if outliers is None
            else f"b{beta:g}_phi{phi_hidden}-{PHI_START}_o{outliers_digest(outliers)}")
    key = f"{dataset}_{cfg.arch}_{name}_{cfg.reg_init}_s{seed}_re{cfg.reg_epochs}_{what}_{base}"
    return paths.cache_dir("bood", cfg.profile, "classifiers") / f"{key}.pt"


def initial_model(cfg, dataset: str) -> nn.Module:
    """``reg_init='base'``: the profile's base classifier of this dataset (cached, shared with the other
    tracks), fine-tuned; ``'scratch'``: a new network, as the paper trains."""
    if cfg.reg_init == "base":
        base, _ = train_mod.get_classifier(cfg=cfg, dataset=dataset, progress=False)
        return copy.deepcopy(base).cpu()
    info = data.ID_DATASETS[dataset]
    return models.build_model(cfg.arch, info.num_classes, in_channels=info.channels, image_size=info.image_size)


@torch.no_grad()
def energies_of(model: nn.Module, images: torch.Tensor, device, batch_size: int = 128) -> torch.Tensor:
    """E(x) of a stack of (normalised) images, in eval mode, on CPU."""
    was_training = model.training
    model.eval().to(device)
    out = torch.cat([energy(model(images[i:i + batch_size].to(device)).float()).cpu()
                     for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def _probe(dataset: str, outliers: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to :data:`N_PROBE` training ID images (no augmentation) and outliers, evenly spread over the
    outlier set (it is ordered by class)."""
    train = data.get_dataset(dataset, "train", max_n=cfg.max_train, seed=cfg.seed)
    n_id = min(N_PROBE, len(train))
    x_id = torch.stack([train[i][0] for i in torch.linspace(0, len(train) - 1, n_id).long().tolist()])
    pick = torch.linspace(0, len(outliers) - 1, min(N_PROBE, len(outliers))).long()
    return x_id, outliers.centred(pick) if isinstance(outliers, OutlierCrops) else outliers[pick]


def phi_on_training_data(model: "RegularizedClassifier", x_id, x_ood, device) -> dict:
    """phi's ID logit and the energy on the run's own training ID images and outliers: the data a working
    regulariser must separate (a health check)."""
    e_id, e_ood = energies_of(model, x_id, device), energies_of(model, x_ood, device)
    with torch.no_grad():
        phi = model.phi.cpu()
        out = {"phi_id": phi.id_logit(e_id).numpy(), "phi_ood": phi.id_logit(e_ood).numpy(),
               "energy_train_id": e_id.numpy(), "energy_train_ood": e_ood.numpy()}
    model.phi.to(device)
    return out


def train_classifier(cfg, dataset: str, outlier_images01=None, *, seed: int = 0, beta: float = 2.5,
                     phi_hidden: int = PAPER_PHI_HIDDEN, name: str = "bood",
                     progress: bool = True) -> RegularizedClassifier:
    """The OOD classifier of one run: eq. (7) with the decoded outliers, or plain cross-entropy (the
    "Energy" baseline of Tables 1-2) when ``outlier_images01`` is None. Same recipe, same data order for a
    given seed, so the two differ only by the regulariser. Cached by ``fit``'s checkpoint.

    ``model.log`` holds what the health checks read: ``losses`` (per epoch) and, with outliers, phi's ID
    logit and the energy on a probe of the training ID images and outliers."""
    dcfg = smoke_batch(with_values(cfg, id_dataset=dataset))
    outliers = None
    if outlier_images01 is not None:
        outliers = training_outliers(outlier_images01, dataset, dcfg.outlier_transform)
    ckpt = _checkpoint(dcfg, dataset, name, seed, beta, phi_hidden, outliers)
    profiles.seed_everything(seed)
    classifier = initial_model(dcfg, dataset)
    profiles.seed_everything(seed)       # phi starts under the run's seed, whatever loading the base used
    model = RegularizedClassifier(classifier, phi_hidden)
    probe = None
    if outliers is not None:
        probe = _probe(dataset, outliers, dcfg)
        model.phi.standardise(torch.cat([energies_of(model, p, dcfg.torch_device) for p in probe]))
    profiles.seed_everything(seed)       # the same data order with and without outliers
    train_set = data.get_dataset(dataset, "train", train_transform=True, max_n=dcfg.max_train, seed=dcfg.seed)
    if outliers is not None:
        train_set = WithOutliers(train_set, outliers)
    loader = train_mod._make_loader(train_set, with_values(dcfg, seed=seed), train=True)
    lr = dcfg.lr * (FINE_TUNE_LR_FACTOR if dcfg.reg_init == "base" else 1.0)
    loss = bood_loss(beta) if outliers is not None else (lambda m, b: F.cross_entropy(m(b[0]), b[1]))
    out = train_mod.fit(model, loader, epochs=dcfg.reg_epochs, lr=lr, weight_decay=dcfg.weight_decay,
                        device=dcfg.torch_device, ckpt_path=ckpt, amp=dcfg.amp, nesterov=dcfg.profile != "mini",
                        loss_fn=loss, progress=progress)
    model.log = {"losses": [h["loss"] for h in out["history"]], "checkpoint": ckpt.stem}
    if probe is not None:
        model.log.update(phi_on_training_data(model, *probe, dcfg.torch_device))
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
