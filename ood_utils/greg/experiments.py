"""The GReg experiments: fine-tune a base classifier with an OOD objective, then score every OOD set.

What notebooks 11 and 12 run (Tables 1-2, 4, 5, 6 of the paper), one function per step::

    cfg = experiments.resolve_config("mini")                 # validated, before any work
    for setting in experiments.settings(cfg):                # (id_dataset, arch) pairs of the profile
        rows = experiments.run_methods(cfg, setting, ["energy", "greg"])    # seeds x methods, cached
        base = experiments.posthoc_baselines(cfg, setting)   # MSP, ODIN, Energy, ReAct, DICE on the base

A *run* fine-tunes the profile's base classifier (``train.get_classifier``: trained once, cached) with one
objective of :mod:`.objectives` for ``ft_epochs`` epochs of SGD + cosine, and is cached under a key that
holds everything that changes its weights: method, sampler, seed, ID dataset, every hyperparameter and the
base model's fingerprint. An interrupted run resumes from its per-epoch checkpoint. Every fine-tuned model
is scored with the energy score (higher = more ID, ``logsumexp`` of the logits), the detector the paper
evaluates its objectives with; the rows are those of :func:`ood_utils.metrics.evaluate_sets`.

Table 5 compares samplers: each step the sampler sees a candidate pool of ``pool_factor`` times the
auxiliary batch and keeps ``aux_per_id`` x the ID batch (the paper's 2 n_ID) chosen with the current model.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
import torch

from .. import data, features, health, metrics, paths, profiles, train
from ..detectors import get_detector
from .objectives import METHODS as OBJECTIVES
from .objectives import IDAuxLoader, make_objective
from .regularizer import FORMS

# ------------------------------------------------------------------------------------------------ names

@dataclass(frozen=True)
class Run:
    """One trainable method of the experiments: an objective of :mod:`.objectives` and its sampler."""

    objective: str             # a key of objectives.METHODS
    sampler: str | None        # None = the objective's own sampler
    title: str                 # the paper's row label (Table 4 spelling where it has one)


#: every method the experiments train, by the kit's name
RUNS = {
    "energy": Run("energy", None, "Energy"),
    "greg": Run("greg", None, "Energy + Grad"),
    "oe": Run("oe", None, "OE"),
    "oe_grad": Run("oe_grad", None, "OE + Grad"),
    "poem": Run("poem", None, "POEM"),
    "poem_grad": Run("poem_grad", None, "POEM + Grad"),
    "random": Run("energy", "random", "Random sampling"),
    "dos": Run("dos", None, "DOS"),
    "energy_clustering": Run("energy_clustering", None, "Energy only clustering"),
    "greg_plus": Run("greg_plus", None, "GReg+"),
}
#: Table 4 (and Tables 1-2): three objectives, each without and with the gradient term
FINETUNE_METHODS = ("energy", "greg", "oe", "oe_grad", "poem", "poem_grad")
#: each objective without the gradient term -> with it
GRAD_PAIRS = {"energy": "greg", "oe": "oe_grad", "poem": "poem_grad"}
#: Table 5: samplers trained with the energy loss (no gradient term), then GReg+ (Algorithm 1 + gradient term)
SAMPLING_METHODS = ("random", "poem", "dos", "energy_clustering", "greg_plus")
#: the post-hoc baselines of Tables 1-3, computed on the base classifier
POSTHOC = {"msp": "MSP", "odin": "ODIN", "energy_score": "Energy Score", "react": "ReAct", "dice": "DICE"}
_POSTHOC_DETECTOR = {"msp": "msp", "odin": "odin", "energy_score": "energy", "react": "react", "dice": "dice"}

#: per experiment and profile: the ID datasets and networks of the paper's tables (None in a parameter = these)
ID_DATASETS = {"finetune": {"mini": ("mnist5k", "mnist6"), "quick": ("cifar10",), "paper": ("cifar10", "cifar100")},
               "sampling": {"mini": ("mnist5k", "mnist6"), "quick": ("cifar10",), "paper": ("cifar100",)}}
ARCHS = {"finetune": {"mini": ("mnist_cnn",), "quick": ("resnet18",), "paper": ("resnet18", "wrn40_2", "densenet100")},
         "sampling": {"mini": ("mnist_cnn",), "quick": ("resnet18",), "paper": ("densenet100",)}}
#: ImageNet-10 (Table 3) is fine-tuned from a DenseNet-121
IMAGENET_ARCHS = ("densenet121",)
#: the hyperparameters a run's cache key and recipe hold
HYPER = ("ft_batch_size", "ft_max_train", "aux_per_id", "pool_factor", "n_clusters", "lambda_s", "lambda_grad",
         "m_in", "m_aux", "ft_weight_decay", "nesterov", "grad_form")
#: Table 3 averages these four OOD sets of ImageNet-10 (the others are shown per set, not averaged)
TABLE3_AVERAGE = ("inaturalist", "sun", "places", "textures")
#: the margins' rule where a profile leaves them None (``mini``): quantiles of the base model's energies.
#: m_in at the 5% quantile of its ID training energies: the energy loss pulls nearly every ID sample down,
#: as -25 lies below a CE-trained CIFAR model's ID energies; m_aux at the median of its energies on the
#: auxiliary pool: half the pool starts inside the margin (the energy loss pushes it up) and half past it
#: (eq. (3)'s mask smooths it), so neither term starts idle
MARGIN_QUANTILES = {"m_in": 0.05, "m_aux": 0.5}
#: images of each kind the margin rule scores, and (fewer: it runs once per run) the pool shares and the
#: separation health check
SCORE_SAMPLE, CHECK_SAMPLE = 1000, 500
#: ImageNet GReg+ (Table 3) as the public code trains it: Adam at lr 1e-4 from the pre-trained DenseNet-121,
#: x0.1 at epoch 10, 25 epochs (paper profile; smaller profiles keep their own epochs). Adam without weight
#: decay, as the code's other Adam path; values a user sets win
IMAGENET_PLUS = {"plus_init": "base", "plus_optimizer": "adam", "plus_lr": 1e-4, "plus_milestones": (10,)}
IMAGENET_PLUS_EPOCHS = {"paper": 25}
ADAM_WEIGHT_DECAY = 0.0
#: the two training recipes: Table 4 fine-tunes the base model; Table 5 (GReg+) trains from ``plus_init``
RECIPES = ("finetune", "sampling")


def check_methods(names, valid=tuple(RUNS)) -> tuple[str, ...]:
    """The method names, or a ValueError listing the valid ones."""
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in valid]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or names}; valid: {', '.join(valid)}")
    return names


# ------------------------------------------------------------------------------------------------ config

def resolve_config(profile: str = "mini", experiment: str = "finetune", **params) -> profiles.Config:
    """``profiles.resolve(profile, "greg", ...)`` plus the checks of this track, all before any work:
    ID datasets and networks exist, margins in order, a candidate pool that holds what a step keeps.
    ``experiment`` ("finetune": Tables 1-2, 4; "sampling": Table 5) picks the paper's default settings."""
    if experiment not in RECIPES:
        raise profiles.ConfigError(f"unknown experiment {experiment!r}; valid: {', '.join(RECIPES)}")
    cfg = profiles.resolve(profile, "greg", **params)
    if experiment == "sampling" and "ft_batch_size" not in cfg.overridden:
        # GReg+ runs with its own ID batch (the public code's 32 for DenseNet); ft_batch_size is what a step reads
        cfg = dataclasses.replace(cfg, values=MappingProxyType({**cfg.values, "ft_batch_size": cfg.plus_batch_size}))
    ids = tuple(cfg.id_datasets) if cfg.id_datasets else ID_DATASETS[experiment][cfg.profile]
    if cfg.archs:
        archs = tuple(cfg.archs)
    elif "arch" in cfg.overridden:
        archs = (cfg.arch,)
    elif all(d.startswith("imagenet") for d in ids):
        archs = IMAGENET_ARCHS
    else:
        archs = ARCHS[experiment][cfg.profile]
    if cfg.smoke:  # smoke mode: the first setting only, unless chosen explicitly
        ids = ids if "id_datasets" in cfg.overridden else ids[:1]
        archs = archs if "archs" in cfg.overridden else archs[:1]
    for name in ids:
        if name not in data.ID_DATASETS:
            raise profiles.ConfigError(f"unknown ID dataset {name!r}; valid: {', '.join(data.ID_DATASETS)}")
    from ..models import ARCHITECTURES
    for arch in archs:
        if arch not in ARCHITECTURES:
            raise profiles.ConfigError(f"unknown arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    if cfg.m_in is not None and cfg.m_aux is not None and not cfg.m_in < cfg.m_aux:
        raise profiles.ConfigError(f"margins in the wrong order: m_in={cfg.m_in} must be below m_aux={cfg.m_aux} "
                                   "(ID energies are pushed below m_in, outliers above m_aux)")
    for key in ("ft_epochs", "plus_epochs", "ft_batch_size", "plus_batch_size", "aux_per_id", "pool_factor", "n_seeds"):
        if cfg.values[key] < 1:
            raise profiles.ConfigError(f"{key} must be >= 1, got {cfg.values[key]}")
    if cfg.pool_factor < cfg.aux_per_id:
        raise profiles.ConfigError(f"the candidate pool (pool_factor={cfg.pool_factor} x ID batch) is smaller than "
                                   f"the {cfg.aux_per_id} x ID batch outliers a step keeps; raise pool_factor")
    if cfg.grad_form not in FORMS:
        raise profiles.ConfigError(f"unknown grad_form {cfg.grad_form!r}; valid: {', '.join(FORMS)}")
    if cfg.plus_init not in ("base", "scratch"):
        raise profiles.ConfigError(f"unknown plus_init {cfg.plus_init!r}; valid: base, scratch")
    if cfg.plus_optimizer not in train.OPTIMIZERS:
        raise profiles.ConfigError(f"unknown plus_optimizer {cfg.plus_optimizer!r}; valid: {', '.join(train.OPTIMIZERS)}")
    if cfg.n_clusters is not None and not 1 <= cfg.n_clusters <= cfg.ft_batch_size:
        raise profiles.ConfigError(f"n_clusters must be in [1, ft_batch_size={cfg.ft_batch_size}] (the paper's "
                                   f"k = ID batch size), got {cfg.n_clusters}")
    ms = cfg.plus_milestones
    if ms is not None and (not all(isinstance(m, int) and m >= 1 for m in ms) or list(ms) != sorted(set(ms))):
        raise profiles.ConfigError(f"plus_milestones must be increasing epochs >= 1, got {ms}")
    rule = cfg.m_in is None or cfg.m_aux is None
    values = {**cfg.values, "id_datasets": ids, "archs": archs, "margin_rule": rule}
    if all(d.startswith("imagenet") for d in ids):
        # ImageNet GReg+ fine-tunes the pretrained network (Table 3), never from scratch, with its own recipe
        imagenet = dict(IMAGENET_PLUS)
        if cfg.profile in IMAGENET_PLUS_EPOCHS:
            imagenet["plus_epochs"] = profiles.smoke_capped("plus_epochs", IMAGENET_PLUS_EPOCHS[cfg.profile], cfg.smoke)
        values.update({k: v for k, v in imagenet.items() if k not in cfg.overridden})
    return dataclasses.replace(cfg, values=MappingProxyType(values))


def settings(cfg) -> list[tuple[str, str]]:
    """The (id_dataset, arch) pairs a run covers, in table order."""
    return [(d, a) for d in cfg.id_datasets for a in cfg.archs]


def for_setting(cfg, setting: tuple[str, str]) -> profiles.Config:
    """``cfg`` with ``id_dataset`` / ``arch`` set to one setting (what the shared modules read)."""
    id_dataset, arch = setting
    return dataclasses.replace(cfg, values=MappingProxyType({**cfg.values, "id_dataset": id_dataset, "arch": arch}))


def seeds(cfg) -> list[int]:
    """``n_seeds`` consecutive seeds from ``cfg.seed`` (the paper's three trials)."""
    return [cfg.seed + i for i in range(cfg.n_seeds)]


# ------------------------------------------------------------------------------------------------ data

def check_data(cfg) -> None:
    """Every dataset of every setting on disk, or one error naming the ``data_prep`` command."""
    missing = []
    for id_dataset, _ in settings(cfg):
        if data.ID_DATASETS[id_dataset].source == "embedded":
            continue
        from ..data import real
        names = [id_dataset, data.auxiliary_set(id_dataset), *data.ood_sets(id_dataset)]
        missing += [n for n in names if not real.is_available(n) and n not in missing]
    if missing:
        raise data.DatasetNotFound(f"profile {cfg.profile!r} needs {', '.join(missing)}; get them with: "
                                   f"python -m data_prep --get {' '.join(missing)}")


def base_classifier(cfg, setting, progress: bool = False):
    """The cached base classifier of a setting (``train.get_classifier``), in eval mode. ImageNet-10 on
    DenseNet-121 (Table 3) starts from torchvision's ImageNet-1K weights instead, the classifier rows of its
    ten classes kept (a user checkpoint still wins)."""
    if starts_from_imagenet_weights(cfg, setting):
        return _imagenet_pretrained(cfg, setting)
    return train.get_classifier(cfg.profile, cfg=for_setting(cfg, setting), progress=progress)


def starts_from_imagenet_weights(cfg, setting) -> bool:
    """True where the base classifier is torchvision's ImageNet DenseNet-121 (ImageNet-10, no user checkpoint)."""
    return setting[0] == "imagenet10" and setting[1] == "densenet121" and not cfg.checkpoint


def _imagenet_pretrained(cfg, setting):
    """DenseNet-121 with torchvision's ImageNet weights; ImageNet-1K class indices are the sorted wnids."""
    from ..data import real
    from ..models import build_model, load_imagenet_pretrained

    check_data(cfg)
    all_wnids = sorted(real.imagenet1k_wnids())   # torchvision's class index = the wnid's sorted position
    rows = [all_wnids.index(w) for w in real.IMAGENET10_WNIDS]
    model = load_imagenet_pretrained(build_model("densenet121", len(rows)), "densenet121", rows)
    model.to(cfg.torch_device).eval()
    acc = train._test_accuracy(model, setting[0], for_setting(cfg, setting))
    return model, {"source": "torchvision ImageNet-1K weights", "test_accuracy": acc}


def _loader(dataset, batch_size: int, seed: int, cfg):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       generator=torch.Generator().manual_seed(seed), num_workers=cfg.num_workers)


