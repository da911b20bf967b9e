"""Stand-in data for the rehearsal: every real benchmark in its real on-disk format, a few dozen images each.

    python -m data_prep.standins --root DIR [--force]

The ``quick`` and ``paper`` profiles read CIFAR python pickles, SVHN's ``.mat``, the 300K random images'
``.npy``, DTD / Places365 with their file lists, and image folders (LSUN, iSUN, the MOS subsets, NINCO,
SSB-hard, OpenImage-O, ImageNet's ``train/<wnid>`` and ``val/<wnid>``). This module writes each of them
under ``DIR`` in exactly the layout ``data_prep --get`` leaves, with the completion marker the loaders
require, from the embedded ``mini`` images (resized and tinted to RGB). ``data_prep --list --root DIR``
shows them as present, ``--verify`` recounts them against the marker's counts.

They carry no meaning (labels are arbitrary, no accuracy is to be expected); they exist so that every
loader, transform, architecture and notebook branch of the paper profiles runs end to end without the real
data. Also written: a tiny random-weight Stable Diffusion v1.4 pipeline for BOOD
(``ood_utils.bood.sd.write_tiny_pipeline``) and, on demand, random-weight checkpoints for the models
that need user weights (:func:`random_checkpoint`).

``DIR/STANDINS.json`` records the hash of this file: a changed builder rebuilds the whole folder (into a
temporary folder first, renamed into place at the end, so an interrupted build leaves no half-built data).
"""
from __future__ import annotations

import argparse
import hashlib
import pickle
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ood_utils import paths
from ood_utils.data import embedded, real

from .fetch import count_files, install_folder, temp_folder, write_marker
from .registry import REGISTRY

STAMP = "STANDINS.json"
SD_FOLDER = ("models", "stable-diffusion-v1-4")
CIFAR_TRAIN_PER_BATCH, CIFAR_TEST = 10, 30       # 5 batches -> 50 training images: seconds for a DenseNet on a CPU
CIFAR100_TRAIN = 100                              # one image per class: class-mean detectors need every class
PER_SET = 16                                      # images per OOD test set
TINY_IMAGES = 256                                 # the auxiliary pool: enough for one sampling pool


def builder_hash() -> str:
    """Changes whenever this builder or the embedded recipes change: the stand-ins are then rebuilt."""
    text = Path(__file__).read_bytes() + str(embedded.BUILD_VERSION).encode()
    return hashlib.sha256(text).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Images: the embedded 28x28 grey images, as RGB at the size the real set stores
# ----------------------------------------------------------------------------------------------------------

TINTS = ((1.0, 0.8, 0.6), (0.6, 0.9, 1.0), (0.9, 1.0, 0.7), (1.0, 0.7, 0.9))


