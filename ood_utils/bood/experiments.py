"""What notebooks 30 and 32 run: settings per profile, the latent space of an ID dataset, outlier features
from BOOD or a baseline, classifiers trained with and without the decoded outliers, their evaluation.

Everything heavy is cached (``fit`` checkpoints, ``features.get_features``), so a re-run takes seconds.
Decoding outlier features into images is the decoders' job (:mod:`ood_utils.bood.decoders`); this module
only asks for images through :func:`decode_outliers`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import data, features, health, metrics, models, profiles
from ..health import Health
from . import baselines, regularize
from .regularize import with_values
from .anchors import Anchors, anchor_source, check_sd_weights, class_anchors
from .boundary import Outliers, boundary_outliers, calibrate_step
from .latent import LatentEncoder, train_latent_encoder

#: the ID datasets each profile reports on (``id_datasets = None``)
DEFAULT_ID_DATASETS = {"mini": ("mnist5k", "mnist6"), "quick": ("cifar100",), "paper": ("cifar100", "imagenet100")}
#: the OOD sets of each paper table, and the table's ID dataset
TABLE_SETS = {"cifar100": {1: ("svhn", "places365", "lsun_c", "isun", "textures")},
              "imagenet100": {2: ("inaturalist", "places", "sun", "textures"), 7: ("ninco", "ssb_hard")}}
#: the sweeps of Figs. 5-6 (percent for r; K = max_steps is Fig. 6 right). ``mini`` keeps the paper's value
#: and two others of each (one below, one above where the paper has one), each over ``n_seeds`` seeds
# mini: one value on the other side of the paper's for alpha, c and r, both sides for beta (the weight of
# eq. 7), so that 3 seeds of every point fit the kit's 15-minute CPU budget; quick keeps both sides of each
SWEEPS = {"mini": {"step_size": (0.015, 0.05), "extra_steps": (0, 2), "boundary_ratio": (5.0, 20.0),
                   "reg_weight": (0.5, 2.5, 5.0), "max_steps": (5, 100)},
          "quick": {"step_size": (0.005, 0.015, 0.05), "extra_steps": (0, 2, 5), "boundary_ratio": (2.5, 5.0, 20.0),
                    "reg_weight": (0.5, 2.5, 5.0), "max_steps": (5, 100)},
          "paper": {"step_size": (0.005, 0.01, 0.015, 0.02, 0.03), "extra_steps": (0, 1, 2, 3, 4, 5),
                    "boundary_ratio": (2.5, 5.0, 10.0, 20.0), "reg_weight": (0.5, 1.0, 2.5, 5.0),
                    "max_steps": (5, 50, 100, 200, 400)}}   # Sec. 4.3: K in {5, 50, 100, 200, 400}
#: the values the paper reports as best (Sec. 4.1 and 4.3.2; beta for CIFAR-100): each sweep's claim is
#: declared before the run as "the paper's value beats each other value tried"
PAPER_BEST = {"step_size": 0.015, "extra_steps": 2, "boundary_ratio": 5.0, "reg_weight": 2.5, "max_steps": 100}


# ------------------------------------------------------------------------------------------ settings

def id_datasets(cfg) -> tuple[str, ...]:
    """The ID datasets to report on: ``cfg.id_datasets`` or the profile's (mini: mnist5k and mnist6)."""
    names = tuple(cfg.id_datasets or DEFAULT_ID_DATASETS[cfg.profile])
    for name in names:
        if name not in data.ID_DATASETS:
            raise profiles.ConfigError(f"unknown ID dataset {name!r} in id_datasets; valid: {', '.join(data.ID_DATASETS)}")
    return names


def paper_values(cfg, dataset: str) -> dict:
    """beta and phi's width: the user's values, else the paper's (beta 1.0 ImageNet-100, 2.5 CIFAR-100 and
    mini; phi "a 3-layer MLP as VOS", 1 -> 512 -> 2, for both; ``phi_hidden = 0``: the Linear(1, 2) of the
    public CIFAR code)."""
    imagenet = dataset.startswith("imagenet")
    return {"reg_weight": float(cfg.reg_weight if cfg.reg_weight is not None else (1.0 if imagenet else 2.5)),
            "phi_hidden": int(cfg.phi_hidden if cfg.phi_hidden is not None else regularize.PAPER_PHI_HIDDEN)}