def train_loader(cfg, setting, name: str, seed: int) -> IDAuxLoader:
    """ID batches of ``ft_batch_size`` zipped with auxiliary batches: ``aux_per_id`` x that for plain
    objectives, a candidate pool of ``pool_factor`` x the ID batch when a sampler picks from it."""
    id_dataset, _ = setting
    run = RUNS[name]
    sampler = run.sampler or OBJECTIVES[run.objective].sampler
    b = cfg.ft_batch_size
    kept = cfg.aux_per_id * b
    id_set = data.get_dataset(id_dataset, "train", train_transform=True, max_n=cfg.ft_max_train, seed=seed)
    aux_set = data.get_dataset(data.auxiliary_set(id_dataset), "train", id_dataset=id_dataset, seed=seed)
    if len(id_set) < b or len(aux_set) < kept:
        raise ValueError(f"{id_dataset}: {len(id_set)} ID and {len(aux_set)} auxiliary images cannot fill one "
                         f"step of {b} ID and {kept} auxiliary images; lower ft_batch_size")
    # a pool cannot be larger than the auxiliary set itself (a small stand-in, or a tiny smoke run)
    n_aux = min(cfg.pool_factor * b, len(aux_set)) if sampler != "none" else kept
    return IDAuxLoader(_loader(id_set, b, seed, cfg), _loader(aux_set, n_aux, seed + 10_000, cfg))


