"""The dataset registry and the embedded ``mini`` benchmark (all offline, a few seconds)."""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch

from ood_utils import data
from ood_utils.data import embedded

EXPECTED_COUNTS = {
    "mnist5k": {"train": 4000, "test": 1000},
    "mnist6": {"train": 2400, "test": 600},
    "unseen_digits": {"test": 400},
    "animal_mnist": {"test": 1000},
    "textures": {"test": 1000},
    "photos": {"test": 1000},
    "faces": {"test": 200},
    "uniform_noise": {"test": 1000},
    "gaussian_noise": {"test": 1000},
    "aux_patches": {"train": 6000},
}
TEST_SETS = [n for n, s in embedded.SETS.items() if s.group in ("near", "far")]


def _hashes(images: np.ndarray) -> set[str]:
    """One digest per image of its uint8 pixels: equal digests = pixel-identical images."""
    u8 = np.rint(images * 255).astype(np.uint8)
    return {hashlib.sha1(img.tobytes()).hexdigest() for img in u8}


# --- every set ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(embedded.SETS))
def test_every_set_loads_with_shape_range_and_count(name):
    for split in embedded.SETS[name].splits:
        images, labels = data.get_arrays(name, split)
        assert images.dtype == np.float32 and images.shape[1:] == (28, 28)
        assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.5
        assert labels.dtype == np.int64 and len(labels) == len(images)
        if name in EXPECTED_COUNTS:
            assert len(images) == EXPECTED_COUNTS[name][split]
        else:                                   # letters: 52 per font that draws them all
            assert 1000 <= len(images) <= 3000
        if embedded.SETS[name].group == "id":
            assert set(np.unique(labels)) == set(range(data.ID_DATASETS[name].num_classes))
        else:
            assert (labels == -1).all()
        ds = data.get_dataset(name, split)
        x, y = ds.tensors
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        raw = x * embedded.MNIST_STD + embedded.MNIST_MEAN            # undo the normalisation
        assert torch.allclose(raw.squeeze(1), torch.from_numpy(images), atol=1e-5)


def test_id_registry_entry():
    info = data.ID_DATASETS["mnist5k"]
    assert (info.num_classes, info.image_size, info.channels) == (10, 28, 1)
    assert info.class_names == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert info.mean == (0.1307,) and info.std == (0.3081,) and info.source == "embedded"
    assert "mini" in info.profiles


def test_ood_sets_and_auxiliary_set_of_mini():
    assert data.ood_sets("mnist5k") == {"animal_mnist": "near", "letters": "near", "textures": "far",
                                        "photos": "far", "faces": "far", "uniform_noise": "far",
                                        "gaussian_noise": "far"}
    assert data.auxiliary_set("mnist5k") == "aux_patches"
    for name in data.ood_sets("mnist5k"):
        assert data.check_dataset(name).group in ("near", "far")


def test_open_set_mnist6_and_its_unseen_digits():
    info = data.ID_DATASETS["mnist6"]
    assert (info.num_classes, info.class_names[-1], info.source) == (6, "five", "embedded")
    assert data.ood_sets("mnist6") == {"unseen_digits": "near", **data.ood_sets("mnist5k")}
    assert "unseen_digits" not in data.ood_sets("mnist5k")          # digits 6-9 are ID for mnist5k
    assert data.auxiliary_set("mnist6") == data.auxiliary_set("mnist5k")
    assert data.MINI_ID_DATASETS == ("mnist5k", "mnist6")
    with pytest.raises(ValueError, match="not a test or auxiliary set of 'mnist5k'"):
        data.get_dataset("unseen_digits", "test", id_dataset="mnist5k")
    assert len(data.get_dataset("unseen_digits", "test", id_dataset="mnist6")) == 400


