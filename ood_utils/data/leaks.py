"""Exact duplicates across splits: no OOD test image and no auxiliary (training-outlier) image may also be an
ID image, and no ID test image may be an ID training image.

An image is identified by a hash of its pixels: the uint8 arrays of the embedded ``mini`` sets; for the real
benchmarks, the tensor the ID dataset's evaluation preprocessing makes of it (a copy of an image, stored in
another file, gives the same tensor). This finds exact copies, not near-duplicates (a re-encoded JPEG or a
shifted crop is a different image here).

>>> from ood_utils import data
>>> data.check_disjoint("mnist6")          # raises DataLeak naming the sets if an image is shared
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from . import embedded


class DataLeak(ValueError):
    """An image of an OOD test set or auxiliary pool is also in an ID split (or ID test is in ID train)."""


def pixel_hashes(images: Iterable[np.ndarray]) -> list[str]:
    """One sha1 per image of its raw bytes: equal hashes = pixel-identical images (same dtype and shape)."""
    return [hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images]


def _embedded_hashes(name: str, split: str) -> list[str]:
    images = embedded.load_set(name)[0][split][0]          # uint8, exactly as cached
    return pixel_hashes(images)


def _tensor_hashes(dataset, batch_size: int = 256) -> list[str]:
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    out = []
    for x, _ in loader:
        out += pixel_hashes(x.numpy().astype(np.float32))
    return out


def _hashes(name: str, split: str, id_dataset: str, max_n: int | None) -> list[str]:
    from . import ID_DATASETS, get_dataset

    if name in embedded.SETS and ID_DATASETS[id_dataset].source == "embedded":
        return _embedded_hashes(name, split)
    paired = {} if name in ID_DATASETS else {"id_dataset": id_dataset}
    return _tensor_hashes(get_dataset(name, split, max_n=max_n, **paired))


def check_disjoint(id_dataset: str, *, max_n: int | None = None, raise_on_leak: bool = True):
    """Count exact duplicates between the ID splits of ``id_dataset`` and every set paired with it.

    Returns a DataFrame with one row per compared set: ``set``, ``role`` ("ID test", "near", "far", "aux"),
    ``images``, ``in_id_train``, ``in_id_test`` (how many of its images are also in that ID split). Raises
    :class:`DataLeak` listing the offending sets unless every count is 0 (``raise_on_leak=False`` only
    reports). ``max_n`` caps the images read per real set (the embedded sets are always read whole).
    """
    import pandas as pd

    from . import _check_id, _safe_aux, ood_sets

    _check_id(id_dataset)
    train = set(_hashes(id_dataset, "train", id_dataset, max_n))
    test_hashes = _hashes(id_dataset, "test", id_dataset, max_n)
    rows = [{"set": id_dataset, "role": "ID test", "images": len(test_hashes),
             "in_id_train": sum(h in train for h in test_hashes), "in_id_test": 0}]
    test = set(test_hashes)
    others = [(name, group, "test") for name, group in ood_sets(id_dataset).items()]
    aux = _safe_aux(id_dataset)
    if aux is not None:
        others.append((aux, "aux", "train"))
    for name, role, split in others:
        hashes = _hashes(name, split, id_dataset, max_n)
        rows.append({"set": name, "role": role, "images": len(hashes),
                     "in_id_train": sum(h in train for h in hashes), "in_id_test": sum(h in test for h in hashes)})
    table = pd.DataFrame(rows, columns=["set", "role", "images", "in_id_train", "in_id_test"])
    leaks = table[(table.in_id_train > 0) | (table.in_id_test > 0)]
    if raise_on_leak and len(leaks):
        listing = "; ".join(f"{r.set} ({r.role}): {r.in_id_train} in ID train, {r.in_id_test} in ID test"
                            for r in leaks.itertuples())
        raise DataLeak(f"images shared with the ID splits of {id_dataset!r}: {listing}")
    return table
