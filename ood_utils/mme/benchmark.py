"""MME's benchmark: the paper's names and settings, the configuration, and scoring detectors on every set.

:func:`load_benchmark` wraps ``features.load_benchmark`` (classifier, head, cached features of ID train /
ID test / every OOD set) in a :class:`Benchmark` that also knows the detector preset and which OOD sets
the paper's tables average over. :func:`detector_scores` scores one detector (optionally on truncated
features, Hypothesis 1) on every set; :meth:`Benchmark.evaluate` turns scores into tidy rows with
``metrics.evaluate_sets``.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd

from .. import features, metrics
from ..detectors import DETECTORS, PAPER_PRESETS, PRESETS, get_detector, get_truncation
from .bootstrap import with_bounds

PAPER = "MME"

#: Table 4: the six scoring functions whose pairwise covariances the paper reports
TABLE4_SCORES = ("mls", "energy", "vim", "gen", "nnguide", "fdbd")
#: Fig. 3: eight scoring functions (NME+ included: the paper uses it to argue it needs no truncation) ...
FIG3_SCORES = ("energy", "gen", "mahalanobis", "vim", "pca", "nnguide", "fdbd", "nme")
#: ... times these feature truncations (None = the raw features, "Base" in the paper)
FIG3_TRUNCATIONS = (None, "react", "dice", "ash", "scale", "vra_clip")
#: Table 1 (CIFAR averages) and Table 2 (ImageNet-1K, the 16 baselines and MME)
TABLE1_METHODS = ("msp", "mls", "vim", "ash", "gen", "scale", "vra", "fdbd", "mme")
TABLE2_METHODS = ("msp", "mls", "energy", "react", "mahalanobis", "kl", "vim", "dice", "ash", "she", "gen",
                  "pca", "nnguide", "scale", "vra", "fdbd", "mme")
#: Table 6: scores the paper tried adding to MME
TABLE6_EXTRAS = ("gen", "nnguide", "she")
#: Fig. 5 grids
LAMBDAS = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
TEMPERATURES = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

#: detector name -> name printed in the paper's tables
PAPER_NAMES = {
    "msp": "MSP", "mls": "MLS", "energy": "Energy", "react": "ReAct", "mahalanobis": "Maha", "kl": "KL",
    "vim": "ViM", "dice": "DICE", "ash": "ASH-S", "she": "SHE", "gen": "GEN", "pca": "PCA",
    "nnguide": "NNGuide", "scale": "SCALE", "vra": "VRA", "vra_clip": "VRA", "fdbd": "fDBD", "knn": "KNN",
    "nme": "NME+", "co": "CO+", "nme_co": "NME+ + CO+", "mme": "MME",
}
#: Fig. 1 colour code: which information source a detector uses
FAMILIES = {
    "msp": "probability", "kl": "probability", "gen": "probability",
    "mls": "logit", "energy": "logit", "react": "logit", "dice": "logit", "ash": "logit", "scale": "logit",
    "vra": "logit",
    "mahalanobis": "feature", "knn": "feature", "she": "feature", "nme": "feature",
    "vim": "multiple", "pca": "multiple", "nnguide": "multiple", "fdbd": "multiple", "nme_co": "multiple",
    "mme": "multiple",
}
#: the paper's dataset names as the kit spells them (real sets already use these names)
DATASET_NAMES = {"dtd": "textures"}
#: the paper's networks per ID dataset, the first being the default: DenseNet-BC-100 on CIFAR (Table 1),
#: ViT-B/16 and BiT-S-R101x1 on ImageNet-1K (Table 2)
PAPER_ARCHS = {"cifar10": ("densenet100",), "cifar100": ("densenet100",),
               "imagenet1k": ("vit_b16", "bit_s_r101x1")}
#: the OOD sets the paper's tables average over (Tables 2-6: four sets); other ID datasets: all of them
TABLE_SETS = {"imagenet1k": ("inaturalist", "sun", "places", "textures")}
#: Fig. 1 (right) on ImageNet-1K: near-OOD NINCO and SSB-hard, far-OOD iNaturalist, Textures, OpenImage-O
FIG1_GROUPS = {"imagenet1k": {"ninco": "near", "ssb_hard": "near", "inaturalist": "far", "textures": "far",
                              "openimage_o": "far"}}
#: bootstrap resamples behind every 95% interval (fewer in smoke mode: the intervals are then only shown)
N_BOOT, N_BOOT_SMOKE = 200, 20


@dataclass
class Benchmark(features.Benchmark):
    """``features.Benchmark`` plus what MME's tables need: the detectors' ``preset``, the paper's averaging
    sets, and every score :meth:`evaluate` saw (``scores``, read with :meth:`scores_of`): verdicts bootstrap
    paired differences from them and widgets redraw from them without scoring again."""

    preset: str = "cifar"
    scores: dict = field(default_factory=dict, repr=False)

    @classmethod
    def wrap(cls, bench: features.Benchmark, preset: str) -> "Benchmark":
        return cls(**{f.name: getattr(bench, f.name) for f in dataclasses.fields(bench)}, preset=preset)

    def average_sets(self) -> list[str]:
        """The OOD sets a table's "average" is taken over: the paper's four on ImageNet-1K (NINCO, SSB-hard
        and OpenImage-O only feed Fig. 1), every set otherwise."""
        chosen = [n for n in TABLE_SETS.get(self.id_dataset, ()) if n in self.ood]
        return chosen or list(self.ood)

    def fig1_groups(self) -> dict[str, str]:
        """near / far membership for Fig. 1: the paper's split on ImageNet-1K, the registry's otherwise."""
        chosen = {n: g for n, g in FIG1_GROUPS.get(self.id_dataset, {}).items() if n in self.ood}
        return chosen or dict(self.groups)

    def evaluate(self, method: str, scores: dict[str, np.ndarray], *, n_boot: int = 0,
                 summaries=("average",), **extra) -> list[dict]:
        """``metrics.evaluate_sets`` on every OOD set, "average" over :meth:`average_sets` (with
        ``summaries`` also "near" / "far"); ``n_boot`` > 0 adds 95% bootstrap bounds."""
        self.scores[_score_key(method, extra)] = scores
        rows = metrics.evaluate_sets(method, scores, self.groups, average_over=self.average_sets(),
                                     summaries=summaries, **extra)
        return with_bounds(rows, scores, self.average_sets(), n_boot) if n_boot else rows

    def scores_of(self, method: str, **extra) -> dict[str, np.ndarray]:
        """The scores ``evaluate(method, ..., **extra)`` was given (``{"id": ..., set: ...}``)."""
        key = _score_key(method, extra)
        if key not in self.scores:
            known = ", ".join(str(k) for k in list(self.scores)[:12])
            raise KeyError(f"no scores evaluated as {key}; known (first 12): {known}")
        return self.scores[key]


def _score_key(method: str, extra: dict) -> tuple:
    return (method, *sorted((k, v) for k, v in extra.items()))


def n_boot_for(cfg, n_boot: int | None = None) -> int:
    """Bootstrap resamples: ``n_boot`` when given, else :data:`N_BOOT` (:data:`N_BOOT_SMOKE` in smoke mode)."""
    if n_boot is not None:
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
            raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
        return n_boot
    return N_BOOT_SMOKE if cfg.smoke else N_BOOT


def default_preset(cfg) -> str:
    """The detectors' hyperparameters: the explicit ``preset`` parameter, else the paper's setting for the
    ID dataset ("imagenet" for ImageNet, "cifar" for everything smaller, ``mini`` included)."""
    if "preset" in getattr(cfg, "overridden", ()):
        return cfg.preset
    return "imagenet" if str(cfg.id_dataset).startswith("imagenet") else "cifar"


def check_preset(preset: str | None) -> str | None:
    """``None`` or a detector preset: the papers' ``cifar`` / ``imagenet`` or a public-code variant
    (``reference_imagenet``, ``openood``); anything else is an error that lists them."""
    from ..profiles import ConfigError

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)} "
                          f"({', '.join(p for p in PRESETS if p not in PAPER_PRESETS)} reproduce public code)")
    return preset


def resolve_config(profile: str = "mini", **params):
    """``profiles.resolve(profile, track="mme", **params)`` with the paper's network where none is given.

    ``mini`` keeps its small CNN (on ``mnist5k`` or ``mnist6``). On CIFAR-10/100 (``quick``, ``paper``) the
    network is DenseNet-BC-100, the one of Table 1. On ImageNet-1K it is ViT-B/16 unless
    ``arch="bit_s_r101x1"``; the kit does not train ImageNet classifiers, so the pretrained weights must be
    given as ``checkpoint``. ``preset`` may name any detector preset, public-code ones included.
    ``None`` = default."""
    from ..profiles import ConfigError, resolve

    preset = check_preset(params.pop("preset", None))
    id_dataset = resolve(profile, track="mme", seed_now=False, id_dataset=params.get("id_dataset")).id_dataset
    if params.get("arch") is None and id_dataset in PAPER_ARCHS:
        params = {**params, "arch": PAPER_ARCHS[id_dataset][0]}
    cfg = resolve(profile, track="mme", **params)
    if preset is not None:  # validated above against every preset, public-code ones included
        cfg = dataclasses.replace(cfg, values=MappingProxyType({**cfg.values, "preset": preset}),
                                  overridden=cfg.overridden | {"preset"})
    if cfg.id_dataset == "imagenet1k" and not cfg.checkpoint:
        raise ConfigError(
            "the ImageNet-1K path scores a pretrained classifier, which the kit does not train: pass its "
            f"weights with -p checkpoint PATH (a timm state dict of {cfg.arch}; the paper uses "
            f"{' and '.join(PAPER_ARCHS['imagenet1k'])}), e.g. python -m ood_utils.run --profile {cfg.profile} "
            "--only mme -p id_dataset imagenet1k -p arch vit_b16 -p checkpoint /path/to/vit_b16.pth")
    return cfg


def check_data(cfg, names=None) -> None:
    """``features.require_data`` for the ID dataset and ``names`` (default: its OOD sets)."""
    features.require_data(cfg, list(features.benchmark_sets(cfg) if names is None else names))


def load_benchmark(cfg, tag: str = "base", progress: bool = True) -> Benchmark:
    """The base classifier's cached features on the ID dataset and every OOD set (``cfg.ood_sets`` narrows
    them), with the detector preset of :func:`default_preset`."""
    return Benchmark.wrap(features.load_benchmark(cfg, tag, progress=progress), default_preset(cfg))


def _progress(items, desc: str, enabled: bool = True):
    """A progress bar over ``items`` (it vanishes once done): ImageNet-size features take minutes per loop."""
    from ..progress import tqdm

    return tqdm(list(items), desc=desc, disable=not enabled, leave=False)


def fit_detector(bench: Benchmark, name: str, preset: str | None = None, truncation=None, **hparams):
    """``get_detector(name, preset, truncation, **hparams)`` fitted on the benchmark's ID training features."""
    preset = preset or bench.preset
    hparams = small_data_hparams(name, preset, len(bench.train), hparams)
    det = get_detector(name, preset=preset, truncation=truncation, **hparams)
    return det.fit(bench.train.feats, bench.train.logits, bench.train.labels, bench.W, bench.b)