# ------------------------------------------------------------------------------------------------ runs

def recipe(cfg, kind: str = "finetune") -> dict:
    """Starting point, epochs, optimiser, learning rate, schedule and weight decay of a recipe: ``finetune``
    (Table 4: the base classifier, ``ft_epochs`` of SGD at ``ft_lr``) or ``sampling`` (Table 5:
    ``plus_init`` = "base" or "scratch", as the paper trains GReg+ on CIFAR from scratch, ``plus_epochs`` of
    ``plus_optimizer`` at ``plus_lr``; Table 3's ImageNet GReg+ runs Adam, see :data:`IMAGENET_PLUS`)."""
    if kind not in RECIPES:
        raise ValueError(f"unknown recipe {kind!r}; valid: {', '.join(RECIPES)}")
    if kind == "finetune":
        return {"init": "base", "epochs": cfg.ft_epochs, "lr": cfg.ft_lr, "milestones": None,
                "optimizer": "sgd", "weight_decay": cfg.ft_weight_decay}
    ms = None if cfg.plus_milestones is None else [int(m) for m in cfg.plus_milestones]
    decay = ADAM_WEIGHT_DECAY if cfg.plus_optimizer == "adam" else cfg.ft_weight_decay
    return {"init": cfg.plus_init, "epochs": cfg.plus_epochs, "lr": cfg.plus_lr, "milestones": ms,
            "optimizer": cfg.plus_optimizer, "weight_decay": decay}