def rgb_images(source: str, n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``n`` images of an embedded set as uint8 (n, H, W, 3), resized to ``size`` = (W, H) and tinted."""
    from PIL import Image

    split = embedded.SETS[source].splits[-1]
    gray, _ = embedded.get_arrays(source, split)
    pick = np.random.default_rng(seed).choice(len(gray), n, replace=len(gray) < n)
    out = np.empty((n, size[1], size[0], 3), np.uint8)
    for i, k in enumerate(pick):
        small = Image.fromarray(np.rint(gray[k] * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
        out[i] = np.clip(np.asarray(small, np.float32)[..., None] * TINTS[i % len(TINTS)], 0, 255).astype(np.uint8)
    return out


def save_images(images: np.ndarray, files: list[Path]) -> None:
    from PIL import Image

    for image, path in zip(images, files):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None)


# ----------------------------------------------------------------------------------------------------------
# One writer per on-disk format; each fills the entry's folder (as --get unpacks it) and returns nothing
# ----------------------------------------------------------------------------------------------------------

def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)       # CIFAR stores CHW, flattened


def write_cifar10(folder: Path) -> None:
    base = folder / "cifar-10-batches-py"
    n = CIFAR_TRAIN_PER_BATCH
    images = rgb_images("mnist5k", 5 * n + CIFAR_TEST, (32, 32), seed=1)   # one draw: train and test disjoint
    for i in range(1, 6):
        first = (i - 1) * n                                    # labels cycle over all classes across the batches
        x = images[first:first + n]
        _pickle(base / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "data": _cifar_rows(x),
                                           "labels": [(first + j) % 10 for j in range(len(x))],
                                           "filenames": [f"standin_{i}_{j}.png" for j in range(len(x))]})
    x = images[5 * n:]
    _pickle(base / "test_batch", {"batch_label": "testing batch 1 of 1", "data": _cifar_rows(x),
                                  "labels": [j % 10 for j in range(len(x))],
                                  "filenames": [f"standin_test_{j}.png" for j in range(len(x))]})
    _pickle(base / "batches.meta", {"label_names": list(real.CIFAR10_CLASSES), "num_vis": 3072,
                                    "num_cases_per_batch": CIFAR_TRAIN_PER_BATCH})


def write_cifar100(folder: Path) -> None:
    base = folder / "cifar-100-python"
    images = rgb_images("mnist5k", CIFAR100_TRAIN + CIFAR_TEST, (32, 32), seed=7)
    for split, x in (("train", images[:CIFAR100_TRAIN]), ("test", images[CIFAR100_TRAIN:])):
        n = len(x)
        fine = [j % 100 for j in range(n)]
        _pickle(base / split, {"data": _cifar_rows(x), "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                               "filenames": [f"standin_{split}_{j}.png" for j in range(n)]})
    _pickle(base / "meta", {"fine_label_names": list(real.CIFAR100_CLASSES),
                            "coarse_label_names": [f"superclass_{i}" for i in range(20)]})


def write_svhn(folder: Path) -> None:
    from scipy.io import savemat

    x = rgb_images("letters", PER_SET, (32, 32), seed=9)
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / "test_32x32.mat", {"X": x.transpose(1, 2, 3, 0),                 # (32, 32, 3, N)
                                        "y": (np.arange(PER_SET) % 10 + 1).reshape(-1, 1).astype(np.uint8)})


def write_dtd(folder: Path) -> None:
    """``dtd/images/<class>/<class>_NNNN.jpg`` and partition 1's train/val/test lists (every image once)."""
    base = folder / "dtd"
    classes = ("banded", "dotted", "striped")
    x = rgb_images("textures", PER_SET, (300, 225), seed=10)
    names = [f"{classes[i % 3]}/{classes[i % 3]}_{i:04d}.jpg" for i in range(PER_SET)]
    save_images(x, [base / "images" / n for n in names])
    (base / "labels").mkdir(parents=True)
    for k, split in enumerate(("train", "val", "test")):
        (base / "labels" / f"{split}1.txt").write_text("\n".join(names[k::3]) + "\n")


def write_places365(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "categories_places365.txt").write_text("/a/airfield 0\n/b/beach 1\n/c/canyon 2\n")
    names = [f"Places365_test_{i + 1:08d}.jpg" for i in range(PER_SET)]
    (folder / "places365_test.txt").write_text("\n".join(names) + "\n")
    save_images(rgb_images("photos", PER_SET, (256, 256), seed=11), [folder / "test_256" / n for n in names])


def image_folder(subfolder: str, source: str, size: tuple[int, int], suffix: str = ".jpg",
                 classes: int = 0, seed: int = 12) -> Callable[[Path], None]:
    """A writer for the sets that are a folder of images (``classes`` > 0: one subfolder per class)."""
    def write(folder: Path) -> None:
        x = rgb_images(source, PER_SET, size, seed=seed)
        files = [folder / subfolder / (f"class_{i % classes:02d}" if classes else "") / f"{i:05d}{suffix}"
                 for i in range(PER_SET)]
        save_images(x, files)
    return write


def write_ninco(folder: Path) -> None:
    image_folder("NINCO/NINCO_OOD_classes", "animal_mnist", (160, 120), classes=4, seed=13)(folder)
    # the archive also ships unit tests and popular-dataset subsamples, which the loader must not read
    image_folder("NINCO/NINCO_OOD_unit_tests/noise", "uniform_noise", (64, 64), seed=14)(folder)


def write_tiny_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "300K_random_images.npy", rgb_images("aux_patches", TINY_IMAGES, (32, 32), seed=15))


#: training images per class of ImageNet-10 (one elsewhere): GReg's fine-tuning step takes 16 ID images.
#: No more: ImageNet-1K's training folder must stay within smoke mode's ``max_train`` (1,024), or the capped
#: subset drops classes and the class-conditional detectors (NME, Mahalanobis) cannot fit.
IMAGENET10_TRAIN_PER_CLASS = 3


def write_imagenet(folder: Path) -> None:
    """``train/<wnid>/`` and ``val/<wnid>/`` for all 1,000 classes, one small JPEG each (ImageFolder needs
    every class it is asked for: ImageNet-10, -100 and the auxiliary pool read subsets of this folder), and
    :data:`IMAGENET10_TRAIN_PER_CLASS` training images for each of ImageNet-10's classes."""
    from PIL import Image

    wnids = real.imagenet1k_wnids()
    x = rgb_images("mnist5k", 20, (80, 60), seed=16)
    blobs = []
    for image in x:
        path = folder / ".blob.jpg"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="JPEG")
        blobs.append(path.read_bytes())
        path.unlink()
    for i, wnid in enumerate(wnids):
        for split, name in (("train", f"{wnid}_{i}.JPEG"), ("val", f"ILSVRC2012_val_{i + 1:08d}.JPEG")):
            (folder / split / wnid).mkdir(parents=True, exist_ok=True)
            (folder / split / wnid / name).write_bytes(blobs[(i + (split == "val")) % len(blobs)])
        if wnid in real.IMAGENET10_WNIDS:
            for j in range(1, IMAGENET10_TRAIN_PER_CLASS):
                (folder / "train" / wnid / f"{wnid}_{i}_{j}.JPEG").write_bytes(blobs[(i + 2 * j) % len(blobs)])