def evaluated_sets(dataset: str) -> dict[str, str]:
    """OOD sets to score, ``{name: near|far}``: the paper tables' sets for the real benchmarks, every
    paired set in mini."""
    groups = data.ood_sets(dataset)
    if dataset in TABLE_SETS:
        wanted = [s for sets in TABLE_SETS[dataset].values() for s in sets]
        return {s: groups[s] for s in dict.fromkeys(wanted)}
    return groups


def check_setup(cfg) -> tuple[str, ...]:
    """Everything a run needs, checked before any training: parameters, datasets, SD weights."""
    names = id_datasets(cfg)
    if cfg.latent_arch not in models.ARCHITECTURES:
        raise profiles.ConfigError(f"unknown latent_arch {cfg.latent_arch!r}; valid: {', '.join(models.ARCHITECTURES)}")
    if cfg.reg_init not in ("base", "scratch"):
        raise profiles.ConfigError(f"reg_init must be 'base' or 'scratch', got {cfg.reg_init!r}")
    if cfg.outlier_transform not in regularize.OUTLIER_TRANSFORMS:
        raise profiles.ConfigError(f"unknown outlier_transform {cfg.outlier_transform!r}; "
                                   f"valid: {', '.join(regularize.OUTLIER_TRANSFORMS)}")
    for key in ("step_size", "temperature"):
        if not cfg.values[key] > 0:
            raise profiles.ConfigError(f"{key} must be > 0, got {cfg.values[key]}")
    if not 0 < cfg.boundary_ratio <= 100:
        raise profiles.ConfigError(f"boundary_ratio is a percentage in (0, 100], got {cfg.boundary_ratio}")
    for key in ("max_steps", "n_outliers", "n_seeds", "latent_epochs", "reg_epochs"):
        if cfg.values[key] < 1:
            raise profiles.ConfigError(f"{key} must be >= 1, got {cfg.values[key]}")
    if cfg.extra_steps < 0:
        raise profiles.ConfigError(f"extra_steps must be >= 0, got {cfg.extra_steps}")
    for name in names:
        info = data.ID_DATASETS[name]
        if info.source == "real":
            missing = [s for s in (name, *evaluated_sets(name)) if not _available(s)]
            if missing:
                raise data.DatasetNotFound(f"{name} needs {', '.join(missing)}: run "
                                           f"`python -m data_prep --get {' '.join(missing)}`")
    if anchor_source(cfg.profile) == "sd":
        check_sd_weights(cfg.sd_weights)
    _check_crops(cfg, names)
    return names


def _check_crops(cfg, names) -> None:
    """Random crops need SD's saved images at least as large as the ID images (padding included)."""
    if cfg.outlier_transform != "random_crop" or cfg.profile == "mini":    # the mini decoder: the ID size
        return
    from .decoders import sd_settings

    saved = sd_settings(cfg)["save_size"]
    for name in names:
        size = data.ID_DATASETS[name].image_size
        if not regularize.crops_fit(saved, size):
            raise profiles.ConfigError(f"outlier_transform='random_crop' takes {size} px windows of {name}'s outliers, "
                                       f"but SD saves them at {saved} px (sd_size={cfg.sd_size}): raise sd_size "
                                       "(the paper's 512 saves 256 px) or use outlier_transform='resize'")


def _available(name: str) -> bool:
    real = data._real
    return real is not None and real.is_available(name)


# ------------------------------------------------------------------------------------------ latent space

@dataclass
class LatentSpace:
    """One ID dataset's aligned encoder and the normalised-or-not features of its training images."""

    dataset: str
    anchors: Anchors
    encoder: LatentEncoder
    train: features.Features
    test: features.Features
    info: dict

    @property
    def test_accuracy(self) -> float:
        return metrics.accuracy(self.test.logits, self.test.labels)


