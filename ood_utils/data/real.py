"""Loaders for the real benchmarks of the ``quick`` and ``paper`` profiles.

Each dataset lives in one folder under the data root (``paths.data_dir()``, moved with ``OOD_KIT_DATA``),
put there by ``python -m data_prep --get NAME``. A folder counts as present only when it holds the
completion marker that ``data_prep`` writes after the extracted files were counted: a half-extracted
folder is never read. A missing dataset raises :class:`DatasetNotFound`, whose message is the command that
fetches it (or, for ImageNet, which cannot be downloaded without an account, where the instructions are).

What the papers use, and therefore what is here:

- ID: CIFAR-10/100 (GReg, MME, BOOD), ImageNet-10 (GReg Table 3, the rest of ImageNet-1K is its auxiliary
  outlier pool), ImageNet-100 (BOOD, the DreamOOD class list), ImageNet-1K (MME, evaluated on its val set).
- CIFAR OOD test sets: Textures (DTD, all 5,640 images), SVHN test, Places365 (test_256), LSUN-C, LSUN-R,
  iSUN; auxiliary outliers: the 300K random images of Outlier Exposure.
- ImageNet OOD test sets: the MOS subsets of iNaturalist, SUN and Places, Textures, and the near-OOD sets
  NINCO and SSB-hard plus OpenImage-O (MME, BOOD Table 7).

Images come out as PIL images through the ``transform`` the caller passes (the registry passes the ID
dataset's preprocessing, which resizes and centre-crops OOD images to the ID resolution). Labels are the
class index for ID datasets and -1 for OOD and auxiliary sets.
"""
from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from .. import paths

OOD_LABEL = -1
MARKER = ".complete.json"          # written by data_prep once the extracted files are counted
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


class DatasetNotFound(FileNotFoundError):
    """A real dataset is not (completely) on disk; the message says how to get it."""


# ----------------------------------------------------------------------------------------------------------
# Class lists
# ----------------------------------------------------------------------------------------------------------

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# The fine labels of CIFAR-100 in label order (alphabetical, as in the dataset's ``meta`` file).
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark
shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()

# GReg's ImageNet-10 (the wnids of the authors' code; the other 990 classes are the auxiliary pool).
IMAGENET10_WNIDS = ("n01443537 n01877812 n02111277 n02114367 n02396427 n02834397 n02837789 n03534580 "
                    "n03857828 n04141975").split()

# BOOD's ImageNet-100 = DreamOOD's 100 classes, listed as wnids in BOOD's appendix A.
IMAGENET100_WNIDS = """n01498041 n01514859 n01582220 n01608432 n01616318 n01687978 n01776313 n01806567
n01833805 n01882714 n01910747 n01944390 n01985128 n02007558 n02071294 n02085620 n02114855 n02123045 n02128385
n02129165 n02129604 n02165456 n02190166 n02219486 n02226429 n02279972 n02317335 n02326432 n02342885 n02363005
n02391049 n02395406 n02403003 n02422699 n02442845 n02444819 n02480855 n02510455 n02640242 n02672831 n02687172
n02701002 n02730930 n02769748 n02782093 n02787622 n02793495 n02799071 n02802426 n02814860 n02840245 n02906734
n02948072 n02980441 n02999410 n03014705 n03028079 n03032252 n03125729 n03160309 n03179701 n03220513 n03249569
n03291819 n03384352 n03388043 n03450230 n03481172 n03594734 n03594945 n03627232 n03642806 n03649909 n03661043
n03676483 n03724870 n03733281 n03759954 n03761084 n03773504 n03804744 n03916031 n03938244 n04004767 n04026417
n04090263 n04133789 n04153751 n04296562 n04330267 n04371774 n04404412 n04465501 n04485082 n04507155 n04536866
n04579432 n04606251 n07714990 n07745940""".split()


def _timm_info_file(name: str) -> Path | None:
    """A class-list file shipped with timm (read as text: importing timm is not needed for it)."""
    spec = find_spec("timm")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "_info" / name
    return path if path.exists() else None


def imagenet1k_wnids() -> list[str]:
    """The 1,000 ImageNet-1K wnids in label order (sorted, which is also ImageFolder's order)."""
    path = _timm_info_file("imagenet_synsets.txt")
    if path is None:
        raise RuntimeError("the ImageNet-1K class list is read from timm's package data; install timm")
    wnids = path.read_text().split()
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise RuntimeError(f"unexpected ImageNet-1K class list in {path}")
    return wnids


