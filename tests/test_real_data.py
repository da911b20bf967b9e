"""The real-benchmark loaders on tiny stand-in folders (same layouts as the real archives, a few images each).

A folder is built the way ``data_prep`` leaves it (files + completion marker) under a temporary data root,
then read through ``ood_utils.data`` exactly as a notebook would.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ood_utils import data
from ood_utils.data import real


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_DATA", str(tmp_path))
    return tmp_path


def mark_complete(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / real.MARKER).write_text(json.dumps({"name": folder.name, "completed": "test", "counts": {}}))


def save_image(path, size=(40, 30), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


# --- registry facts -------------------------------------------------------------------------------------

def test_registry_contents():
    assert real.REAL_ID["cifar10"]["num_classes"] == 10 and len(real.REAL_ID["cifar100"]["class_names"]) == 100
    assert real.REAL_ID["cifar100"]["class_names"] == sorted(real.REAL_ID["cifar100"]["class_names"])
    assert len(real.IMAGENET10_WNIDS) == 10 and len(set(real.IMAGENET100_WNIDS)) == 100
    assert real.IMAGENET100_WNIDS == sorted(real.IMAGENET100_WNIDS)
    in1k = real.imagenet1k_wnids()
    assert set(real.IMAGENET10_WNIDS) <= set(in1k) and set(real.IMAGENET100_WNIDS) <= set(in1k)
    assert real.REAL_ID["imagenet10"]["class_names"][0] == "goldfish"                 # n01443537
    assert len(real.REAL_ID["imagenet1k"]["class_names"]) == 1000
    assert {real.REAL_OOD[n] for n in ("ninco", "ssb_hard")} == {"near"}
    assert real.REAL_OOD["tiny_images_300k"] == "aux" and real.REAL_AUX["cifar100"] == "tiny_images_300k"
    assert data.DatasetNotFound is real.DatasetNotFound and issubclass(real.DatasetNotFound, FileNotFoundError)


# --- missing data ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,split", [("svhn", "test"), ("cifar100", "train"), ("tiny_images_300k", "train"),
                                        ("ninco", "test")])
def test_missing_dataset_names_the_command(root, name, split):
    with pytest.raises(real.DatasetNotFound) as info:
        real.load_real(name, split)
    assert f"python -m data_prep --get {name}" in str(info.value)
    assert str(root) in str(info.value)


def test_missing_imagenet_points_at_the_instructions(root):
    with pytest.raises(data.DatasetNotFound) as info:
        data.get_dataset("imagenet10", "train")
    text = str(info.value)
    assert "python -m data_prep --get imagenet10" in text and "image-net.org" in text and "instructions" in text


def test_bad_names_and_splits(root):
    with pytest.raises(KeyError, match="valid: .*cifar10"):
        real.load_real("cifar11", "test")
    with pytest.raises(ValueError, match="'svhn' has split.*test"):
        real.load_real("svhn", "train")
    with pytest.raises(ValueError, match="train"):
        real.load_real("tiny_images_300k", "test")


# --- loading stand-ins ------------------------------------------------------------------------------------

def test_image_folder_ood_set_through_the_registry(root):
    folder = real.dataset_folder("lsun_c", root)
    for i in range(3):
        save_image(folder / "LSUN" / "test" / f"{i}.jpg", size=(36, 36), value=i)
    with pytest.raises(data.DatasetNotFound, match="incomplete"):
        data.get_dataset("lsun_c", "test", id_dataset="cifar10")
    mark_complete(folder)
    ds = data.get_dataset("lsun_c", "test", id_dataset="cifar10")
    assert len(ds) == 3
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == -1
    assert len(data.get_dataset("lsun_c", "test", id_dataset="cifar10", max_n=2)) == 2


def test_ninco_reads_only_the_ood_classes(root):
    folder = real.dataset_folder("ninco", root)
    save_image(folder / "NINCO" / "NINCO_OOD_classes" / "a" / "1.jpg")
    save_image(folder / "NINCO" / "NINCO_OOD_classes" / "b" / "2.png")
    save_image(folder / "NINCO" / "NINCO_OOD_unit_tests" / "noise" / "3.jpg")
    mark_complete(folder)
    ds = real.load_real("ninco", "test")
    assert len(ds) == 2 and ds[1][1] == -1


def test_tiny_images_array(root):
    folder = real.dataset_folder("tiny_images_300k", root)
    folder.mkdir(parents=True)
    np.save(folder / "300K_random_images.npy", np.random.default_rng(0).integers(0, 255, (7, 32, 32, 3), np.uint8))
    mark_complete(folder)
    assert data.auxiliary_set("cifar10") == "tiny_images_300k"
    ds = data.get_dataset("tiny_images_300k", "train", id_dataset="cifar10")
    x, y = ds[6]
    assert len(ds) == 7 and x.shape == (3, 32, 32) and y == -1


def test_textures_uses_every_dtd_image_through_torchvision(root):
    folder = real.dataset_folder("textures", root)
    assert folder.name == "dtd"
    base = folder / "dtd"
    files = {"train1.txt": ["banded/a.jpg"], "val1.txt": ["banded/b.jpg"], "test1.txt": ["dotted/c.jpg"]}
    (base / "labels").mkdir(parents=True)
    for split, names in files.items():
        (base / "labels" / split).write_text("\n".join(names) + "\n")
        for i, name in enumerate(names):
            save_image(base / "images" / name, value=i)
    mark_complete(folder)
    ds = data.get_dataset("textures", "test", id_dataset="cifar100")
    assert len(ds) == 3 and ds[2][0].shape == (3, 32, 32) and ds[2][1] == -1


def test_imagenet_subsets_and_the_auxiliary_pool(root):
    folder = real.dataset_folder("imagenet10", root)
    save_image(root / "one.png", size=(12, 10))
    png = (root / "one.png").read_bytes()
    for wnid in real.imagenet1k_wnids():                       # one image per class, all 1,000 in train
        (folder / "train" / wnid).mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_0.JPEG").write_bytes(png)
    for i, wnid in enumerate(real.IMAGENET10_WNIDS):           # val: the ImageNet-10 classes only
        save_image(folder / "val" / wnid / f"{wnid}_{i}.JPEG", size=(12, 10), value=i)
    mark_complete(folder)
    train = real.load_real("imagenet10", "train")
    assert len(train) == 10 and [y for _, y in train.samples] == list(range(10))
    assert train.classes == list(real.IMAGENET10_WNIDS)
    x, y = data.get_dataset("imagenet10", "test")[3]
    assert x.shape == (3, 224, 224) and y == 3
    aux_name = data.auxiliary_set("imagenet10")
    aux = real.load_real(aux_name, "train")
    assert len(aux) == 990 and aux[0][1] == -1
    assert not set(aux.base.classes) & set(real.IMAGENET10_WNIDS)          # never an ID class
    assert len(real.load_real("imagenet100", "train")) == 100
    assert not set(real.IMAGENET10_WNIDS) & set(real.IMAGENET100_WNIDS)     # the two subsets are disjoint
    with pytest.raises(real.DatasetNotFound, match="lacks 100 class folders"):
        real.load_real("imagenet100", "test")


def test_torchvision_integrity_failure_becomes_a_clear_error(root):
    folder = real.dataset_folder("svhn", root)
    folder.mkdir(parents=True)
    (folder / "test_32x32.mat").write_bytes(b"not a mat file")
    mark_complete(folder)
    with pytest.raises(real.DatasetNotFound, match="could not be read.*--verify svhn"):
        real.load_real("svhn", "test")


def test_is_available_follows_the_marker(root):
    assert not real.is_available("isun")
    mark_complete(real.dataset_folder("isun", root))
    assert real.is_available("isun")
    table = data.status_table()
    assert (table.loc[table.dataset == "isun", "status"] == "present").all()