def get_anchors(cfg, dataset: str) -> Anchors:
    return class_anchors(data.ID_DATASETS[dataset].class_names, anchor_source(cfg.profile), cfg.sd_weights)


def latent_space(cfg, dataset: str, *, temperature: float | None = None, progress: bool = True) -> LatentSpace:
    """Anchors, the trained encoder of eq. (2) and its features (train and test split), all cached."""
    t = float(temperature if temperature is not None else cfg.temperature)
    # the encoder trains with its own batch (DreamOOD's 256), not the OOD classifier's
    dcfg = regularize.smoke_batch(with_values(cfg, id_dataset=dataset, batch_size=cfg.latent_batch_size))
    anchors = get_anchors(cfg, dataset)
    encoder, info = train_latent_encoder(dcfg, dataset, anchors, arch=cfg.latent_arch, temperature=t,
                                         epochs=cfg.latent_epochs, progress=progress)
    tag = f"bood-latent-t{t:g}"
    train = features.get_features(encoder, dataset, "train", dcfg, tag, progress=progress)
    test = features.get_features(encoder, dataset, "test", dcfg, tag, progress=progress)
    return LatentSpace(dataset, anchors, encoder, train, test, info)


# ------------------------------------------------------------------------------------------ outlier features

OUTLIER_METHODS = ("BOOD",) + baselines.METHODS

#: mini's rule for the step length: scale alpha so that, at the paper's alpha, the median correctly classified
#: training feature takes a fifth of the paper's K = 100 sign steps to cross its boundary. On mini's 384-d
#: unit sphere the paper's alpha itself moves 0.29 per step and most features cross in one or two steps, so
#: kappa would rank nothing. quick / paper use the paper's alpha as it is (scale 1).
STEP_RULE = {"reference_K": 100, "median_kappa": 20}
_STEP_SCALES: dict = {}


def step_scale(cfg, space: LatentSpace) -> float:
    """Factor applied to every step size alpha in ``space`` (``STEP_RULE``; 1 outside mini). Cached."""
    if cfg.profile != "mini":
        return 1.0
    key = (space.dataset, regularize.digest(torch.as_tensor(space.train.feats)), float(cfg.temperature))
    if key not in _STEP_SCALES:
        alpha = calibrate_step(space.train.feats, space.train.labels, space.anchors.vectors,
                               target_median=STEP_RULE["median_kappa"], max_steps=STEP_RULE["reference_K"],
                               temperature=cfg.temperature, seed=cfg.seed)
        _STEP_SCALES[key] = alpha / PAPER_BEST["step_size"]
    return _STEP_SCALES[key]


_KAPPAS: dict = {}


def space_kappa(cfg, space: LatentSpace, alpha: float, max_steps: int) -> torch.Tensor:
    """Eq. (3) on the training features of ``space`` with this alpha and K (cached in the process: the
    sweeps over c and r and every figure of notebook 31 reuse it)."""
    from .boundary import boundary_steps

    key = (space.dataset, regularize.digest(torch.as_tensor(space.train.feats)), float(alpha), int(max_steps),
           float(cfg.temperature))
    if key not in _KAPPAS:
        _KAPPAS[key] = boundary_steps(space.train.feats, space.train.labels, space.anchors.vectors, alpha,
                                      max_steps, cfg.temperature)
    return _KAPPAS[key]


def walk_step(cfg, space: LatentSpace, step_size: float | None = None) -> float:
    """The alpha the walks take in ``space``: ``step_size`` (default ``cfg.step_size``, the paper's scale)
    times :func:`step_scale`."""
    return float(cfg.step_size if step_size is None else step_size) * step_scale(cfg, space)


