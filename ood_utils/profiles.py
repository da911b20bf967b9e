"""Profiles: one name selects data, models and budgets.

``mini``  the embedded offline benchmark (MNIST-5k vs bundled images), any CPU, minutes.
``quick`` the real benchmarks with reduced epochs and sample counts, one GPU, about an hour.
``paper`` the papers' settings, GPU box(es), hours to days.

A notebook's ``parameters`` cell holds ``profile`` and a few literal overrides (``None`` = profile default);
the next cell calls :func:`resolve`, which validates every value *before* any work starts, applies the smoke
switch (``OOD_KIT_SMOKE=1``, tests only) to the values the caller did not set, seeds python/numpy/torch and
resolves the device. An explicit override always wins over the profile and over smoke scaling.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np


PROFILES = ("mini", "quick", "paper")
SMOKE_ENV = "OOD_KIT_SMOKE"

# Parameters every notebook shares. Each entry: profile -> default.
BASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "seed":         {"mini": 0, "quick": 0, "paper": 0},
    "device":       {"mini": "auto", "quick": "auto", "paper": "auto"},
    "id_dataset":   {"mini": "mnist5k", "quick": "cifar10", "paper": "cifar10"},
    "arch":         {"mini": "mnist_cnn", "quick": "resnet18", "paper": "densenet100"},
    "epochs":       {"mini": 8, "quick": 30, "paper": 100},
    "batch_size":   {"mini": 128, "quick": 128, "paper": 128},
    "lr":           {"mini": 0.05, "quick": 0.1, "paper": 0.1},
    "weight_decay": {"mini": 5e-4, "quick": 5e-4, "paper": 5e-4},
    "max_train":    {"mini": None, "quick": None, "paper": None},   # cap on training images (None = all)
    "max_eval":     {"mini": None, "quick": 2000, "paper": None},   # cap on images per OOD test set
    "num_workers":  {"mini": 0, "quick": 4, "paper": 8},
    "amp":          {"mini": False, "quick": True, "paper": True},
    "checkpoint":   {"mini": None, "quick": None, "paper": None},   # user-supplied weights for the base classifier
}

# Track-specific parameters, merged into the base when a notebook asks for its track.
TRACK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "mme": {
        "preset":      {"mini": "cifar", "quick": "cifar", "paper": "cifar"},
        "ood_sets":    {"mini": None, "quick": None, "paper": None},  # None = every OOD set of the ID dataset
    },
    # BOOD (notebooks 30-32). None = the paper's value for each ID dataset (ood_utils.bood.experiments).
    "bood": {
        "id_datasets":    {"mini": None, "quick": None, "paper": None},   # mini: mnist5k + mnist6
        "arch":           {"mini": "mnist_cnn", "quick": "resnet34", "paper": "resnet34"},  # OOD classifier
        "batch_size":     {"mini": 128, "quick": 160, "paper": 160},      # Sec. 4: "a batch size of 160"
        # the latent encoder of eq. (2): DreamOOD's public code trains it with batches of 256
        "latent_batch_size": {"mini": 128, "quick": 256, "paper": 256},
        "latent_arch":    {"mini": "mnist_cnn", "quick": "resnet34_768", "paper": "resnet34_768"},
        "latent_epochs":  {"mini": 8, "quick": 50, "paper": 200},
        "temperature":    {"mini": 1.0, "quick": 1.0, "paper": 1.0},       # eq. (2); DreamOOD's code: 0.1
        "sd_weights":     {"mini": None, "quick": None, "paper": None},    # None = data/models/stable-diffusion-v1-4
        "step_size":      {"mini": 0.015, "quick": 0.015, "paper": 0.015},  # alpha, eqs. (3)-(5)
        "extra_steps":    {"mini": 2, "quick": 2, "paper": 2},             # c
        "max_steps":      {"mini": 100, "quick": 100, "paper": 100},       # K
        "boundary_ratio": {"mini": 5.0, "quick": 5.0, "paper": 5.0},       # r, percent per class
        "n_outliers":     {"mini": 100, "quick": 200, "paper": 1000},      # generated images per class
        "reg_weight":     {"mini": None, "quick": None, "paper": None},    # beta: 2.5 CIFAR / mini, 1.0 ImageNet
        "phi_hidden":     {"mini": None, "quick": None, "paper": None},    # phi: None = 512 (paper's 3-layer MLP); 0 = Linear(1,2)
        "reg_epochs":     {"mini": 2, "quick": 30, "paper": 100},
        "reg_init":       {"mini": "base", "quick": "scratch", "paper": "scratch"},
        # outliers as training inputs: "resize" (the whole image) or "random_crop" (DreamOOD's public code:
        # RandomCrop(ID size, padding 4) of the generated image, drawn again at every use)
        "outlier_transform": {"mini": "resize", "quick": "resize", "paper": "resize"},
        "n_seeds":        {"mini": 3, "quick": 3, "paper": 3},
        "sweeps":         {"mini": True, "quick": False, "paper": True},   # Figs. 5-6 and Tables 3, 6
        # decoders (eq. 6): the mini latent diffusion model, Stable Diffusion v1.4 (DreamOOD: PLMS 50, cfg 7.5)
        "ldm_ae_steps":     {"mini": 800, "quick": 800, "paper": 800},  # mini LDM autoencoder steps
        "ldm_steps":        {"mini": 2000, "quick": 2000, "paper": 2000},  # mini LDM denoiser steps
        "ldm_sample_steps": {"mini": 50, "quick": 50, "paper": 50},        # DDIM steps
        "sd_steps":         {"mini": 50, "quick": 50, "paper": 50},
        "sd_guidance":      {"mini": 7.5, "quick": 7.5, "paper": 7.5},
        "sd_size":          {"mini": 512, "quick": 512, "paper": 512},     # generated; saved at 256
        "sd_batch":         {"mini": 8, "quick": 16, "paper": 16},
    },
    # GReg (notebooks 10-12): fine-tuning with Energy / OE / POEM (+ Grad) and the samplers of Table 5
    # (ood_utils.greg.experiments). None for id_datasets / archs = the paper's tables for the profile.
    "greg": {
        "id_datasets":    {"mini": None, "quick": None, "paper": None},   # mini: mnist5k + mnist6
        "archs":          {"mini": None, "quick": None, "paper": None},   # paper: ResNet-18, WRN-40-2, DenseNet
        "n_seeds":        {"mini": 3, "quick": 3, "paper": 3},            # the paper's three trials
        "ft_epochs":      {"mini": 1, "quick": 2, "paper": 20},           # fine-tuning, SGD + cosine
        # mini: 0.005, as SGD Nesterov at 0.02 let the energy loss's first steps (margins by the rule) diverge
        "ft_lr":          {"mini": 0.005, "quick": 0.01, "paper": 0.01},
        "ft_weight_decay": {"mini": 5e-4, "quick": 1e-4, "paper": 1e-4},  # public code: SGD wd 1e-4
        "nesterov":       {"mini": True, "quick": True, "paper": True},   # public code: SGD Nesterov, momentum 0.9
        "ft_batch_size":  {"mini": 32, "quick": 64, "paper": 64},         # ID images per step
        # GReg+ (Table 5, Table 3): the public code's ID batch, 32 for DenseNet (64 for ResNet-18, quick's network)
        "plus_batch_size": {"mini": 32, "quick": 64, "paper": 32},
        "ft_max_train":   {"mini": 384, "quick": 10000, "paper": None},   # ID images per fine-tuning epoch
        "ft_eval_max":    {"mini": 300, "quick": 2000, "paper": 10000},   # images per OOD test set
        "aux_per_id":     {"mini": 2, "quick": 2, "paper": 2},            # outliers per ID image in a step
        "pool_factor":    {"mini": 6, "quick": 6, "paper": 6},            # candidate pool = factor x ID batch
        "n_clusters":     {"mini": None, "quick": None, "paper": None},   # None = ID batch size (Algorithm 1)
        "lambda_s":       {"mini": 0.1, "quick": 0.1, "paper": 0.1},
        "lambda_grad":    {"mini": 1.0, "quick": 1.0, "paper": 1.0},
        # None = derived from the base model's energies (greg.experiments.margin_rule); paper: public code
        "m_in":           {"mini": None, "quick": -25.0, "paper": -25.0},
        "m_aux":          {"mini": None, "quick": -7.0, "paper": -7.0},
        "grad_form":      {"mini": "public_code", "quick": "public_code", "paper": "public_code"},  # or "printed"
        "plus_init":      {"mini": "base", "quick": "base", "paper": "scratch"},  # GReg+ on CIFAR: from scratch
        "plus_epochs":    {"mini": 1, "quick": 2, "paper": 60},
        "plus_lr":        {"mini": 0.005, "quick": 0.01, "paper": 0.1},
        # GReg+ schedule: cosine (None) or lr x 0.1 at these epochs (paper: 50 epochs at 0.1, then 10 at 0.01)
        "plus_milestones": {"mini": None, "quick": None, "paper": (50,)},
        "plus_optimizer": {"mini": "sgd", "quick": "sgd", "paper": "sgd"},  # "adam": ImageNet GReg+ (public code)
        "toy_steps":      {"mini": 300, "quick": 800, "paper": 1500},     # notebook 10: steps of the 2D toy
        "toy_seeds":      {"mini": 3, "quick": 3, "paper": 5},
    },
}

# What smoke mode shrinks (only values not set explicitly): key -> cap.
SMOKE_CAPS: dict[str, Any] = {
    "epochs": 2,
    "max_train": 1024,
    "max_eval": 128,
    "num_workers": 0,       # worker processes cost seconds to start, and fork badly inside a test's kernel
    "latent_epochs": 1,
    "reg_epochs": 1,
    "n_outliers": 4,
    "n_seeds": 1,
    "ldm_ae_steps": 20,
    "ldm_steps": 20,
    "ldm_sample_steps": 5,
    "sd_steps": 2,
    "sd_size": 64,
    "toy_steps": 40,
    "toy_seeds": 2,
    "ft_epochs": 1,
    "plus_epochs": 1,
    "ft_max_train": 64,
    "ft_eval_max": 64,
    "ft_batch_size": 16,
    "plus_batch_size": 16,
}

def smoke_capped(key: str, value, smoke: bool):
    """``value`` as smoke mode shrinks it (:data:`SMOKE_CAPS`), for a default a track derives after
    :func:`resolve`."""
    if smoke and key in SMOKE_CAPS and value is not None:
        return min(value, SMOKE_CAPS[key])
    return value


_TYPES: dict[str, tuple[type, ...]] = {
    "seed": (int,), "device": (str,), "id_dataset": (str,), "arch": (str,), "epochs": (int,),
    "batch_size": (int,), "lr": (float, int), "weight_decay": (float, int), "max_train": (int, type(None)),
    "max_eval": (int, type(None)), "num_workers": (int,), "amp": (bool,), "checkpoint": (str, type(None)),
    "preset": (str,), "ood_sets": (list, tuple, type(None)),
    # greg
    "lambda_s": (float, int), "lambda_grad": (float, int), "m_in": (float, int, type(None)),
    "m_aux": (float, int, type(None)), "ft_weight_decay": (float, int), "nesterov": (bool,),
    "plus_milestones": (list, tuple, type(None)), "plus_optimizer": (str,),
    "grad_form": (str,), "n_clusters": (int, type(None)), "pool_factor": (int,), "toy_steps": (int,),
    "toy_seeds": (int,),
    # bood
    "id_datasets": (list, tuple, type(None)), "latent_arch": (str,), "latent_epochs": (int,),
    "latent_batch_size": (int,),
    "temperature": (float, int), "sd_weights": (str, type(None)), "step_size": (float, int),
    "extra_steps": (int,), "max_steps": (int,), "boundary_ratio": (float, int), "n_outliers": (int,),
    "reg_weight": (float, int, type(None)), "phi_hidden": (int, type(None)), "reg_epochs": (int,),
    "reg_init": (str,), "outlier_transform": (str,), "n_seeds": (int,), "sweeps": (bool,),
    "ldm_ae_steps": (int,), "ldm_steps": (int,), "ldm_sample_steps": (int,), "sd_steps": (int,),
    "sd_guidance": (float, int), "sd_size": (int,), "sd_batch": (int,),
    # greg experiments (notebooks 11-12)
    "archs": (list, tuple, type(None)), "ft_epochs": (int,), "ft_lr": (float, int), "ft_batch_size": (int,),
    "plus_batch_size": (int,), "ft_max_train": (int, type(None)), "ft_eval_max": (int, type(None)),
    "aux_per_id": (int,), "plus_init": (str,), "plus_epochs": (int,), "plus_lr": (float, int),
}


class ConfigError(ValueError):
    """A parameter is unknown or has an invalid value."""


def smoke_mode() -> bool:
    """True when tests asked every profile to shrink to seconds."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _choices(key: str) -> tuple[str, ...] | None:
    """Valid values of the parameters that name something, looked up where those things are defined."""
    if key == "arch":
        from .models import ARCHITECTURES
        return tuple(ARCHITECTURES)
    if key == "id_dataset":
        from .data import ID_DATASETS
        return tuple(ID_DATASETS)
    if key == "preset":
        from .detectors import PRESETS
        return tuple(PRESETS)
    return None