def test_mnist6_has_its_own_classifier_and_feature_caches():
    from ood_utils import features, profiles, train

    c5 = profiles.resolve("mini", seed_now=False)
    c6 = profiles.resolve("mini", id_dataset="mnist6", seed_now=False)
    assert train.cache_key(c5, c5.id_dataset, c5.arch) != train.cache_key(c6, c6.id_dataset, c6.arch)
    for name in ("letters", "aux_patches"):                          # shared OOD sets, scored by two models
        assert features.cache_paths(name, "test", c5, "base", None) != features.cache_paths(name, "test", c6, "base", None)


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist6_is_the_same_split_of_mnist5k_restricted_to_digits_0_to_5(split):
    x5, y5 = data.get_arrays("mnist5k", split)
    x6, y6 = data.get_arrays("mnist6", split)
    assert np.array_equal(x6, x5[y5 < 6]) and np.array_equal(y6, y5[y5 < 6])
    if split == "test":
        unseen, labels = data.get_arrays("unseen_digits", "test")
        assert np.array_equal(unseen, x5[y5 >= 6]) and (labels == -1).all()


# --- no image in two places ---------------------------------------------------------------------------------

@pytest.mark.parametrize("id_dataset", ["mnist5k", "mnist6"])
def test_check_disjoint_finds_no_shared_image_in_the_mini_settings(id_dataset):
    table = data.check_disjoint(id_dataset)
    expected = {id_dataset, *data.ood_sets(id_dataset), data.auxiliary_set(id_dataset)}
    assert set(table["set"]) == expected and (table["images"] > 0).all()
    assert (table[["in_id_train", "in_id_test"]] == 0).all().all()


def test_check_disjoint_catches_a_planted_duplicate(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path))
    train_images = embedded.load_set("mnist6")[0]["train"][0]
    splits, meta = embedded.load_set("letters")
    x, y, src = (a.copy() for a in splits["test"])
    x[5] = train_images[17]                                           # one ID training digit among the letters
    embedded._write_cache("letters", {"test": (x, y, src)}, meta["sources"])
    with pytest.raises(data.DataLeak, match=r"letters \(near\): 1 in ID train, 0 in ID test"):
        data.check_disjoint("mnist6")
    table = data.check_disjoint("mnist6", raise_on_leak=False)
    assert table.set_index("set").loc["letters", "in_id_train"] == 1
    assert table[["in_id_train", "in_id_test"]].to_numpy().sum() == 1


def test_pixel_hashes_tell_images_apart_by_content_only():
    a = np.zeros((2, 28, 28), np.uint8)
    b = a.copy()
    b[1, 3, 4] = 1
    ha, hb = data.leaks.pixel_hashes(a), data.leaks.pixel_hashes(b)
    assert ha[0] == ha[1] == hb[0] and hb[1] != hb[0]


# --- the ID split -------------------------------------------------------------------------------------------

def test_id_split_is_fixed_stratified_and_disjoint():
    train_x, train_y = data.get_arrays("mnist5k", "train")
    test_x, test_y = data.get_arrays("mnist5k", "test")
    assert np.bincount(train_y).tolist() == [400] * 10 and np.bincount(test_y).tolist() == [100] * 10
    assert not _hashes(train_x) & _hashes(test_x)
    rebuilt, _ = embedded.build_mnist5k()                            # same recipe, same split
    assert np.array_equal(rebuilt["test"][0], np.rint(test_x * 255).astype(np.uint8))
    a = data.get_dataset("mnist5k", "test", seed=0).tensors[0]        # the user's seed does not move it
    b = data.get_dataset("mnist5k", "test", seed=123).tensors[0]
    assert torch.equal(a, b)


# --- auxiliary pool: nothing shared with a test set ---------------------------------------------------------

def test_aux_sources_are_disjoint_from_every_test_source():
    aux = set(embedded.SETS["aux_patches"].sources)
    test = set().union(*(embedded.SETS[n].sources for n in TEST_SETS + ["mnist5k"]))
    assert aux and not aux & test
    aux_files = {embedded.package_file(k).resolve() for k in aux}
    test_files = {embedded.package_file(k).resolve() for k in test}
    assert not aux_files & test_files
    # the per-image record agrees with the lists
    assert set(embedded.get_sources("aux_patches", "train")) == {f"{embedded.SOURCES[k].package}:{k}" for k in aux}


def _thumbnail(key: str) -> np.ndarray:
    from PIL import Image
    img = Image.fromarray(embedded.read_gray(key)).resize((32, 32), Image.Resampling.BOX)
    v = np.asarray(img, np.float64).ravel()
    return (v - v.mean()) / (v.std() + 1e-9)