def run_key(cfg, setting, name: str, seed: int, base_fingerprint: str, kind: str = "finetune") -> str:
    """Cache name of a fine-tuned model: readable prefix + a hash of everything that changes its weights."""
    check_methods([name])
    spec = {"run": dataclasses.asdict(RUNS[name]), "seed": seed, "setting": list(setting), "smoke": cfg.smoke,
            "base": base_fingerprint, **recipe(cfg, kind), **{k: cfg.values[k] for k in HYPER}}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{setting[0]}_{setting[1]}_{name}_s{seed}_{digest}" + ("_smoke" if cfg.smoke else "")


def objective(cfg, name: str, seed: int, steps_per_epoch: int | None = None):
    """The ``loss_fn`` of a method with the profile's weights, margins and sampler settings."""
    run = RUNS[name]
    return make_objective(run.objective, sampler=run.sampler, lambda_s=cfg.lambda_s,
                          lambda_grad=cfg.lambda_grad, m_in=cfg.m_in, m_aux=cfg.m_aux, form=cfg.grad_form,
                          n_clusters=cfg.n_clusters, seed=seed, steps_per_epoch=steps_per_epoch)


def _start_model(cfg, setting, init: str, seed: int):
    """The model a run starts from: the base classifier (a fresh copy on every call) or new random weights."""
    from ..models import build_model

    if init not in ("base", "scratch"):
        raise ValueError(f"unknown plus_init {init!r}; valid: base, scratch")
    if init == "base":
        base, _ = base_classifier(cfg, setting)
        return base, features.model_fingerprint(base)
    profiles.seed_everything(seed)
    info = data.ID_DATASETS[setting[0]]
    model = build_model(setting[1], info.num_classes, image_size=info.image_size).to(cfg.torch_device)
    return model, "scratch"