def _check_value(key: str, value: Any) -> None:
    types = _TYPES.get(key)
    if types and not isinstance(value, types) or (isinstance(value, bool) and bool not in (types or (bool,))):
        names = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"parameter {key!r} must be {names}, got {value!r} ({type(value).__name__})")
    choices = _choices(key)
    if choices is not None and value not in choices:
        raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(choices)}")
    if key == "device":
        resolve_device(value)  # raises on a malformed name
    if key in ("epochs", "batch_size") and value < 1:
        raise ConfigError(f"{key} must be >= 1, got {value}")
    if key in ("max_train", "max_eval") and value is not None and value < 1:
        raise ConfigError(f"{key} must be None or >= 1, got {value}")


@dataclass(frozen=True)
class Config:
    """Resolved, validated parameters of one notebook run. Read values as attributes: ``cfg.epochs``."""

    profile: str
    smoke: bool
    values: Mapping[str, Any]
    overridden: frozenset = field(default_factory=frozenset)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(f"no parameter {key!r}; known: {', '.join(sorted(self.values))}") from None

    @property
    def torch_device(self):
        return resolve_device(self.values["device"])

    def as_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "smoke": self.smoke, **dict(self.values)}

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"Config(profile={self.profile!r}, smoke={self.smoke}, {body})"


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    return profile