def imagenet_class_names(wnids: list[str]) -> list[str]:
    """Readable names (the first WordNet lemma: "goldfish", "scale") for wnids; the wnid if unknown."""
    path = _timm_info_file("imagenet_synset_to_lemma.txt")
    lemmas = {}
    if path is not None:
        for line in path.read_text().splitlines():
            wnid, _, names = line.partition("\t")
            lemmas[wnid] = names.split(",")[0].strip()
    return [lemmas.get(w, w) for w in wnids]


# ----------------------------------------------------------------------------------------------------------
# Registry (read by ood_utils.data)
# ----------------------------------------------------------------------------------------------------------

# CIFAR statistics as in the Outlier-Exposure / Energy code that GReg builds on (same values for both).
_CIFAR_MEAN = tuple(round(v / 255, 4) for v in (125.3, 123.0, 113.9))
_CIFAR_STD = tuple(round(v / 255, 4) for v in (63.0, 62.1, 66.7))
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _imagenet_meta(wnids: list[str]) -> dict:
    return dict(num_classes=len(wnids), image_size=224, channels=3, mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
                class_names=imagenet_class_names(wnids), wnids=list(wnids))


def _build_real_id() -> dict[str, dict]:
    cifar = dict(image_size=32, channels=3, mean=_CIFAR_MEAN, std=_CIFAR_STD)
    registry = {
        "cifar10": dict(num_classes=10, class_names=list(CIFAR10_CLASSES), **cifar),
        "cifar100": dict(num_classes=100, class_names=list(CIFAR100_CLASSES), **cifar),
        "imagenet10": _imagenet_meta(IMAGENET10_WNIDS),
        "imagenet100": _imagenet_meta(IMAGENET100_WNIDS),
    }
    try:
        registry["imagenet1k"] = _imagenet_meta(imagenet1k_wnids())
    except RuntimeError:                 # without timm's class list the 1K names are the wnids' positions
        registry["imagenet1k"] = dict(_imagenet_meta([]), num_classes=1000,
                                      class_names=[f"class_{i}" for i in range(1000)])
    return registry


REAL_ID: dict[str, dict] = _build_real_id()

# OOD test sets ("near"/"far", as grouped by OpenOOD v1.5 and MME's Fig. 1) and auxiliary pools ("aux").
REAL_OOD: dict[str, str] = {
    "textures": "far", "svhn": "far", "places365": "far", "lsun_c": "far", "lsun_r": "far", "isun": "far",
    "inaturalist": "far", "sun": "far", "places": "far", "openimage_o": "far",
    "ninco": "near", "ssb_hard": "near",
    "tiny_images_300k": "aux", "imagenet1k_rest": "aux",
}

# Training outliers per ID dataset. ImageNet-1K minus the ImageNet-10 classes is GReg's pool; BOOD
# (ImageNet-100) trains on generated outliers and has none, and MME (ImageNet-1K) trains nothing.
REAL_AUX: dict[str, str] = {"cifar10": "tiny_images_300k", "cifar100": "tiny_images_300k",
                            "imagenet10": "imagenet1k_rest"}

# The data_prep entry that holds each dataset (ImageNet-10/100 and the auxiliary pool live in ImageNet-1K),
# and the folder of each entry under the data root: its name, except DTD, whose torchvision loader wants
# ``<root>/dtd/dtd/images``.
DATA_PREP_ENTRY: dict[str, str] = {name: name for name in REAL_OOD}
DATA_PREP_ENTRY.update({"cifar10": "cifar10", "cifar100": "cifar100", "imagenet1k": "imagenet1k",
                        "imagenet10": "imagenet1k", "imagenet100": "imagenet1k", "imagenet1k_rest": "imagenet1k"})
ENTRY_FOLDER: dict[str, str] = {entry: entry for entry in DATA_PREP_ENTRY.values()}
ENTRY_FOLDER["textures"] = "dtd"

_SPLITS = {name: ("train", "test") for name in REAL_ID}
_SPLITS.update({name: ("test",) for name, group in REAL_OOD.items() if group != "aux"})
_SPLITS.update({name: ("train",) for name, group in REAL_OOD.items() if group == "aux"})


# ----------------------------------------------------------------------------------------------------------
# Presence
# ----------------------------------------------------------------------------------------------------------

def data_root(root: str | Path | None = None) -> Path:
    return Path(root).expanduser() if root is not None else paths.data_dir()


def dataset_folder(name: str, root: str | Path | None = None) -> Path:
    """The folder that holds ``name`` (shared: ImageNet-10/100 and the auxiliary pool live in ImageNet-1K)."""
    return data_root(root) / ENTRY_FOLDER[DATA_PREP_ENTRY[_check_name(name)]]