def small_data_hparams(name: str, preset: str, n_train: int, hparams: dict) -> dict:
    """Neighbour detectors (NNGuide, KNN) need k <= their bank of training features. On a training set too
    small for that (smoke tests on stand-in data: a hundred images) k shrinks to the bank, with a warning,
    rather than the run failing; at any real size nothing changes."""
    h = {**DETECTORS[name].defaults, **PRESETS.get(preset, {}).get(name, {}), **hparams}
    if not (isinstance(h.get("k"), int) and "bank_fraction" in h):
        return hparams
    bank = n_train if h["bank_fraction"] >= 1 else max(1, int(round(n_train * h["bank_fraction"])))
    if h["k"] <= bank:
        return hparams
    warnings.warn(f"{name}: k={h['k']} exceeds the bank of {bank} training features ({n_train} x "
                  f"bank_fraction {h['bank_fraction']}); using k={bank} on this small training set", RuntimeWarning)
    return {**hparams, "k": bank}


def score_sets(bench: Benchmark, score_fn) -> dict[str, np.ndarray]:
    """``{"id": score_fn(test), ood_name: score_fn(ood), ...}`` for ``score_fn(feats, logits)``."""
    out = {"id": np.asarray(score_fn(bench.test.feats, bench.test.logits), dtype=np.float64)}
    for name, f in bench.ood.items():
        out[name] = np.asarray(score_fn(f.feats, f.logits), dtype=np.float64)
    return out