def defaults(profile: str, track: str | None = None) -> dict[str, Any]:
    """The profile's default value of every parameter (before smoke scaling)."""
    check_profile(profile)
    table = dict(BASE_DEFAULTS)
    if track is not None:
        if track not in TRACK_DEFAULTS:
            raise ConfigError(f"unknown track {track!r}; valid: {', '.join(TRACK_DEFAULTS)}")
        table.update(TRACK_DEFAULTS[track])
    return {key: per_profile[profile] for key, per_profile in table.items()}


def resolve(profile: str = "mini", track: str | None = None, *, seed_now: bool = True, **overrides: Any) -> Config:
    """Validate ``profile`` and ``overrides`` (``None`` = keep the default), apply smoke caps, seed, return a Config.

    >>> cfg = resolve("mini", epochs=2)
    >>> cfg.epochs
    2
    """
    values = defaults(profile, track)
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for profile {profile!r}"
                          f"{' track ' + repr(track) if track else ''}; valid: {', '.join(sorted(values))}")
    explicit = {k: v for k, v in overrides.items() if v is not None}
    smoke = smoke_mode()
    if smoke:
        for key, cap in SMOKE_CAPS.items():
            if key in values and key not in explicit:
                values[key] = cap if values[key] is None else min(values[key], cap)
    values.update(explicit)
    for key, value in values.items():
        if value is not None or key in explicit:
            _check_value(key, value)
    cfg = Config(profile, smoke, MappingProxyType(values), frozenset(explicit))
    if seed_now:
        seed_everything(cfg.seed)
    return cfg


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch. On CPU the ``mini`` profile is then bit-reproducible."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def resolve_device(name: str = "auto"):
    """The one place that turns a device name into a ``torch.device`` ('auto' picks cuda, then mps, then cpu)."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return device