def outlier_features(space: LatentSpace, cfg, method: str = "BOOD", *, seed: int = 0, **overrides) -> Outliers:
    """Outlier features of ``method`` from the training features; ``overrides`` replace step_size,
    extra_steps, max_steps, boundary_ratio (the sweeps). Step sizes are on the paper's scale and go through
    :func:`walk_step` (mini's rule for the latent geometry)."""
    p = {k: overrides.get(k, cfg.values[k]) for k in ("step_size", "extra_steps", "max_steps", "boundary_ratio")}
    z, y, g = space.train.feats, space.train.labels, space.anchors.vectors
    ratio = p["boundary_ratio"]
    if cfg.smoke:      # smoke runs see a handful of images per class: keep at least one feature of each
        ratio = max(ratio, 100.0 / max(1, int(np.bincount(y).min())))
    walk = dict(ratio=ratio, alpha=walk_step(cfg, space, p["step_size"]), max_steps=p["max_steps"],
                temperature=cfg.temperature)
    if method == "BOOD":
        kappa = space_kappa(cfg, space, walk["alpha"], p["max_steps"])
        return boundary_outliers(z, y, g, extra_steps=p["extra_steps"], kappa=kappa, **walk)
    if method == "boundary_only":
        return baselines.boundary_only(z, y, g, **walk)
    if method == "random_then_perturb":
        return baselines.random_then_perturb(z, y, g, extra_steps=p["extra_steps"], seed=seed, **walk)
    if method in ("gaussian_noise", "away_from_centroids"):
        dist = baselines.mean_walk_distance(z, y, g, extra_steps=p["extra_steps"], **walk)
        fn = getattr(baselines, method)
        return fn(z, y, g, dist, seed=seed, **walk) if method == "gaussian_noise" else fn(z, y, g, dist, **walk)
    if method == "dreamood":
        sigma = 0.03 if space.dataset.startswith("imagenet") else 0.07
        k = min(300, max(1, int(np.bincount(y).min()) - 1))
        return baselines.dreamood(z, y, g, ratio=ratio, k=k, sigma=sigma, seed=seed)
    raise ValueError(f"unknown outlier method {method!r}; valid: {', '.join(OUTLIER_METHODS)}")