def finetune(cfg, setting, name: str, seed: int, kind: str = "finetune", progress: bool = False):
    """Load-or-train one model of a recipe (:func:`recipe`); returns ``(model, meta)``. ``meta["source"]``
    is ``"cache"`` or ``"trained"``; a trained run records its seconds and the loss history."""
    check_methods([name])
    cfg = with_margins(cfg, setting)
    rec = recipe(cfg, kind)
    model, start = _start_model(cfg, setting, rec["init"], seed)
    key = run_key(cfg, setting, name, seed, start, kind)
    folder = paths.cache_dir("greg", cfg.profile, "finetuned")
    weights, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    meta = train._read_cached(model, weights, meta_path, cfg)
    if meta is not None:
        return model.eval(), {**meta, "source": "cache", "key": key}
    loader = train_loader(cfg, setting, name, seed)
    profiles.seed_everything(seed)
    t0 = time.perf_counter()
    loss_fn = objective(cfg, name, seed, len(loader))
    hist = train.fit(model, loader, epochs=rec["epochs"], lr=rec["lr"], weight_decay=rec["weight_decay"],
                     optimizer=rec["optimizer"], nesterov=cfg.nesterov, milestones=rec["milestones"],
                     device=cfg.torch_device,
                     ckpt_path=folder / f"{key}.train.pt", amp=cfg.amp, loss_fn=loss_fn, progress=progress)
    meta = train._save_final(model, weights, meta_path, {
        "method": name, "seed": seed, "setting": list(setting), "smoke": cfg.smoke,
        "seconds": time.perf_counter() - t0, "history": hist["history"], "steps": loss_fn.log,
        "steps_per_epoch": len(loader), "skipped": loss_fn.skipped, **rec,
        **{k: cfg.values[k] for k in HYPER}})
    (folder / f"{key}.train.pt").unlink(missing_ok=True)
    (folder / f"{key}.train.pt.json").unlink(missing_ok=True)
    return model.eval(), {**meta, "source": "trained", "key": key}


def energy_id_score(logits: np.ndarray) -> np.ndarray:
    """``logsumexp(logits)`` = ``-S_En``: the energy score with higher = more ID, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(1, keepdims=True)))[:, 0]


def set_features(model, cfg, setting, tag: str, progress: bool = False) -> dict:
    """Cached (features, logits, labels) of the ID test set (``"id"``) and of every OOD set (capped at
    ``ft_eval_max`` images each; the whole ID test set except in smoke mode)."""
    scfg = for_setting(cfg, setting)
    id_max = cfg.ft_eval_max if cfg.smoke else None   # smoke mode: a few ID test images are enough
    out = {"id": features.get_features(model, setting[0], "test", scfg, tag, max_n=id_max, progress=progress)}
    for name in data.ood_sets(setting[0]):
        out[name] = features.get_features(model, name, "test", scfg, tag, max_n=cfg.ft_eval_max, progress=progress)
    return out


def evaluate_model(model, cfg, setting, method: str, tag: str, seed: int, n_boot: int = 0) -> list[dict]:
    """Rows of ``metrics.evaluate_sets`` for the energy score of ``model`` (per OOD set, average, near,
    far), plus one ``id_accuracy`` row (dataset ``"id"``)."""
    feats = set_features(model, cfg, setting, tag)
    scores = {k: energy_id_score(v.logits) for k, v in feats.items()}
    diverged = [k for k, s in scores.items() if not np.isfinite(s).all()]
    if diverged:   # a diverged run: its metrics are NaN and its health check says why (never a crash)
        warnings.warn(f"{method} (seed {seed}): non-finite energy scores on {', '.join(diverged)}", RuntimeWarning,
                      stacklevel=2)
        rows = evaluate_scores(method, {k: np.nan_to_num(s) for k, s in scores.items()}, setting, seed, n_boot)
        rows = [{**r, **{c: np.nan for c in r if c.startswith(("auroc", "fpr95"))}} for r in rows]
    else:
        rows = evaluate_scores(method, scores, setting, seed, n_boot)
    acc = metrics.accuracy(np.nan_to_num(feats["id"].logits, nan=0.0), feats["id"].labels)
    return rows + [{"method": method, "dataset": "id", "group": "id", "id_accuracy": acc,
                    "id_dataset": setting[0], "arch": setting[1], "seed": seed}]


def evaluate_scores(method: str, scores: dict, setting, seed: int, n_boot: int = 0) -> list[dict]:
    """``metrics.evaluate_sets`` over the setting's OOD sets, each row tagged with id_dataset, arch, seed."""
    average = TABLE3_AVERAGE if setting[0] == "imagenet10" else None
    rows = metrics.evaluate_sets(method, scores, data.ood_sets(setting[0]), average_over=average, n_boot=n_boot,
                                 seed=seed)
    return [{**r, "id_dataset": setting[0], "arch": setting[1], "seed": seed} for r in rows]