#: the two ways to score S(g(z)) in Hypothesis 1: S's statistics (class means, principal subspace, alpha,
#: ...) from the raw training features, as MME's own factors are fitted, or from the truncated ones g(z_train)
FIT_ON = ("raw", "truncated")


def detector_scores(bench: Benchmark, name: str, truncation: str | None = None, preset: str | None = None,
                    fit_on: str = "raw", fitted=None, **hparams) -> dict[str, np.ndarray]:
    """Scores of one detector on every set, optionally on truncated features g(z) (Hypothesis 1).

    ``fit_on="raw"``: the detector is fitted on the raw training features and scores g(z) with the logits
    W' g(z) + b, which is what ``get_detector(name, truncation=g)`` does and how MME's reference code feeds
    ViM, PCA and fDBD (``fitted``: that raw-fitted detector, to reuse it across truncations).
    ``fit_on="truncated"``: it is fitted on g(z_train) with the head (W', b) of the truncation (DICE's sparse
    W'), so its statistics live where its inputs do."""
    preset = preset or bench.preset
    if fit_on not in FIT_ON:
        raise ValueError(f"unknown fit_on {fit_on!r}; valid: {', '.join(FIT_ON)}")
    if truncation is None:
        det = fitted or fit_detector(bench, name, preset, **hparams)
        return score_sets(bench, det.score)
    trunc = get_truncation(truncation, preset=preset).fit(bench.train.feats, bench.W, bench.b)
    if fit_on == "raw":
        det = fitted or fit_detector(bench, name, preset, **hparams)
    else:
        g_train = trunc.transform(bench.train.feats)
        W, b = trunc.head()
        det = get_detector(name, preset=preset, **small_data_hparams(name, preset, len(bench.train), hparams)).fit(
            g_train, trunc.logits(bench.train.feats, g_train), bench.train.labels, W, b)

    def score(feats, logits):
        gz = trunc.transform(feats)
        return det.score(gz, trunc.logits(feats, gz))

    return score_sets(bench, score)