def read_marker(folder: Path) -> dict | None:
    """The completion record of a data folder, or None (not there, or unreadable = not complete)."""
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_available(name: str, root: str | Path | None = None) -> bool:
    """Whether ``name`` is completely on disk (its folder carries data_prep's completion marker)."""
    return read_marker(dataset_folder(name, root)) is not None


def get_command(name: str) -> str:
    """The command that fetches ``name`` (data_prep accepts every dataset name, e.g. imagenet10)."""
    return f"python -m data_prep --get {_check_name(name)}"


def _not_found(name: str, folder: Path) -> DatasetNotFound:
    entry = DATA_PREP_ENTRY[name]
    state = "is incomplete (no completion marker)" if folder.exists() else "is missing"
    message = f"dataset {name!r} {state}: expected in {folder}. Get it with:\n    {get_command(name)}"
    if entry == "imagenet1k":
        message += ("\nImageNet cannot be downloaded automatically (it needs an image-net.org account); that "
                    "command prints the instructions (where to put the ILSVRC2012 archives or the extracted "
                    "train/ and val/ folders) and then verifies and registers the data.")
    message += "\n(Set OOD_KIT_DATA to use a data folder elsewhere; the 'mini' profile needs no download.)"
    return DatasetNotFound(message)


def _check_name(name: str) -> str:
    if name not in DATA_PREP_ENTRY:
        raise KeyError(f"unknown real dataset {name!r}; valid: {', '.join(DATA_PREP_ENTRY)}")
    return name


# ----------------------------------------------------------------------------------------------------------
# Dataset classes
# ----------------------------------------------------------------------------------------------------------

def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursive, sorted, hidden files skipped)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


class ImageFiles(Dataset):
    """A flat list of image files, each returned as ``(transform(RGB PIL image), label)``."""

    def __init__(self, files: list[Path], transform: Callable | None = None, label: int = OOD_LABEL):
        self.files, self.transform, self.label = list(files), transform, label

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        from PIL import Image

        with Image.open(self.files[index]) as image:
            image = image.convert("RGB")
        return (self.transform(image) if self.transform else image), self.label


class ImageArray(Dataset):
    """Images stored as one uint8 array (N, H, W, 3), e.g. the 300K random images; read memory-mapped."""

    def __init__(self, array_path: Path, transform: Callable | None = None, label: int = OOD_LABEL):
        self.images = np.load(array_path, mmap_mode="r")
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"{array_path}: expected uint8 images (N, H, W, 3), got {self.images.dtype} "
                             f"{self.images.shape}")
        self.transform, self.label = transform, label

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from PIL import Image

        image = Image.fromarray(np.asarray(self.images[index]))
        return (self.transform(image) if self.transform else image), self.label


class Relabelled(Dataset):
    """A dataset whose label is replaced by a constant (-1 for OOD sets built from labelled datasets)."""

    def __init__(self, base: Dataset, label: int = OOD_LABEL):
        self.base, self.label = base, label

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        return self.base[index][0], self.label


def _imagenet_folder(wnids: list[str]):
    """An ImageFolder restricted to ``wnids``, labelled 0..len-1 in the given (sorted) order."""
    from torchvision.datasets import ImageFolder

    class SubsetImageFolder(ImageFolder):
        def find_classes(self, directory):
            missing = [w for w in wnids if not (Path(directory) / w).is_dir()]
            if missing:
                raise DatasetNotFound(f"{directory} lacks {len(missing)} class folders, e.g. {missing[:3]}")
            return list(wnids), {w: i for i, w in enumerate(wnids)}

    return SubsetImageFolder


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

def load_real(name: str, split: str, transform: Callable | None = None, root: str | Path | None = None) -> Dataset:
    """A torch Dataset of ``(transform(PIL image), label)`` for a real benchmark (label -1 for OOD/aux).

    ``split``: "train"/"test" for ID datasets ("test" is the val set for ImageNet), "test" for OOD sets,
    "train" for auxiliary pools. Raises :class:`DatasetNotFound` (with the command to fetch the data) when the
    dataset is not completely on disk.
    """
    _check_name(name)
    if split not in _SPLITS[name]:
        raise ValueError(f"{name!r} has split(s) {', '.join(_SPLITS[name])}; got {split!r}")
    folder = dataset_folder(name, root)
    if read_marker(folder) is None:
        raise _not_found(name, folder)
    try:
        return _LOADERS[name](folder, split, transform)
    except DatasetNotFound:
        raise
    except Exception as err:       # missing or truncated files: torchvision, scipy.io, pickle and numpy errors
        raise DatasetNotFound(f"dataset {name!r} in {folder} could not be read ({type(err).__name__}: {err}); "
                              f"check it with 'python -m data_prep --verify {name}'") from err


