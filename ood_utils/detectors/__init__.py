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

#: what each preset stands for; a detector without an entry for a preset keeps its defaults under it
PRESET_NOTES = {
    "cifar": "the papers' CIFAR setting (MME Table 1: DenseNet on CIFAR-10/100)",
    "imagenet": "the papers' ImageNet-1K setting (MME Table 2: BiT, ViT)",
    "reference_imagenet": "the MME author's stand-alone script on ImageNet, where it differs from the papers",
    "openood": "the OpenOOD fork of MME, where it differs from the papers",
}
#: the presets of the papers; the others are divergences of public code, named so they can be reproduced
PAPER_PRESETS = ("cifar", "imagenet")

#: preset name -> {detector name: hyperparameters}
PRESETS: dict[str, dict[str, dict]] = {name: {} for name in PRESET_NOTES}
for _entry in DETECTORS.values():
    for _preset, _values in _entry.presets.items():
        if _preset not in PRESETS:
            raise RuntimeError(f"{_entry.name}: preset {_preset!r} is not described in PRESET_NOTES")
        PRESETS[_preset][_entry.name] = dict(_values)


def get_detector(name: str, preset: str | None = None, truncation=None, **hparams) -> Detector:
    """Build a detector by name. ``preset`` (a key of PRESET_NOTES: "cifar", "imagenet", or a public
    code's setting) fills in its hyperparameters; explicit ``hparams`` win over it. ``truncation`` (a name or a ``get_truncation(...)``
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


#: a preset column with nothing to override: the defaults are the paper's value for that benchmark
SAME = "= defaults"


def _fmt(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def describe() -> list[dict]:
    """One row per detector: name, title, kind, description, defaults, the cifar / imagenet preset overrides,
    and the overrides of the presets that reproduce public code (``reference_imagenet``, ``openood``)."""
    rows = []
    for e in DETECTORS.values():
        code = "; ".join(f"{p}: {_fmt(v)}" for p, v in e.presets.items() if p not in PAPER_PRESETS)
        rows.append({"name": e.name, "title": e.title, "kind": e.kind, "description": e.summary,
                     "defaults": _fmt(e.defaults) or "(none)", "cifar": _fmt(e.presets.get("cifar", {})) or SAME,
                     "imagenet": _fmt(e.presets.get("imagenet", {})) or SAME, "public code": code or "-"})
    return rows


def describe_markdown() -> str:
    """``describe()`` as a markdown table (the README's detector table is this, verbatim)."""
    cols = ["name", "title", "kind", "description", "defaults", "cifar", "imagenet", "public code"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in describe():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


#: the README's detector table sits between these two lines (``python -m ood_utils.detectors --readme``)
README_BEGIN = "<!-- detector table: generated by `python -m ood_utils.detectors --readme README.md` -->"
README_END = "<!-- end of detector table -->"


def readme_table(readme_text: str) -> str:
    """The detector table currently in a README's text (between README_BEGIN and README_END)."""
    if README_BEGIN not in readme_text or README_END not in readme_text:
        raise ValueError("the README has no generated detector table (markers not found)")
    return readme_text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()


def with_readme_table(readme_text: str) -> str:
    """The README's text with its detector table replaced by ``describe_markdown()``."""
    head, rest = readme_text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    return f"{head}{README_BEGIN}\n{describe_markdown()}\n{README_END}{tail}"


__all__ = ["DETECTORS", "PRESETS", "PRESET_NOTES", "Detector", "Entry", "NotFittedError", "ODIN", "Truncation",
           "TRUNCATIONS", "describe", "describe_markdown", "get_detector", "get_truncation", "pca_k", "readme_table",
           "vim_dim", "with_readme_table"]