def evaluate_detectors(bench: Benchmark, names=TABLE2_METHODS, preset: str | None = None, n_boot: int = 0,
                       progress: bool = True) -> pd.DataFrame:
    """Tables 1-2: AUROC and FPR95 of each detector (registry defaults + ``preset``) per OOD set, averaged,
    and on the near / far means; ``n_boot`` > 0 adds 95% bootstrap bounds."""
    rows = []
    for name in _progress(names, "detectors", progress):
        rows += bench.evaluate(name, detector_scores(bench, name, preset=preset), n_boot=n_boot,
                               summaries=("average", "near", "far"))
    return pd.DataFrame(rows)


def per_set(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of single OOD sets (no "average" / "near" / "far" summary)."""
    return rows[~rows["dataset"].isin(metrics.SUMMARIES)]


def average_table(rows: pd.DataFrame, index: str = "method", scope: str = "average") -> pd.DataFrame:
    """One line per ``index`` value: the AUROC / FPR95 columns (and their bounds where present) of one
    summary (``scope``: "average", "near" or "far"), in the order the rows came."""
    cols = [c for c in rows.columns if c.startswith(("auroc", "fpr95"))]
    avg = rows[rows["dataset"] == scope].set_index(index)[cols]
    return avg.loc[[m for m in dict.fromkeys(rows[index]) if m in avg.index]]


def wide_table(rows: pd.DataFrame, metric: str = "auroc", index: str = "method") -> pd.DataFrame:
    """``index`` x dataset matrix of one metric (the shape of the paper's per-dataset tables)."""
    order = list(dict.fromkeys(rows["dataset"]))
    wide = rows.pivot_table(index=index, columns="dataset", values=metric, sort=False)
    return wide[order].loc[list(dict.fromkeys(rows[index]))]


def fitted_truncation(bench: Benchmark, name: str, preset: str | None = None, **hparams):
    """A feature truncation fitted on the ID training features (and the head, for DICE)."""
    return get_truncation(name, preset=preset, **hparams).fit(bench.train.feats, bench.W, bench.b)
