"""Every real dataset the kit can fetch: where from, how to check it, what it unpacks into.

An :class:`Entry` is one folder under the data root (the folder name comes from
``ood_utils.data.real.ENTRY_FOLDER``, the one place that says where the loaders look). It is made of one or
more :class:`Archive` files; each has a list of URLs (the first is the primary host, the rest are mirrors
tried in order), a checksum, and a format. After extraction the files matching each :class:`Count` pattern
are counted; the folder is marked complete only if every count matches.

Where the checksums come from (the ``checksum_source`` of each archive):

- ``torchvision``: the md5 recorded in torchvision's dataset classes (CIFAR, SVHN, DTD, Places365, ImageNet);
- ``pytorch-ood``: the md5 recorded in pytorch-ood's dataset classes (LSUN-C/R, 300K random images, NINCO);
- ``third-party wrapper``: an md5 published in a public OOD-dataset wrapper, not by the dataset's authors
  (iSUN and the MOS subsets of iNaturalist/SUN/Places);
- none: no checksum is published (SSB-hard and OpenImage-O, distributed by OpenOOD through Google Drive).
  Their sha256 and file counts are recorded at the first download in ``data_prep/checksums.lock.json``;
  commit that file so every later download is checked against the first one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ood_utils.data.real import DATA_PREP_ENTRY, ENTRY_FOLDER

FORMATS = ("tar", "tar.gz", "zip", "file")       # "file": used as it is (a .npy, a .mat), not unpacked


@dataclass(frozen=True)
class Archive:
    """One downloadable file."""

    filename: str
    urls: tuple[str, ...]
    format: str
    md5: str | None = None
    sha256: str | None = None
    checksum_source: str = ""
    size: int | None = None              # bytes, for --list (None = unknown until downloaded)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"{self.filename}: unknown format {self.format!r}; valid: {', '.join(FORMATS)}")

    @property
    def published(self) -> bool:
        return bool(self.md5 or self.sha256)


@dataclass(frozen=True)
class Count:
    """How many files matching ``pattern`` (a glob relative to the entry's folder) extraction must produce.

    ``expected=None``: not published; the count of the first complete extraction is recorded in the lock
    file and required from then on. ``images``: count image files only.
    """

    pattern: str                         # "**/*": anywhere in the archive, whatever its top folder is called
    expected: int | None
    images: bool = True


@dataclass(frozen=True)
class Entry:
    name: str
    folder: str
    description: str
    archives: tuple[Archive, ...] = ()
    counts: tuple[Count, ...] = ()
    manual: str | None = None            # instructions, for data that cannot be downloaded automatically
    aliases: tuple[str, ...] = field(default=())


def _gdrive(file_id: str) -> str:
    """Direct-download URL of a public Google Drive file (``confirm=t`` skips the large-file warning page)."""
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


_MOS = "pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset"
_ODIN_DROPBOX = "https://www.dropbox.com/s"

IMAGENET_INSTRUCTIONS = """\
ImageNet-1K (ILSVRC2012) needs an account at https://image-net.org (free for research). Either:

  A. Download from https://image-net.org/download-images.php (ILSVRC2012):
       ILSVRC2012_img_train.tar      (138 GB, md5 1d675b47d978889d74fa0da5fadfb00e)
       ILSVRC2012_img_val.tar        (6.3 GB, md5 29b22e2961454d5413ddabcf34fc5622)
       ILSVRC2012_devkit_t12.tar.gz  (2.5 MB, md5 fa75699e90414af021442c21a62c3abf)
     put the three files in
       {downloads}
     and run `python -m data_prep --get imagenet1k` again: it checks them and unpacks them (with
     torchvision's ImageNet parser) into train/<wnid>/*.JPEG and val/<wnid>/*.JPEG.

  B. If you already have ImageNet unpacked in the usual layout (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, e.g.
     after the common valprep.sh), put or symlink its train/ and val/ folders into
       {folder}
     and run `python -m data_prep --get imagenet1k` again: it counts the images (1,281,167 train,
     50,000 val) and registers the folder.

ImageNet-10 (GReg), ImageNet-100 (BOOD) and the auxiliary pool are read from this same folder.
"""


def _build() -> dict[str, Entry]:
    entries = [
        Entry("cifar10", ENTRY_FOLDER["cifar10"], "CIFAR-10, 50k train + 10k test (ID)",
              (Archive("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                       "tar.gz", md5="c58f30108f718f92721af3b95e74349a", checksum_source="torchvision",
                       size=170_498_071),),
              (Count("cifar-10-batches-py/*_batch*", 6, images=False),)),
        Entry("cifar100", ENTRY_FOLDER["cifar100"], "CIFAR-100, 50k train + 10k test (ID)",
              (Archive("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                       "tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85", checksum_source="torchvision",
                       size=169_001_437),),
              (Count("cifar-100-python/train", 1, images=False), Count("cifar-100-python/test", 1, images=False),
               Count("cifar-100-python/meta", 1, images=False))),
        Entry("svhn", ENTRY_FOLDER["svhn"], "SVHN test set, 26,032 digits (CIFAR far-OOD)",
              (Archive("test_32x32.mat", ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",), "file",
                       md5="eb5a983be6a315427106f1b164d9cef3", checksum_source="torchvision", size=64_275_384),),
              (Count("test_32x32.mat", 1, images=False),)),
        Entry("textures", ENTRY_FOLDER["textures"], "Describable Textures (DTD), 5,640 images (far-OOD)",
              (Archive("dtd-r1.0.1.tar.gz", ("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                                             "https://thor.robots.ox.ac.uk/datasets/dtd/dtd-r1.0.1.tar.gz"),
                       "tar.gz", md5="fff73e5086ae6bdbea199a49dfb8a4c1", checksum_source="torchvision"),),
              (Count("dtd/images/*/*.jpg", 5640),)),
        Entry("places365", ENTRY_FOLDER["places365"], "Places365-Standard test_256, 328,500 images (CIFAR far-OOD)",
              (Archive("filelist_places365-standard.tar",
                       ("http://data.csail.mit.edu/places/places365/filelist_places365-standard.tar",), "tar",
                       md5="35a0585fee1fa656440f3ab298f8479c", checksum_source="torchvision"),
               Archive("test_256.tar", ("http://data.csail.mit.edu/places/places365/test_256.tar",), "tar",
                       md5="f532f6ad7b582262a2ec8009075e186b", checksum_source="torchvision")),
              (Count("categories_places365.txt", 1, images=False), Count("places365_test.txt", 1, images=False),
               Count("test_256/*.jpg", 328_500))),
        Entry("lsun_c", ENTRY_FOLDER["lsun_c"], "LSUN crop, 10,000 32x32 images (ODIN; CIFAR far-OOD)",
              (Archive("LSUN.tar.gz", (f"{_ODIN_DROPBOX}/raw/fhtsw1m3qxlwj6h/LSUN.tar.gz",
                                       f"{_ODIN_DROPBOX}/fhtsw1m3qxlwj6h/LSUN.tar.gz?dl=1"),
                       "tar.gz", md5="458a0a0ab8e5f1cb4516d7400568e460", checksum_source="pytorch-ood"),),
              (Count("**/*", 10_000),)),
        Entry("lsun_r", ENTRY_FOLDER["lsun_r"], "LSUN resize, 10,000 32x32 images (ODIN; CIFAR far-OOD)",
              (Archive("LSUN_resize.tar.gz", (f"{_ODIN_DROPBOX}/raw/moqh2wh8696c3yl/LSUN_resize.tar.gz",
                                              f"{_ODIN_DROPBOX}/moqh2wh8696c3yl/LSUN_resize.tar.gz?dl=1"),
                       "tar.gz", md5="278b7b31c8cb7e804a1465a8ce03a2dc", checksum_source="pytorch-ood"),),
              (Count("**/*", 10_000),)),
        Entry("isun", ENTRY_FOLDER["isun"], "iSUN, 8,925 32x32 images (ODIN; CIFAR far-OOD)",
              (Archive("iSUN.tar.gz", (f"{_ODIN_DROPBOX}/raw/ssz7qxfqae0cca5/iSUN.tar.gz",
                                       f"{_ODIN_DROPBOX}/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1"),
                       "tar.gz", md5="be77b0f2c26fda898afac5f99645ee70", checksum_source="third-party wrapper"),),
              (Count("**/*", 8925),)),
        Entry("tiny_images_300k", ENTRY_FOLDER["tiny_images_300k"],
              "300K random images (Outlier Exposure), uint8 (300000, 32, 32, 3): CIFAR auxiliary outliers",
              (Archive("300K_random_images.npy", ("https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",),
                       "file", md5="64ca64357de98351f28454274a112dc3", checksum_source="pytorch-ood",
                       size=921_600_128),),
              (Count("300K_random_images.npy", 1, images=False),)),
        Entry("inaturalist", ENTRY_FOLDER["inaturalist"], "iNaturalist subset of MOS, 10,000 images (ImageNet far-OOD)",
              (Archive("iNaturalist.tar.gz", (f"http://{_MOS}/iNaturalist.tar.gz", f"https://{_MOS}/iNaturalist.tar.gz"),
                       "tar.gz", md5="5be6ea8aa027d7b631916427b32cb335", checksum_source="third-party wrapper"),),
              (Count("**/*", 10_000),)),
        Entry("sun", ENTRY_FOLDER["sun"], "SUN subset of MOS, 10,000 images (ImageNet far-OOD)",
              (Archive("SUN.tar.gz", (f"http://{_MOS}/SUN.tar.gz", f"https://{_MOS}/SUN.tar.gz"),
                       "tar.gz", md5="8469c3ada62211477954ec1be53b12d0", checksum_source="third-party wrapper"),),
              (Count("**/*", 10_000),)),
        Entry("places", ENTRY_FOLDER["places"], "Places subset of MOS, 10,000 images (ImageNet far-OOD)",
              (Archive("Places.tar.gz", (f"http://{_MOS}/Places.tar.gz", f"https://{_MOS}/Places.tar.gz"),
                       "tar.gz", md5="b5cb5eba2754ae2a28beea8718db699a", checksum_source="third-party wrapper"),),
              (Count("**/*", 10_000),)),
        Entry("ninco", ENTRY_FOLDER["ninco"], "NINCO, 64 OOD classes, 5,879 images (ImageNet near-OOD)",
              (Archive("NINCO_all.tar.gz", ("https://zenodo.org/record/8013288/files/NINCO_all.tar.gz",
                                            "https://zenodo.org/records/8013288/files/NINCO_all.tar.gz?download=1"),
                       "tar.gz", md5="b9ffae324363cd900a81ce3c367cd834", checksum_source="pytorch-ood"),),
              (Count("NINCO/NINCO_OOD_classes/*/*", 5879),)),
        Entry("ssb_hard", ENTRY_FOLDER["ssb_hard"], "SSB-hard, 49,000 images (OpenOOD v1.5; ImageNet near-OOD)",
              (Archive("ssb_hard.zip", (_gdrive("1PzkA-WGG8Z18h0ooL_pDdz9cO-DCIouE"),), "zip"),),
              (Count("**/*", 49_000),)),
        Entry("openimage_o", ENTRY_FOLDER["openimage_o"], "OpenImage-O (OpenOOD v1.5 copy; ImageNet far-OOD)",
              (Archive("openimage_o.zip", (_gdrive("1VUFXnB_z70uHfdgJG2E_pjYOcEgqM7tE"),), "zip"),),
              (Count("**/*", None),)),
        Entry("imagenet1k", ENTRY_FOLDER["imagenet1k"],
              "ImageNet-1K (ILSVRC2012) train + val: ImageNet-10/100/1K ID and the auxiliary pool",
              (Archive("ILSVRC2012_devkit_t12.tar.gz", (), "tar.gz", md5="fa75699e90414af021442c21a62c3abf",
                       checksum_source="torchvision", size=2_568_145),
               Archive("ILSVRC2012_img_val.tar", (), "tar", md5="29b22e2961454d5413ddabcf34fc5622",
                       checksum_source="torchvision", size=6_744_924_160),
               Archive("ILSVRC2012_img_train.tar", (), "tar", md5="1d675b47d978889d74fa0da5fadfb00e",
                       checksum_source="torchvision", size=147_897_477_120)),
              (Count("train/*/*.JPEG", 1_281_167), Count("val/*/*.JPEG", 50_000)),
              manual=IMAGENET_INSTRUCTIONS),
    ]
    registry = {e.name: e for e in entries}
    missing = set(DATA_PREP_ENTRY.values()) - set(registry)
    if missing:
        raise RuntimeError(f"datasets without a data_prep entry: {sorted(missing)}")
    return registry


REGISTRY: dict[str, Entry] = _build()

# Dataset names that live in another entry's folder (``--get imagenet10`` fetches ImageNet-1K).
ALIASES: dict[str, str] = {name: entry for name, entry in DATA_PREP_ENTRY.items() if name != entry}

# Shorthands for a whole benchmark.
GROUPS: dict[str, tuple[str, ...]] = {
    "cifar": ("cifar10", "cifar100", "svhn", "textures", "places365", "lsun_c", "lsun_r", "isun",
              "tiny_images_300k"),
    "imagenet-ood": ("inaturalist", "sun", "places", "textures", "ninco", "ssb_hard", "openimage_o"),
}


def resolve(names, registry: dict[str, Entry] | None = None) -> list[Entry]:
    """Registry entries for names, aliases (imagenet10 -> imagenet1k) and groups ("cifar"), in order, once each."""
    registry = REGISTRY if registry is None else registry
    out: list[Entry] = []
    for name in names:
        expanded = GROUPS.get(name, (name,)) if registry is REGISTRY else (name,)
        for item in expanded:
            key = item if item in registry else ALIASES.get(item, item)
            if key not in registry:
                valid = sorted(registry) + (sorted(ALIASES) + sorted(GROUPS) if registry is REGISTRY else [])
                raise KeyError(f"unknown dataset {item!r}; valid: {', '.join(valid)}")
            if registry[key] not in out:
                out.append(registry[key])
    return out
