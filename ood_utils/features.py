"""Extract (features, logits, labels) once per model and dataset, and cache them.

Post-hoc detectors (MME's whole track, the energy scores of GReg and BOOD) only need the penultimate feature
``h`` and the logits ``W h + b`` of every image. A forward pass over a test set is the expensive part, so it
is done once and stored as ``.npz`` with a JSON sidecar (sha256 of the file, shapes, library versions and a
fingerprint of the model's weights). A file that fails any check, or that belongs to another model, is
rebuilt, never read.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import paths
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
    _write(out, npz, meta_path, {"tag": tag, "dataset": dataset_name, "id_dataset": cfg.id_dataset, "split": split,
                                  "profile": cfg.profile, "smoke": cfg.smoke, "max_n": max_n, "model": fingerprint})
    return out
