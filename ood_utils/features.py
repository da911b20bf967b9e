"""Extract (features, logits, labels) once per model and dataset, and cache them.

Post-hoc detectors (MME's whole track, the energy scores of GReg and BOOD) only need the penultimate feature
``h`` and the logits ``W h + b`` of every image. A forward pass over a test set is the expensive part, so it
is done once and stored as ``.npz`` with a JSON sidecar (sha256 of the file, shapes, library versions and a
fingerprint of the model's weights). A file that fails any check, or that belongs to another model, is
rebuilt, never read. :func:`load_benchmark` gathers the features of one classifier on its ID dataset and
every OOD set, the input of any post-hoc evaluation (MME's tables, the energy scores of GReg and BOOD).
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from .progress import tqdm

from . import distributed, paths
from .models import unwrap_model
from .train import _data, sha256_file, to_device

_AUTO = "auto"


@dataclass
class Features:
    """Penultimate features ``feats`` (N, D) float32, ``logits`` (N, C) float32, ``labels`` (N,) int64
    (-1 for OOD and auxiliary images)."""

    feats: np.ndarray
    logits: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Features(n={len(self)}, feats={self.feats.shape}, logits={self.logits.shape})"


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the class name and every tensor of the state dict (names, dtypes, shapes, bytes).

    Two models share a fingerprint only if they compute the same function, so a cache entry written for one
    model is never served to another, even under the same tag.
    """
    inner = unwrap_model(model)
    h = hashlib.sha256(type(inner).__name__.encode())
    for name, tensor in sorted(inner.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def extract(model: nn.Module, dataset, *, batch_size: int = 256, device=None, num_workers: int = 0,
            progress: bool = True, desc: str = "features") -> Features:
    """One pass over ``dataset`` in eval mode: ``h = model.features(x)``, ``logits = model.head(h)``."""
    inner = unwrap_model(model)
    device = torch.device(device) if device is not None else next(inner.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    was_training = inner.training
    inner.eval()
    feats, logits, labels = [], [], []
    try:
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
            h = inner.features(to_device(batch[0], device))
            feats.append(h.float().cpu())
            logits.append(inner.head(h).float().cpu())
            labels.append(torch.as_tensor(batch[1]).long().cpu())
    finally:
        inner.train(was_training)
    if not labels:
        raise ValueError(f"extract: dataset {desc!r} is empty")
    return Features(torch.cat(feats).numpy(), torch.cat(logits).numpy(), torch.cat(labels).numpy())


def default_max_n(dataset_name: str, split: str, cfg) -> int | None:
    """How many images to use: all of the ID test set, ``cfg.max_train`` of ID train, ``cfg.max_eval`` of
    every other set (OOD test sets, auxiliary pools)."""
    if dataset_name == cfg.id_dataset:
        return None if split == "test" else cfg.max_train
    return cfg.max_eval


def cache_paths(dataset_name: str, split: str, cfg, tag: str, max_n: int | None) -> tuple[Path, Path]:
    if not tag or any(c in tag for c in r"\/:") or tag.startswith("."):
        raise ValueError(f"tag must be a plain name (it becomes a folder), got {tag!r}")
    folder = paths.cache_dir("features", cfg.profile, tag)
    # the ID dataset is part of the name: an OOD set is normalised with its ID dataset's statistics
    stem = f"{cfg.id_dataset}__{dataset_name}_{split}_n{'all' if max_n is None else max_n}{'_smoke' if cfg.smoke else ''}"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def _read(npz: Path, meta_path: Path, fingerprint: str) -> Features | None:
    """Cached features if the sidecar exists, the hash and the model match and the arrays have the recorded
    shapes; otherwise ``None`` (a warning says why when a file was there)."""
    if not npz.exists() and not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("model") != fingerprint:
            raise ValueError("written for another model")
        if meta.get("sha256") != sha256_file(npz):
            raise ValueError("sha256 does not match its sidecar")
        with np.load(npz, allow_pickle=False) as z:
            out = Features(z["feats"], z["logits"], z["labels"])
        for name in ("feats", "logits", "labels"):
            if list(getattr(out, name).shape) != meta["shapes"][name]:
                raise ValueError(f"{name} has shape {getattr(out, name).shape}, sidecar says {meta['shapes'][name]}")
        return out
    except Exception as err:
        warnings.warn(f"rebuilding feature cache {npz.name}: {type(err).__name__}: {err}", RuntimeWarning,
                      stacklevel=3)
        return None


def _write(out: Features, npz: Path, meta_path: Path, meta: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, feats=out.feats, logits=out.logits, labels=out.labels)
    blob = buf.getvalue()
    paths.write_bytes(npz, blob)
    meta = {**meta, "sha256": hashlib.sha256(blob).hexdigest(),  # of the bytes in hand: no re-read
            "shapes": {k: list(getattr(out, k).shape) for k in ("feats", "logits", "labels")},
            "versions": {"torch": torch.__version__, "numpy": np.__version__}}
    paths.write_json(meta_path, meta)


def get_features(model: nn.Module, dataset_name: str, split: str, cfg, tag: str, *,
                 batch_size: int | None = None, max_n: int | None | str = _AUTO,
                 progress: bool = True) -> Features:
    """Features, logits and labels of ``dataset_name``/``split`` under ``model``, from the cache when valid.

    ``tag`` names the model in the cache (e.g. ``"base"``, ``"greg"``); the weights' fingerprint is checked
    too. ``max_n`` defaults to :func:`default_max_n`. The model is run on its own device.
    """
    if max_n == _AUTO:
        max_n = default_max_n(dataset_name, split, cfg)
    npz, meta_path = cache_paths(dataset_name, split, cfg, tag, max_n)
    fingerprint = model_fingerprint(model)
    cached = _read(npz, meta_path, fingerprint)
    if cached is not None:
        return cached
    data = _data()
    # OOD and auxiliary sets are preprocessed like the ID dataset they are paired with
    paired = {} if dataset_name in data.ID_DATASETS else {"id_dataset": cfg.id_dataset}
    dataset = data.get_dataset(dataset_name, split, max_n=max_n, **paired)
    out = extract(model, dataset, batch_size=batch_size or 2 * cfg.batch_size, num_workers=cfg.num_workers,
                  progress=progress, desc=f"{tag}: {dataset_name}/{split}")
    if distributed.processes().is_main:      # several processes of a launch: one writer, no race on the files
        _write(out, npz, meta_path, {"tag": tag, "dataset": dataset_name, "id_dataset": cfg.id_dataset,
                                      "split": split, "profile": cfg.profile, "smoke": cfg.smoke, "max_n": max_n,
                                      "model": fingerprint})
    return out


# --------------------------------------------------------------------------------- a benchmark of features
@dataclass
class Benchmark:
    """What every post-hoc evaluation needs from one classifier: ``Features`` of the ID training set (to fit
    detectors), of the ID test set and of each OOD test set (``ood``, with ``groups``: set -> "near" | "far"),
    the head ``W`` (C, D) and ``b`` (C,), and ``info`` about the classifier (accuracy, source)."""

    train: Features
    test: Features
    ood: dict
    groups: dict
    W: np.ndarray
    b: np.ndarray
    info: dict = field(default_factory=dict)
    id_dataset: str = ""

    def near(self) -> list[str]:
        return [n for n in self.ood if self.groups[n] == "near"]

    def far(self) -> list[str]:
        return [n for n in self.ood if self.groups[n] == "far"]


def require_data(cfg, names) -> None:
    """Fail before any training when a real dataset is missing: one ``data.DatasetNotFound`` that lists every
    missing set (the ID dataset and ``names``) with the ``data_prep`` command that fetches them. Embedded
    (``mini``) datasets need nothing."""
    data = _data()
    if data.ID_DATASETS[cfg.id_dataset].source == "embedded":
        return
    names = [cfg.id_dataset, *names]
    try:
        from .data import real
    except ImportError:
        real = None
    if real is None:
        raise data.DatasetNotFound(f"{cfg.id_dataset} is a real benchmark and the real-data loaders are not "
                                   "installed; use profile 'mini' or install the kit with its data extras")
    missing = [n for n in names if not real.is_available(n)]
    if missing:
        manual = [n for n in missing if real.DATA_PREP_ENTRY.get(n) == "imagenet1k"]
        raise data.DatasetNotFound(
            f"profile {cfg.profile!r} ({cfg.id_dataset}) needs {len(missing)} dataset(s) that are not in "
            f"{real.data_root()}: {', '.join(missing)}. Get them with: python -m data_prep --get {' '.join(missing)}"
            + (f"\n{', '.join(manual)}: ImageNet cannot be downloaded automatically (it needs an image-net.org "
               "account); that command prints where to put the archives, then verifies and registers them."
               if manual else "")
            + "\n(Set OOD_KIT_DATA to use a data folder elsewhere; profile 'mini' needs no download.)")


def benchmark_sets(cfg, ood_sets=None) -> dict[str, str]:
    """The OOD sets of ``cfg.id_dataset`` (set -> "near" | "far"), narrowed to ``ood_sets`` (default
    ``cfg.ood_sets`` where the track has that parameter); an unknown name lists the valid ones."""
    groups = _data().ood_sets(cfg.id_dataset)
    chosen = ood_sets if ood_sets is not None else getattr(cfg, "ood_sets", None)
    if chosen:
        unknown = [n for n in chosen if n not in groups]
        if unknown:
            raise ValueError(f"unknown OOD set(s) {unknown} for {cfg.id_dataset}; valid: {', '.join(groups)}")
        groups = {n: groups[n] for n in chosen}
    return dict(groups)


def load_benchmark(cfg, tag: str = "base", *, model: nn.Module | None = None, info: dict | None = None,
                   ood_sets=None, progress: bool = True) -> Benchmark:
    """Features of ID train, ID test and every OOD set of ``cfg.id_dataset`` under one classifier, cached.

    ``model`` defaults to the profile's base classifier (``train.get_classifier``, trained or loaded once);
    a track that fine-tunes its own model passes it with its own ``tag``. Missing real data is reported
    before anything is trained or extracted (:func:`require_data`)."""
    from .models import head_weights
    from .train import get_classifier

    groups = benchmark_sets(cfg, ood_sets)
    require_data(cfg, list(groups))
    if model is None:
        model, info = get_classifier(cfg.profile, cfg=cfg, progress=progress)
    W, b = head_weights(model)

    def feats(name, split):
        return get_features(model, name, split, cfg, tag, progress=progress)

    return Benchmark(train=feats(cfg.id_dataset, "train"), test=feats(cfg.id_dataset, "test"),
                     ood={n: feats(n, "test") for n in groups}, groups=groups, W=W, b=b, info=dict(info or {}),
                     id_dataset=cfg.id_dataset)