def repeat_per_class(outliers: Outliers, n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's outlier features cycled to ``n_per_class`` rows (each decoded with its own noise, as
    the paper generates 1000 images per class from a few dozen boundary features)."""
    zs, ys = [], []
    for c in outliers.labels.unique().tolist():
        rows = (outliers.labels == c).nonzero().squeeze(1)
        take = rows[torch.arange(n_per_class) % len(rows)]
        zs.append(outliers.z[take])
        ys.append(outliers.labels[take])
    return torch.cat(zs), torch.cat(ys)


def decode_outliers(cfg, space: LatentSpace, outliers: Outliers, *, seed: int = 0,
                    progress: bool = True) -> torch.Tensor:
    """Outlier images in [0, 1], ``n_outliers`` per class: the mini latent diffusion model or SD v1.4 (at
    the size SD saved them, uint8, when the classifier trains on random crops of them)."""
    from . import decoders

    z, y = repeat_per_class(outliers, cfg.n_outliers)
    return decoders.decode(cfg, space, z, y, seed=seed, progress=progress,
                           keep_size=cfg.outlier_transform == "random_crop")


# ------------------------------------------------------------------------------------------ classifiers

@dataclass
class Run:
    """One trained OOD classifier: energy scores per set (``"id"`` first), ID accuracy, what it saw."""

    method: str
    dataset: str
    seed: int
    scores: dict
    id_accuracy: float
    n_outliers: int
    params: dict
    log: dict = field(default_factory=dict)      # losses per epoch; phi on its own training data
    health: Health | None = None                 # set by assess_health against the Energy run of the seed

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v:g}" for k, v in self.params.items() if k == "value")
        return f"{self.dataset} {self.method}{extra} seed {self.seed}"


_IMAGES: dict = {}     # decoded outliers of this process, keyed by the features' digest


def outlier_images(cfg, space: LatentSpace, outliers: Outliers, progress: bool = True) -> torch.Tensor:
    key = (space.dataset, regularize.digest(outliers.z), cfg.n_outliers, cfg.profile, cfg.smoke,
           cfg.outlier_transform)
    if key not in _IMAGES:
        _IMAGES[key] = decode_outliers(cfg, space, outliers, seed=0, progress=progress)
    return _IMAGES[key]


def run_classifier(cfg, space: LatentSpace, method: str, seed: int, *, outliers: Outliers | None = None,
                   reg_weight: float | None = None, progress: bool = True, **params) -> Run:
    """Train (or read back) and score one classifier. ``method="Energy"``: no outliers, cross-entropy
    only; otherwise ``outliers`` are decoded and the classifier is trained with eq. (7)."""
    dataset = space.dataset
    pv = paper_values(cfg, dataset)
    beta = pv["reg_weight"] if reg_weight is None else float(reg_weight)
    images = None if outliers is None else outlier_images(cfg, space, outliers, progress)
    name = "".join(ch if ch.isalnum() else "-" for ch in method.lower())
    model = regularize.train_classifier(cfg, dataset, images, seed=seed, beta=beta, phi_hidden=pv["phi_hidden"],
                                        name=name, progress=progress)
    # one feature cache per trained model: its name holds what makes it differ
    tag = f"bood-{name}-s{seed}-b{beta:g}-phi{pv['phi_hidden']}" + ("" if images is None else f"-o{regularize.digest(images)}")
    scores, acc = regularize.energy_scores(model, cfg, dataset, evaluated_sets(dataset), tag, progress)
    return Run(method, dataset, seed, scores, acc, 0 if images is None else len(images),
               {"reg_weight": beta, **params}, log=dict(model.log))


def assess_health(run: Run, base: Run | None) -> Health:
    """The health of one trained classifier (:mod:`ood_utils.health`): the loss went down; with outliers,
    phi separates the run's own training ID images from its outliers; against ``base`` (the Energy run of
    the same seed: the same recipe without the regulariser) the ID accuracy is kept and the energy still
    varies on ID data. Stored on ``run.health`` and returned."""
    losses = run.log.get("losses")
    checks = []
    if losses:     # with the regulariser the loss starts at CE + beta log 2 and must fall; a plain fine-tune
        # of a converged classifier may stay flat: it must only not diverge
        checks.append(health.loss_check(losses) if "phi_id" in run.log else _not_diverged(losses))
    if "phi_id" in run.log:
        checks.append(health.separation_check(run.log["phi_id"], run.log["phi_ood"], name="phi's separation"))
    if base is not None and base is not run:
        checks += [health.accuracy_check(run.id_accuracy, base.id_accuracy),
                   health.spread_check(run.scores["id"], base.scores["id"])]
    if not checks:
        raise ValueError(f"no training record for {run.label}: nothing to check")
    run.health = health.assess(run.label, checks)
    return run.health


DIVERGENCE_FACTOR = 1.5    # a plain fine-tune "diverged" when its last epoch's loss exceeds 1.5x its first


def _not_diverged(losses) -> health.Check:
    arr = np.asarray(losses, dtype=float)
    limit = DIVERGENCE_FACTOR * float(arr[0])
    passed = bool(np.all(np.isfinite(arr))) and float(arr[-1]) <= limit
    return health.Check("training loss", float(arr[-1]), limit, passed,
                        f"training loss {arr[0]:.3g} -> {arr[-1]:.3g}" + ("" if passed else " (diverged)"))


def assess_all(runs, energy_runs) -> list[Health]:
    """:func:`assess_health` of every run against the Energy run of its dataset and seed."""
    base = {(r.dataset, r.seed): r for r in energy_runs if r.method == "Energy"}
    return [assess_health(r, base.get((r.dataset, r.seed))) for r in runs]


def run_rows(run: Run) -> list[dict]:
    """Tidy rows of one run: per OOD set and the summaries (``metrics.evaluate_sets``), plus ID accuracy."""
    groups = evaluated_sets(run.dataset)
    rows = []
    for table, sets in (TABLE_SETS.get(run.dataset) or {None: tuple(groups)}).items():
        sub = {s: groups[s] for s in sets}
        rows += [{**r, "seed": run.seed} for r in metrics.evaluate_sets(
            run.method, {"id": run.scores["id"], **{s: run.scores[s] for s in sub}}, sub,
            id_dataset=run.dataset, table=table, **run.params)]
    main_table = next(iter(TABLE_SETS.get(run.dataset, {None: ()})))
    rows.append({"method": run.method, "dataset": "id", "group": "id", "id_accuracy": run.id_accuracy,
                 "id_dataset": run.dataset, "seed": run.seed, "table": main_table, **run.params})
    return rows


def seeds(cfg) -> range:
    return range(cfg.seed, cfg.seed + cfg.n_seeds)


def main_comparison(cfg, space: LatentSpace, progress: bool = True) -> list[Run]:
    """Tables 1-2 at this profile's scale: the same classifier trained without outliers ("Energy") and
    with BOOD's decoded outliers, over ``n_seeds`` seeds; each run's health assessed."""
    outliers = outlier_features(space, cfg, "BOOD")
    runs = []
    for seed in seeds(cfg):
        runs.append(run_classifier(cfg, space, "Energy", seed, progress=progress))
        runs.append(run_classifier(cfg, space, "BOOD", seed, outliers=outliers, progress=progress))
    assess_all(runs, runs)
    return runs


ABLATIONS = {"boundary_only": "boundary identification only", "random_then_perturb": "feature perturbation only",
             "gaussian_noise": "Gaussian noise", "away_from_centroids": "away from class centroids",
             "dreamood": "DreamOOD"}


def wants_sweeps(cfg) -> bool:
    """Ablations and sweeps requested, except in the smoke rehearsal of quick / paper: there every one of
    them would train another ResNet-34 on a CPU, through exactly the code mini's smoke run exercises."""
    return bool(cfg.sweeps) and not (cfg.smoke and cfg.profile != "mini")