def test_no_aux_photo_is_a_copy_of_a_test_photo():
    """Catches the same picture shipped by two packages (e.g. pywt's camera.npz is skimage's camera.png)."""
    photo_sets = ("textures", "photos")
    aux = [_thumbnail(k) for k in embedded.PATCH_SOURCES["aux_patches"]]
    test = [_thumbnail(k) for n in photo_sets for k in embedded.PATCH_SOURCES[n]]
    corr = np.array([[a @ t / a.size for t in test] for a in aux])
    assert corr.max() < 0.9, corr.max()
    alias = _thumbnail("camera")                                      # the check does see a real duplicate
    pywt_camera = embedded.Source("pywt_camera", "pywt", "data/camera.npz", "PyWavelets")
    embedded.SOURCES["pywt_camera"] = pywt_camera
    try:
        assert alias @ _thumbnail("pywt_camera") / alias.size > 0.99
    finally:
        del embedded.SOURCES["pywt_camera"]


def test_no_aux_patch_is_pixel_identical_to_a_test_or_id_image():
    aux = _hashes(data.get_arrays("aux_patches", "train")[0])
    for name in TEST_SETS:
        assert not aux & _hashes(data.get_arrays(name, "test")[0]), name
    for split in ("train", "test"):
        assert not aux & _hashes(data.get_arrays("mnist5k", split)[0])


# --- letters ------------------------------------------------------------------------------------------------

def test_letters_have_ink_and_are_not_missing_glyph_boxes():
    images, _ = embedded.get_arrays("letters", "test")
    fonts = embedded.get_sources("letters", "test")
    u8 = np.rint(images * 255)
    assert (u8.sum(axis=(1, 2)) > 255 * 10).all()                     # every letter has mass
    folder = embedded.package_file("matplotlib_fonts")
    box = embedded.render_text(folder / "LastResortHE-Regular.ttf", "A")    # a font that only draws boxes
    assert box.sum() > 0 and embedded.is_missing_glyph(box, box)
    assert not any(embedded.is_missing_glyph(img, box) for img in u8)
    for font_name in sorted(set(fonts)):
        missing = embedded.render_text(folder / font_name.split(":", 1)[1], embedded.MISSING_CODEPOINT)
        mine = u8[[f == font_name for f in fonts]]
        assert not any(embedded.is_missing_glyph(img, missing) for img in mine), font_name


def test_fonts_without_real_letters_are_dropped():
    folder = embedded.package_file("matplotlib_fonts")
    assert embedded.font_letters(folder / "LastResortHE-Regular.ttf") == ""
    assert embedded.font_letters(folder / "cmex10.ttf") == ""
    assert embedded.font_letters(folder / "STIXSizOneSymReg.ttf") == ""
    assert embedded.font_letters(folder / "DejaVuSans.ttf") == embedded.LETTERS
    used = {s.split(":", 1)[1] for s in embedded.get_sources("letters", "test")}
    assert "LastResortHE-Regular.ttf" not in used and "DejaVuSans.ttf" in used


def test_mnist_style_centres_by_mass_in_a_20px_box():
    ink = np.zeros((100, 60), np.uint8)
    ink[10:90, 5:25] = 255                                            # a tall bar, off-centre
    img = embedded.mnist_style(ink).astype(float)
    rows, cols = np.nonzero(img > 0)
    assert rows.max() - rows.min() + 1 <= 21
    r, c = np.indices(img.shape)
    assert abs((r * img).sum() / img.sum() - 13.5) <= 1 and abs((c * img).sum() / img.sum() - 13.5) <= 1


# --- cache --------------------------------------------------------------------------------------------------

def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path))
    first, _ = data.get_arrays("faces", "test")
    npz, sidecar = embedded.cache_paths("faces")
    assert npz.parent == tmp_path / "embedded" and sidecar.exists()
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF                                      # flip one byte
    npz.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="corrupt"):
        again, _ = data.get_arrays("faces", "test")
    assert np.array_equal(first, again)
    npz.write_bytes(b"not a zip file")                                # and a truncated file
    with pytest.warns(UserWarning, match="corrupt"):
        assert np.array_equal(first, data.get_arrays("faces", "test")[0])
    sidecar.write_text("{")                                           # and a broken sidecar
    with pytest.warns(UserWarning, match="corrupt"):
        assert np.array_equal(first, data.get_arrays("faces", "test")[0])
    assert not list(tmp_path.glob("embedded/*.tmp"))                  # atomic writes leave no debris