def run_methods(cfg, setting, names, kind: str = "finetune", progress: bool = True) -> pd.DataFrame:
    """Train and evaluate every method x seed of one setting with a recipe (cached runs are read, not
    retrained); the base classifier is evaluated too, as method ``"base"`` (Table 6's "Clean")."""
    from ..progress import tqdm

    names = check_methods(names)
    base, _ = base_classifier(cfg, setting)
    rows = evaluate_model(base, cfg, setting, "base", "base", cfg.seed)
    base_acc, base_scores = rows[-1]["id_accuracy"], _id_test_scores(base, cfg, setting, "base")
    jobs = [(n, s) for s in seeds(cfg) for n in names]
    for name, seed in tqdm(jobs, desc=f"{setting[0]} fine-tunes", disable=not progress, leave=False):
        model, meta = finetune(cfg, setting, name, seed, kind)
        tag = f"greg_{meta['key']}"
        run_rows = evaluate_model(model, cfg, setting, name, tag, seed)
        h = run_health(model, cfg, setting, f"{name} seed {seed}", meta, run_rows[-1]["id_accuracy"], base_acc,
                       _id_test_scores(model, cfg, setting, tag), base_scores)
        extra = {"seconds": meta.get("seconds", np.nan), "healthy": h.ok, "health": h.to_json(),
                 "m_in": meta["m_in"], "m_aux": meta["m_aux"], "shares": json.dumps(epoch_shares(meta))}
        rows += [{**r, **extra} for r in run_rows]
    return pd.DataFrame(rows)


def run_all(cfg, names, kind: str = "finetune", progress: bool = True) -> pd.DataFrame:
    """:func:`run_methods` for every setting of the profile, one DataFrame."""
    check_data(cfg)
    return pd.concat([run_methods(cfg, s, names, kind, progress) for s in settings(cfg)], ignore_index=True)


# ------------------------------------------------------------------------------------------------ margins