# torchvision re-hashes every CIFAR / SVHN / Places365 file against its md5 list at each load. The kit's
# loaders only open folders carrying data_prep's marker, written after the archive's checksum was verified
# and the unpacked files were counted (``python -m data_prep --verify`` re-checks on demand), so the
# subclasses below only check that the files are there. This also lets the rehearsal read its stand-ins,
# which have the real formats but not the real bytes.

def _files_exist(*files) -> bool:
    return all(Path(f).is_file() for f in files)


def _cifar(cls_name: str):
    def load(folder, split, transform):
        import pickle

        import torchvision.datasets as tvd

        class MarkedCIFAR(getattr(tvd, cls_name)):
            def _check_integrity(self) -> bool:
                return _files_exist(*(Path(self.root, self.base_folder, name)
                                      for name, _ in self.train_list + self.test_list))

            def _load_meta(self) -> None:
                with open(Path(self.root, self.base_folder, self.meta["filename"]), "rb") as fh:
                    meta = pickle.load(fh, encoding="latin1")
                self.classes = meta[self.meta["key"]]
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        return MarkedCIFAR(str(folder), train=(split == "train"), transform=transform, download=False)
    return load


def _svhn(folder, split, transform):
    from torchvision.datasets import SVHN

    class MarkedSVHN(SVHN):
        def _check_integrity(self) -> bool:
            return _files_exist(Path(self.root, self.filename))

    return Relabelled(MarkedSVHN(str(folder), split="test", transform=transform, download=False))


def _textures(folder, split, transform):
    """All 5,640 DTD images (partition 1's train + val + test = every image once), as the OOD papers use."""
    from torchvision.datasets import DTD

    parts = [DTD(str(folder.parent), split=s, partition=1, transform=transform, download=False)
             for s in ("train", "val", "test")]
    return Relabelled(ConcatDataset(parts))


def _places365(folder, split, transform):
    """Places365-Standard test_256 (GReg's choice), through torchvision with the official file list."""
    from torchvision.datasets import Places365

    class MarkedPlaces365(Places365):
        def _check_integrity(self, file, md5, download) -> bool:
            if not _files_exist(file):
                raise RuntimeError(f"{file} is missing")
            return True

    return Relabelled(MarkedPlaces365(str(folder), split="test", small=True, transform=transform, download=False))


# Sets whose archive holds more than the OOD images: NINCO also ships unit tests and subsamples of popular
# datasets; its OOD test set is the 64 NINCO_OOD_classes folders.
_IMAGE_SUBFOLDER = {"ninco": "NINCO/NINCO_OOD_classes"}


def _image_files(folder, split, transform):
    folder = folder / _IMAGE_SUBFOLDER.get(folder.name, "")
    files = list_images(folder)
    if not files:
        raise DatasetNotFound(f"no images under {folder}")
    return ImageFiles(files, transform)


def _tiny_images(folder, split, transform):
    return ImageArray(folder / "300K_random_images.npy", transform)


def _imagenet_subset(wnids_of: Callable[[], list[str]], label_as_ood: bool = False):
    def load(folder, split, transform):
        wnids = wnids_of()
        dataset = _imagenet_folder(wnids)(str(folder / ("train" if split == "train" else "val")),
                                          transform=transform)
        return Relabelled(dataset) if label_as_ood else dataset
    return load


def _imagenet_rest() -> list[str]:
    held_out = set(IMAGENET10_WNIDS)
    return [w for w in imagenet1k_wnids() if w not in held_out]


_LOADERS: dict[str, Callable] = {
    "cifar10": _cifar("CIFAR10"),
    "cifar100": _cifar("CIFAR100"),
    "imagenet1k": _imagenet_subset(imagenet1k_wnids),
    "imagenet10": _imagenet_subset(lambda: list(IMAGENET10_WNIDS)),
    "imagenet100": _imagenet_subset(lambda: list(IMAGENET100_WNIDS)),
    "imagenet1k_rest": _imagenet_subset(_imagenet_rest, label_as_ood=True),
    "svhn": _svhn,
    "textures": _textures,
    "places365": _places365,
    "tiny_images_300k": _tiny_images,
    **{name: _image_files for name in ("lsun_c", "lsun_r", "isun", "inaturalist", "sun", "places", "ninco",
                                       "ssb_hard", "openimage_o")},
}

__all__ = [
    "REAL_ID", "REAL_OOD", "REAL_AUX", "DATA_PREP_ENTRY", "ENTRY_FOLDER", "IMAGENET10_WNIDS", "IMAGENET100_WNIDS",
    "DatasetNotFound", "load_real", "is_available", "dataset_folder", "get_command", "read_marker", "MARKER",
    "imagenet1k_wnids", "imagenet_class_names", "list_images",
]