def test_cache_of_an_older_recipe_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_CACHE", str(tmp_path))
    data.get_arrays("uniform_noise", "test")
    _, sidecar = embedded.cache_paths("uniform_noise")
    monkeypatch.setattr(embedded, "BUILD_VERSION", embedded.BUILD_VERSION + 1)
    data.get_arrays("uniform_noise", "test")
    assert f'"build_version": {embedded.BUILD_VERSION}' in sidecar.read_text()


def test_missing_source_fails_with_install_hint(monkeypatch):
    monkeypatch.setitem(embedded.SOURCES, "brick", embedded.Source("brick", "skimage", "data/no_such.png",
                                                                     "scikit-image"))
    with pytest.raises(embedded.EmbeddedSourceMissing, match="ship inside the wheel"):
        embedded.build_patches("textures")
    monkeypatch.setitem(embedded.SOURCES, "brick", embedded.Source("brick", "no_such_pkg", "x.png", "no-such-pkg"))
    with pytest.raises(FileNotFoundError, match="pip install no-such-pkg"):
        embedded.check_sources("textures")
    table = data.status_table()
    row = table[(table.id_dataset == "mnist5k") & (table.dataset == "textures")]
    assert row["status"].iloc[0].startswith("missing: ")


def test_animal_pickle_reader_refuses_anything_but_arrays(tmp_path):
    import io
    payload = pickle.dumps(print)                                     # any callable would do
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        embedded._NumpyArrayUnpickler(io.BytesIO(payload)).load()


# --- get_dataset options and errors -------------------------------------------------------------------------

def test_max_n_is_deterministic():
    a = data.get_dataset("letters", "test", max_n=50, seed=0).tensors[0]
    b = data.get_dataset("letters", "test", max_n=50, seed=0).tensors[0]
    c = data.get_dataset("letters", "test", max_n=50, seed=1).tensors[0]
    assert a.shape[0] == 50 and torch.equal(a, b) and not torch.equal(a, c)
    assert len(data.get_dataset("faces", "test", max_n=10_000)) == 200
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_n"):
            data.get_dataset("faces", "test", max_n=bad)


def test_train_transform_shifts_digits_without_losing_ink():
    torch.manual_seed(0)
    plain = data.get_dataset("mnist5k", "train", max_n=64)
    shifted = data.get_dataset("mnist5k", "train", max_n=64, train_transform=True)
    background = -embedded.MNIST_MEAN / embedded.MNIST_STD
    moved = 0
    for i in range(64):
        (x0, y0), (x1, y1) = plain[i], shifted[i]
        assert x1.shape == (1, 28, 28) and y0 == y1
        padded = torch.nn.functional.pad(x0, (2, 2, 2, 2), value=background)
        crops = [padded[:, dy:dy + 28, dx:dx + 28] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(x1, c) for c in crops)                 # a translation by at most 2 px
        moved += not torch.equal(x0, x1)
    assert moved > 40


def test_unknown_names_and_bad_splits_raise_listing_valid_values():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; valid: .*mnist5k.*letters"):
        data.check_dataset("nope")
    with pytest.raises(ValueError, match="valid: .*aux_patches"):
        data.get_dataset("nope", "test")
    with pytest.raises(ValueError, match="valid: train, test"):
        data.get_dataset("mnist5k", "val")
    with pytest.raises(ValueError, match="split"):
        data.get_dataset("letters", "train")
    with pytest.raises(ValueError, match="split"):
        data.get_arrays("aux_patches", "test")
    with pytest.raises(ValueError, match="unknown ID dataset"):
        data.ood_sets("letters")
    with pytest.raises(ValueError, match="unknown ID dataset"):
        data.auxiliary_set("nope")
    with pytest.raises(ValueError, match="unknown ID dataset 'letters'"):
        data.get_dataset("textures", "test", id_dataset="letters")
    with pytest.raises(ValueError, match="ID dataset"):
        data.get_dataset("mnist5k", "test", id_dataset="cifar10")


def test_summary_table():
    table = data.summary()
    assert list(table.columns) == ["set", "group", "split", "count", "source"]
    assert set(table["set"]) == set(embedded.SETS)
    assert table.set_index(["set", "split"]).loc[("aux_patches", "train"), "count"] == 6000