def energies(model, dataset, cfg, n: int = SCORE_SAMPLE) -> np.ndarray:
    """``S = -LSE(f(x))`` of ``model`` on a fixed sample of ``n`` images of ``dataset`` (eval mode)."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n].tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=256)
    model.eval()
    with torch.no_grad():
        out = [-torch.logsumexp(model(b[0].to(cfg.torch_device)).float(), 1).cpu() for b in loader]
    return torch.cat(out).numpy().astype(np.float64)


def _train_sets(cfg, setting):
    """The ID training images a run sees (no augmentation) and the auxiliary pool, loaded once per process."""
    return _load_train_sets(setting[0], cfg.ft_max_train, cfg.seed, cfg.profile, cfg.smoke)


@functools.lru_cache(maxsize=8)
def _load_train_sets(id_dataset, max_n, seed, profile, smoke):
    id_set = data.get_dataset(id_dataset, "train", max_n=max_n, seed=seed)
    aux_set = data.get_dataset(data.auxiliary_set(id_dataset), "train", id_dataset=id_dataset, seed=seed)
    return id_set, aux_set


_MARGINS: dict = {}


def margin_rule(cfg, setting) -> dict:
    """:data:`MARGIN_QUANTILES` of the base model's energies on its ID training data and on the auxiliary
    pool: ``{"m_in", "m_aux", "id_energies", "aux_energies"}`` (the energies as 5/25/50/75/95% quantiles)."""
    base, _ = base_classifier(cfg, setting)
    key = (cfg.profile, cfg.smoke, tuple(setting), features.model_fingerprint(base))
    if key not in _MARGINS:
        id_set, aux_set = _train_sets(cfg, setting)
        s_in, s_aux = energies(base, id_set, cfg), energies(base, aux_set, cfg)
        q = (5, 25, 50, 75, 95)
        _MARGINS[key] = {"m_in": float(np.quantile(s_in, MARGIN_QUANTILES["m_in"])),
                         "m_aux": float(np.quantile(s_aux, MARGIN_QUANTILES["m_aux"])),
                         "id_energies": dict(zip(q, np.percentile(s_in, q).round(2).tolist())),
                         "aux_energies": dict(zip(q, np.percentile(s_aux, q).round(2).tolist()))}
    return _MARGINS[key]


def with_margins(cfg, setting) -> profiles.Config:
    """:func:`for_setting` with the margins set: the profile's, or :func:`margin_rule`'s where it has none."""
    cfg = for_setting(cfg, setting)
    if not cfg.values.get("margin_rule"):
        return cfg
    rule = margin_rule(cfg, setting)
    given = {k: cfg.values[k] for k in ("m_in", "m_aux") if cfg.values[k] is not None and
             not cfg.values.get(f"_{k}_derived")}
    values = {**cfg.values, "m_in": rule["m_in"], "m_aux": rule["m_aux"], **given,
              **{f"_{k}_derived": k not in given for k in ("m_in", "m_aux")}}
    if not values["m_in"] < values["m_aux"]:
        raise profiles.ConfigError(f"margins in the wrong order for {setting}: m_in={values['m_in']} >= "
                                   f"m_aux={values['m_aux']}")
    return dataclasses.replace(cfg, values=MappingProxyType(values))


def pool_shares(model, cfg, setting) -> dict:
    """Shares of a fixed sample of the training data inside the margins (``S > m_in`` for ID, ``S < m_aux``
    for the auxiliary pool: the energy loss acts on them) and kept by eq. (3)'s masks (the rest)."""
    cfg = with_margins(cfg, setting)
    id_set, aux_set = _train_sets(cfg, setting)
    s_in, s_aux = energies(model, id_set, cfg, CHECK_SAMPLE), energies(model, aux_set, cfg, CHECK_SAMPLE)
    return {"in_inside": float((s_in > cfg.m_in).mean()), "aux_inside": float((s_aux < cfg.m_aux).mean()),
            "mask_in": float((s_in <= cfg.m_in).mean()), "mask_aux": float((s_aux >= cfg.m_aux).mean())}


def epoch_shares(meta: dict) -> list[dict]:
    """Per epoch, the mean over its steps of the batch shares the objective logged (see ``Objective``)."""
    steps, per = meta.get("steps") or [], meta.get("steps_per_epoch") or 0
    if not steps or not per:
        return []
    keys = ("in_inside", "aux_inside", "mask_in", "mask_aux")
    chunks = [steps[i:i + per] for i in range(0, len(steps), per)]
    out = [{"epoch": e, **{k: float(np.mean([s[k] for s in chunk])) for k in keys}} for e, chunk in enumerate(chunks, 1)]
    for row, chunk in zip(out, chunks):   # the gradient term's share of the loss (lambda_grad L_grad / total)
        if all("grad" in s for s in chunk):
            row["grad_share"] = float(np.mean([s["grad"] for s in chunk]) / max(np.mean([s["total"] for s in chunk]), 1e-12))
    return out


# ------------------------------------------------------------------------------------------------ health

#: the largest share of skipped (non-finite) steps a healthy run may have
MAX_SKIPPED = 0.1


def _id_test_scores(model, cfg, setting, tag: str) -> np.ndarray:
    return energy_id_score(set_features(model, cfg, setting, tag)["id"].logits)


