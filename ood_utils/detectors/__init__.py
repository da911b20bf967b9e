"""Post-hoc OOD detectors with one interface (higher score = more in-distribution).

    from ood_utils.detectors import get_detector, DETECTORS, PRESETS, describe
    det = get_detector("vim")                          # reference defaults
    det = get_detector("dice", preset="imagenet")      # the paper's ImageNet setting
    det = get_detector("vim", truncation="vra_clip")   # any scoring function on truncated features
    det.fit(train_feats, train_logits, train_labels, W, b)
    scores = det.score(test_feats, test_logits)        # 1-D float64, finite

Kinds: ``score`` (scoring functions, composable with a truncation), ``truncation`` (a truncation paired with
the Energy score, as in its paper), ``ensemble`` (NME+, CO+, MME) and ``input`` (ODIN: needs the model,
``score_inputs(model, x)``). ``describe()`` lists every detector with its defaults and presets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .base import Detector, NotFittedError
from .ensemble import MME, COPlus, NMEPlus, NMEPlusCO
from .input_space import ODIN
from .scores import SCORES, Energy, pca_k, vim_dim
from .truncation import TRUNCATIONS, Truncation, get_truncation


@dataclass(frozen=True)
class Entry:
    """One row of the registry: how to build a detector and what it is."""

    name: str
    title: str
    kind: str
    summary: str
    defaults: dict
    presets: dict = field(default_factory=dict)
    build: Callable[..., Detector] | None = None


def _class_entry(cls) -> Entry:
    return Entry(cls.name, cls.title, cls.kind, cls.summary, dict(cls.defaults), dict(cls.presets), cls)


def _truncation_entry(tcls: type[Truncation]) -> Entry:
    def build(**hparams) -> Detector:
        det = Energy(truncation=tcls(**hparams))
        det.name = tcls.name  # so messages name the detector the user asked for
        return det

    return Entry(tcls.name, tcls.title, "truncation", f"{tcls.summary}; Energy score",
                 dict(tcls.defaults), dict(tcls.presets), build)


DETECTORS: dict[str, Entry] = {}
for _cls in SCORES:
    DETECTORS[_cls.name] = _class_entry(_cls)
for _tcls in TRUNCATIONS.values():
    DETECTORS[_tcls.name] = _truncation_entry(_tcls)
for _cls in (NMEPlus, COPlus, NMEPlusCO, MME, ODIN):
    DETECTORS[_cls.name] = _class_entry(_cls)

#: preset name -> {detector name: hyperparameters}; a detector without an entry keeps its defaults
PRESETS: dict[str, dict[str, dict]] = {}
for _entry in DETECTORS.values():
    for _preset, _values in _entry.presets.items():
        PRESETS.setdefault(_preset, {})[_entry.name] = dict(_values)
for _preset in ("cifar", "imagenet"):
    PRESETS.setdefault(_preset, {})


def get_detector(name: str, preset: str | None = None, truncation=None, **hparams) -> Detector:
    """Build a detector by name. ``preset`` ("cifar", "imagenet", "reference_imagenet") fills in the
    paper's setting; explicit ``hparams`` win over it. ``truncation`` (a name or a ``get_truncation(...)``
    object) is accepted by scoring functions only. Unknown names and hyperparameters raise ValueError."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    entry = DETECTORS[name]
    values = {**(entry.presets.get(preset, {}) if preset else {}), **hparams}
    if truncation is not None:
        if entry.kind != "score":
            raise ValueError(f"detector {name!r} ({entry.kind}) takes no truncation=; "
                             f"scoring functions that do: {', '.join(n for n, e in DETECTORS.items() if e.kind == 'score')}")
        if isinstance(truncation, str):
            truncation = get_truncation(truncation, preset=preset)
        return entry.build(truncation=truncation, **values)
    return entry.build(**values)


def _fmt(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "-"


def describe() -> list[dict]:
    """One row per detector: name, title, kind, description, defaults, cifar / imagenet preset overrides."""
    return [
        {"name": e.name, "title": e.title, "kind": e.kind, "description": e.summary,
         "defaults": _fmt(e.defaults), "cifar": _fmt(e.presets.get("cifar", {})),
         "imagenet": _fmt(e.presets.get("imagenet", {}))}
        for e in DETECTORS.values()
    ]


def describe_markdown() -> str:
    """``describe()`` as a markdown table (for the README)."""
    cols = ["name", "title", "kind", "description", "defaults", "cifar", "imagenet"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in describe():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines)


__all__ = ["DETECTORS", "PRESETS", "Detector", "Entry", "NotFittedError", "ODIN", "Truncation",
           "TRUNCATIONS", "describe", "describe_markdown", "get_detector", "get_truncation", "pca_k", "vim_dim"]