# --- real benchmarks (routing only; the loaders are tested with them) ---------------------------------------

@pytest.mark.skipif(data._real is None, reason="no real-data loaders in this checkout")
def test_real_entries_are_merged_and_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OOD_KIT_DATA", str(tmp_path))
    for name in ("mnist5k", "cifar10", "cifar100", "imagenet10", "imagenet100", "imagenet1k"):
        assert name in data.ID_DATASETS
    assert data.ID_DATASETS["cifar10"].source == "real"
    assert data.auxiliary_set("cifar10") == "tiny_images_300k"
    assert set(data.ood_sets("cifar10")) == {"textures", "svhn", "places365", "lsun_c", "lsun_r", "isun"}
    assert data.OOD_DATASETS["textures"].source == "embedded+real"
    with pytest.raises(data.DatasetNotFound, match="data_prep"):
        data.get_dataset("svhn", "test", id_dataset="cifar10")
    with pytest.raises(data.DatasetNotFound):
        data.get_dataset("textures", "test", id_dataset="cifar10")
    with pytest.raises(ValueError, match="not a test or auxiliary set of 'mnist5k'"):
        data.get_dataset("svhn", "test", id_dataset="mnist5k")
    assert data.get_dataset("textures", "test").tensors[0].shape[1:] == (1, 28, 28)   # mini's by default


@pytest.fixture
def fake_real(monkeypatch):
    """A stand-in for the real-data loaders with the same interface (torchvision's FakeData images)."""
    import types
    import torchvision

    fake = types.SimpleNamespace(
        DatasetNotFound=data.DatasetNotFound,
        REAL_ID={"cifar10": dict(num_classes=10, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                                 class_names=[f"c{i}" for i in range(10)]),
                 "imagenet10": dict(num_classes=10, image_size=224, mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225), class_names=[f"c{i}" for i in range(10)])},
        REAL_OOD={"svhn": "far", "textures": "far", "ssb_hard": "near", "tiny_images_300k": "aux"},
        calls=[])

    def load_real(name, split, transform, root=None):
        fake.calls.append((name, split))
        if name == "svhn":
            raise data.DatasetNotFound("svhn is not downloaded: python -m data_prep --get svhn")
        return torchvision.datasets.FakeData(20, image_size=(3, 40, 50), num_classes=10, transform=transform)

    fake.load_real = load_real
    monkeypatch.setattr(data, "_real", fake)
    monkeypatch.setattr(data, "ID_DATASETS", data._build_id_registry())
    ood, aux = data._build_ood_registry()
    monkeypatch.setattr(data, "OOD_DATASETS", ood)
    monkeypatch.setattr(data, "AUX_DATASETS", aux)
    return fake


def test_routing_to_real_loaders_uses_the_id_datasets_preprocessing(fake_real):
    assert data.ID_DATASETS["cifar10"].source == "real" and data.ID_DATASETS["cifar10"].channels == 3
    assert data.OOD_DATASETS["textures"].source == "embedded+real"
    assert data.ood_sets("cifar10") == {"textures": "far", "svhn": "far"}
    assert data.ood_sets("imagenet10") == {"textures": "far", "ssb_hard": "near"}
    x, y = data.get_dataset("textures", "test", id_dataset="cifar10")[0]          # DTD for CIFAR
    assert x.shape == (3, 32, 32) and y == -1
    x, _ = data.get_dataset("textures", "test", id_dataset="imagenet10")[0]
    assert x.shape == (3, 224, 224)
    assert data.get_dataset("textures", "test").tensors[0].shape[1:] == (1, 28, 28)   # mini's by default
    ds = data.get_dataset("tiny_images_300k", "train", id_dataset="cifar10", train_transform=True, max_n=5)
    assert len(ds) == 5 and ds[0][1] == -1
    assert 0 <= data.get_dataset("cifar10", "train", train_transform=True)[0][1] < 10
    with pytest.raises(data.DatasetNotFound, match="data_prep --get svhn"):
        data.get_dataset("svhn", "test", id_dataset="cifar10")
    with pytest.raises(ValueError, match="not a test or auxiliary set of 'cifar10'"):
        data.get_dataset("letters", "test", id_dataset="cifar10")
    assert ("letters", "test") not in fake_real.calls