def run_health(model, cfg, setting, run: str, meta: dict, accuracy: float, base_accuracy: float,
               id_scores, base_id_scores) -> health.Health:
    """The health of one fine-tune: ID accuracy against the base model, the energy score's spread on ID
    test data, its separation of the run's own training ID and auxiliary data, the loss curve (every step's
    total loss) and the share of skipped steps."""
    id_set, aux_set = _train_sets(cfg, setting)
    finite = bool(np.isfinite(id_scores).all())
    checks = [health.Check("finite scores", float(finite), 1.0, finite,
                           "energy scores finite" if finite else "non-finite energy scores (the run diverged)"),
              health.accuracy_check(accuracy, base_accuracy), health.spread_check(id_scores, base_id_scores),
              health.separation_check(-energies(model, id_set, cfg, CHECK_SAMPLE),
                                      -energies(model, aux_set, cfg, CHECK_SAMPLE),
                                      name="energy separation of the training ID / auxiliary data")]
    losses = [s["total"] for s in meta.get("steps") or []] or [h["loss"] for h in meta.get("history", [])]
    if losses:
        checks.append(health.loss_check(losses))
    n = len(meta.get("steps") or []) or 1
    share = meta.get("skipped", 0) / n
    checks.append(health.Check("skipped steps", share, MAX_SKIPPED, share <= MAX_SKIPPED,
                               f"{meta.get('skipped', 0)} of {n} steps skipped (non-finite)"))
    return health.assess(run, checks)


def healths(rows: pd.DataFrame, id_dataset: str, methods) -> list[health.Health]:
    """The :class:`ood_utils.health.Health` of every run of ``methods`` on ``id_dataset`` (from the rows)."""
    sel = rows[(rows["id_dataset"] == id_dataset) & rows["method"].isin(list(methods)) & (rows["dataset"] == "id")]
    return [health.Health.from_json(h) for h in sel.get("health", pd.Series(dtype=object)).dropna()]


# ------------------------------------------------------------------------------------------------ post-hoc

def odin_scores(det, model, dataset, device, batch_size: int = 256) -> np.ndarray:
    """ODIN perturbs the inputs, so it streams the images through the model batch by batch."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return np.concatenate([det.score_inputs(model, b[0].to(device)) for b in loader])


def posthoc_baselines(cfg, setting, n_boot: int = 200, names=tuple(POSTHOC)) -> pd.DataFrame:
    """MSP, ODIN, Energy, ReAct and DICE on the base classifier (the post-hoc rows of Tables 1-3), with
    bootstrap 95% intervals (``auroc_lo`` ...): one model, so the uncertainty is the test sets' own."""
    names = check_methods(names, tuple(POSTHOC))
    base, _ = base_classifier(cfg, setting)
    key = f"{setting[0]}_{setting[1]}_{features.model_fingerprint(base)[:16]}_{'-'.join(names)}_b{n_boot}" \
          f"_n{cfg.ft_eval_max}_s{cfg.seed}{'_smoke' if cfg.smoke else ''}"
    cached = paths.cache_dir("greg", cfg.profile, "posthoc") / f"{key}.csv"
    if cached.exists():   # written atomically below; anything unreadable is rebuilt
        try:
            frame = pd.read_csv(cached)
            if {"method", "dataset", "auroc", "fpr95", "auroc_lo"} <= set(frame.columns) and len(frame):
                return frame
            raise ValueError("columns missing")
        except Exception as err:
            warnings.warn(f"rebuilding post-hoc cache {cached.name}: {err}", RuntimeWarning, stacklevel=2)
    frame = _posthoc_rows(cfg, setting, base, n_boot, names)
    with paths.atomic_path(cached) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def _posthoc_rows(cfg, setting, base, n_boot, names) -> pd.DataFrame:
    """Score every set with each post-hoc detector (fitted on the ID training features) or with ODIN."""
    scfg = for_setting(cfg, setting)
    feats = set_features(base, cfg, setting, "base")
    train_f = features.get_features(base, setting[0], "train", scfg, "base")
    from ..models import head_weights
    W, b = head_weights(base)
    preset = "imagenet" if setting[0].startswith("imagenet") else "cifar"
    groups = data.ood_sets(setting[0])
    rows = []
    for name in names:
        if name == "odin":
            det = get_detector("odin", std=tuple(data.ID_DATASETS[setting[0]].std)).fit()
            dev = cfg.torch_device
            id_max = cfg.ft_eval_max if cfg.smoke else None
            scores = {"id": odin_scores(det, base, data.get_dataset(setting[0], "test", max_n=id_max), dev)}
            for ood in groups:
                ds = data.get_dataset(ood, "test", id_dataset=setting[0], max_n=cfg.ft_eval_max)
                scores[ood] = odin_scores(det, base, ds, dev)
        else:
            det = get_detector(_POSTHOC_DETECTOR[name], preset=preset).fit(
                train_f.feats, train_f.logits, train_f.labels, W, b)
            scores = {k: det.score(v.feats, v.logits) for k, v in feats.items()}
        rows += evaluate_scores(name, scores, setting, cfg.seed, n_boot)
    return pd.DataFrame(rows)