WRITERS: dict[str, Callable[[Path], None]] = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "textures": write_dtd,
    "places365": write_places365,
    "lsun_c": image_folder("LSUN/test", "photos", (36, 36)),
    "lsun_r": image_folder("LSUN_resize", "photos", (32, 32), seed=17),
    "isun": image_folder("iSUN/iSUN_patches", "faces", (32, 32), suffix=".jpeg"),
    "tiny_images_300k": write_tiny_images,
    "inaturalist": image_folder("iNaturalist/images", "animal_mnist", (120, 90), seed=18),
    "sun": image_folder("SUN/images", "photos", (120, 90), seed=19),
    "places": image_folder("Places/images", "photos", (120, 90), seed=20),
    "ninco": write_ninco,
    "ssb_hard": image_folder("ssb_hard", "letters", (100, 100), suffix=".JPEG", classes=3, seed=21),
    "openimage_o": image_folder("openimage_o/images", "faces", (120, 90), seed=22),
    "imagenet1k": write_imagenet,
}


def write_entry(name: str, folder: Path) -> dict[str, int]:
    """Write one entry's files and its completion marker (flagged ``standin``); returns the file counts."""
    entry = REGISTRY[name]
    WRITERS[name](folder)
    counts = {count.pattern: count_files(folder, count) for count in entry.counts}
    empty = [pattern for pattern, n in counts.items() if n == 0]
    if empty:
        raise RuntimeError(f"stand-in {name}: no files match {empty} (the writer and the registry disagree)")
    write_marker(folder, entry, counts, {}, standin=True)
    return counts


# ----------------------------------------------------------------------------------------------------------
# The whole folder
# ----------------------------------------------------------------------------------------------------------

def read_stamp(root: Path) -> dict | None:
    import json

    try:
        return json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return None


def is_current(root: Path) -> bool:
    stamp = read_stamp(root)
    return bool(stamp) and stamp.get("builder") == builder_hash()


def write_sd_pipeline(root: Path) -> None:
    """The tiny random-weight Stable Diffusion v1.4 pipeline that BOOD's quick/paper decoder path loads."""
    from ood_utils.bood import sd

    sd.write_tiny_pipeline(root.joinpath(*SD_FOLDER), seed=0)


def build(root: Path | str, force: bool = False, say: Callable[[str], None] = print) -> Path:
    """Build every stand-in under ``root`` unless the folder is already current; returns ``root``."""
    root = Path(root).expanduser().resolve()
    if not force and is_current(root):
        return root
    say(f"building stand-in data in {root} ...")
    tmp = temp_folder(root)
    try:
        counts = {}
        for name in REGISTRY:
            counts[name] = write_entry(name, tmp / REGISTRY[name].folder)
        write_sd_pipeline(tmp)
        paths.write_json(tmp / STAMP, {"builder": builder_hash(), "counts": counts})
        checkpoints = root / "checkpoints"
        if checkpoints.is_dir():                  # random-weight checkpoints do not depend on the builder
            shutil.move(str(checkpoints), str(tmp / "checkpoints"))
        install_folder(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"stand-ins ready: {len(counts)} datasets + a Stable Diffusion stand-in")
    return root


def random_checkpoint(root: Path | str, arch: str, num_classes: int) -> Path:
    """A random-weight safetensors checkpoint of ``arch`` (for paths that need user weights), cached."""
    from safetensors.torch import save_file

    from ood_utils import models

    path = Path(root) / "checkpoints" / f"{arch}_{num_classes}_random.safetensors"
    if not path.exists():
        model = models.build_model(arch, num_classes)
        with paths.atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return path


def random_torchvision_weights(arch: str) -> Path:
    """A random-weight stand-in for torchvision's ImageNet weights of ``arch``, in torchvision's own format and
    file name, where :func:`ood_utils.models.torchvision_weights_path` looks first (``<cache>/weights/``: the
    rehearsal's private cache): the paths that fine-tune those weights run without the download."""
    import torch
    import torchvision

    from ood_utils import models

    name, _ = models.TORCHVISION_WEIGHTS[arch]
    path = paths.cache_dir("weights") / name
    if not path.exists():
        torch.manual_seed(0)
        state = getattr(torchvision.models, arch)(weights=None).state_dict()
        with paths.atomic_path(path) as tmp:
            torch.save(state, tmp)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.standins", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder to write (used as OOD_KIT_DATA)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is current")
    args = parser.parse_args(argv)
    root = build(args.root, force=args.force)
    print(f"OOD_KIT_DATA={root} python -m data_prep --list   # shows them as present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
