"""The rehearsal's stand-in data: every real benchmark in its real on-disk format, read by the real loaders."""
from __future__ import annotations

import io

import pytest
import torch
from torch.utils.data import Subset

from data_prep import REGISTRY, standins
from data_prep.cli import main as data_prep_main
from ood_utils import data, profiles
from ood_utils.data import real


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return standins.build(tmp_path_factory.mktemp("standins") / "data", say=lambda _: None)


@pytest.fixture
def on_standins(root, monkeypatch):
    monkeypatch.setenv("OOD_KIT_DATA", str(root))
    return root


def _run_cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    return data_prep_main(list(argv), out=out), out.getvalue()


def test_data_prep_lists_and_verifies_every_standin_as_present(root):
    code, text = _run_cli("--list", "--root", str(root))
    assert code == 0
    for name in REGISTRY:
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert "present" in line and "stand-in" in line, line
    code, text = _run_cli("--verify", "--root", str(root))
    assert code == 0 and "corrupt" not in text


@pytest.mark.parametrize("id_dataset", ["cifar10", "cifar100", "imagenet10", "imagenet100", "imagenet1k"])
def test_every_set_of_every_real_benchmark_loads_through_the_registry(on_standins, id_dataset):
    info = data.ID_DATASETS[id_dataset]
    for split in ("train", "test"):
        x, y = data.get_dataset(id_dataset, split)[0]
        assert x.shape == (3, info.image_size, info.image_size) and 0 <= y < info.num_classes
    others = {name: "test" for name in data.ood_sets(id_dataset)}
    aux = data._safe_aux(id_dataset)
    if aux is not None:
        others[aux] = "train"
    for name, split in others.items():
        ds = data.get_dataset(name, split, id_dataset=id_dataset)
        x, y = ds[len(ds) - 1]
        assert len(ds) > 0 and x.shape == (3, info.image_size, info.image_size) and y == -1, name
        assert torch.isfinite(x).all()


def test_formats_are_the_real_ones(root):
    import numpy as np
    from scipy.io import loadmat

    mat = loadmat(root / "svhn" / "test_32x32.mat")
    assert mat["X"].shape[:3] == (32, 32, 3) and mat["X"].dtype == np.uint8 and mat["y"].min() >= 1
    tiny = np.load(root / "tiny_images_300k" / "300K_random_images.npy", mmap_mode="r")
    assert tiny.ndim == 4 and tiny.shape[1:] == (32, 32, 3) and tiny.dtype == np.uint8
    assert len(real.load_real("ninco", "test", root=root)) == standins.PER_SET      # unit tests not read
    assert (root / "dtd" / "dtd" / "labels" / "test1.txt").exists()


def test_a_current_folder_is_kept_and_a_changed_builder_rebuilds(root, monkeypatch):
    marker = root / "cifar10" / real.MARKER
    before = marker.stat().st_mtime_ns
    assert standins.build(root, say=lambda _: None) == root and marker.stat().st_mtime_ns == before
    monkeypatch.setattr(standins, "builder_hash", lambda: "changed")
    said = []
    standins.build(root, say=said.append)
    assert any("building" in s for s in said) and marker.stat().st_mtime_ns != before
    assert standins.read_stamp(root)["builder"] == "changed"


def test_verify_catches_a_damaged_standin(tmp_path):
    root = tmp_path / "data"
    folder = root / REGISTRY["lsun_r"].folder
    counts = standins.write_entry("lsun_r", folder)
    assert counts == {"**/*": standins.PER_SET}
    next(folder.rglob("*.jpg")).unlink()
    code, text = _run_cli("--verify", "lsun_r", "--root", str(root))
    assert code == 1 and "corrupt" in text and not real.is_available("lsun_r", root)


def test_random_checkpoint_loads_into_its_architecture(tmp_path):
    from ood_utils import models

    path = standins.random_checkpoint(tmp_path, "resnet18", 10)
    assert path.exists() and standins.random_checkpoint(tmp_path, "resnet18", 10) == path
    models.load_checkpoint(models.build_model("resnet18", 10), path)


def test_random_torchvision_weights_stand_where_the_pretrained_start_reads_them(tmp_path, monkeypatch):
    from ood_utils import models

    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path))
    path = standins.random_torchvision_weights("densenet121")
    assert path.name == "densenet121-a639ec97.pth" and models.torchvision_weights_path("densenet121") == path
    small = models.load_imagenet_pretrained(models.build_model("densenet121", 3), "densenet121", [5, 0, 9])
    assert small.head.weight.shape == (3, 1024)


def _train_labels(ds) -> set[int]:
    if isinstance(ds, Subset):
        return {_targets(ds.dataset)[i] for i in ds.indices}
    return set(_targets(ds))


def _targets(ds) -> list[int]:
    return ds.targets if hasattr(ds, "targets") else [int(ds[i][1]) for i in range(len(ds))]


@pytest.mark.parametrize("id_dataset", ["cifar10", "cifar100", "imagenet10", "imagenet100", "imagenet1k"])
def test_every_class_has_a_training_image_within_the_smoke_cap(on_standins, id_dataset):
    """Class-mean detectors (NME, Mahalanobis) and per-class anchors need every ID class in training, also
    after smoke mode caps the training set."""
    ds = data.get_dataset(id_dataset, "train", max_n=profiles.SMOKE_CAPS["max_train"])
    assert _train_labels(ds) == set(range(data.ID_DATASETS[id_dataset].num_classes))


def test_check_disjoint_on_a_real_benchmark_reads_every_image_and_finds_a_planted_copy(tmp_path, monkeypatch):
    """The real-data branch of check_disjoint: images compared after the ID dataset's evaluation transform."""
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("OOD_KIT_DATA", str(tmp_path))
    for name in ["cifar10", *data.ood_sets("cifar10"), data.auxiliary_set("cifar10")]:
        standins.write_entry(name, tmp_path / REGISTRY[name].folder)
    table = data.check_disjoint("cifar10", raise_on_leak=False).set_index("set")
    for name in data.ood_sets("cifar10"):
        assert table.loc[name, "images"] == len(data.get_dataset(name, "test", id_dataset="cifar10")), name
    assert (table[["in_id_train", "in_id_test"]] == 0).all().all()               # the stand-ins share no image
    image, _ = real.load_real("cifar10", "train", root=tmp_path)[3]                 # a PIL image, 32x32
    copy = tmp_path / REGISTRY["lsun_r"].folder / "LSUN_resize" / "copy_of_cifar_train_3.png"
    Image.fromarray(np.asarray(image)).save(copy)
    with pytest.raises(data.DataLeak, match="lsun_r"):
        data.check_disjoint("cifar10")
    assert data.check_disjoint("cifar10", raise_on_leak=False).set_index("set").loc["lsun_r", "in_id_train"] == 1