def ablations(cfg, space: LatentSpace, main_runs: list[Run], progress: bool = True) -> list[Run]:
    """Tables 3 and 6 and the DreamOOD sampler over the seeds of ``main_runs``: only the outlier features
    differ. Each generator draws its features once (``cfg.seed``: one decoding per generator, as BOOD's own
    outliers are decoded once); the seeds vary the training, as in the main comparison. Health against the
    Energy run of each seed."""
    runs = []
    for method, label in ABLATIONS.items():
        outliers = outlier_features(space, cfg, method, seed=cfg.seed)
        runs += [run_classifier(cfg, space, label, seed, outliers=outliers, progress=progress) for seed in seeds(cfg)]
    assess_all(runs, main_runs)
    return runs


def sweep_grids(cfg) -> dict[str, tuple]:
    """The values of each sweep; smoke: the paper's value and one other, of two sweeps (every code path,
    few trainings)."""
    grids = SWEEPS[cfg.profile]
    if cfg.smoke:
        return {k: (next(v for v in grids[k] if v != PAPER_BEST[k]), PAPER_BEST[k]) for k in ("extra_steps", "reg_weight")}
    return dict(grids)


def sweeps(cfg, space: LatentSpace, main_runs: list[Run], progress: bool = True) -> dict[str, list[Run]]:
    """Figs. 5-6: one parameter varied at a time around the paper's values, over the seeds of the main
    comparison. The run at the paper's value of every sweep is the main comparison's BOOD run (the same
    outliers and beta: the same cached classifier)."""
    out = {}
    for key, values in sweep_grids(cfg).items():
        out[key] = []
        for v in values:
            if key == "reg_weight":
                outliers, extra = outlier_features(space, cfg, "BOOD"), {"reg_weight": v}
            else:
                outliers, extra = outlier_features(space, cfg, "BOOD", **{key: v}), {}
            for seed in seeds(cfg):
                run = run_classifier(cfg, space, "BOOD", seed, outliers=outliers, progress=progress, sweep=key,
                                     value=v, n_features=len(outliers), **extra)
                out[key].append(run)
        assess_all(out[key], main_runs)
    return out
