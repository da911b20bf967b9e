"""MME's recipe cards (Rakotoarivony, BMVC 2025): one per detector preset. MME is post-hoc, so a card is the
data, the network and every hyperparameter of the ensemble and of the detectors it is compared with.

Sources: the paper's tables and the public code (the author's stand-alone repository lrakotoarivony/mme, a
fork of haoqiwang/vim, and an OpenOOD fork) as summarised in the kit's reference notes. The ``cifar`` and
``imagenet`` presets are the paper's settings; ``reference_imagenet`` and ``openood`` reproduce the public
code where it differs from the paper.
"""
from __future__ import annotations

from .. import data
from .card import METRICS, Card, Departure, Field
from .card import metrics_definition as _metrics

PAPER = "MME (BMVC 2025)"
NOTES = "MME public code (lrakotoarivony/mme)"
REF = "reference detector code (as in MME's comparison)"
CIFAR_OOD = ("textures", "svhn", "places365", "lsun_c", "lsun_r", "isun")
IMAGENET_OOD = ("inaturalist", "sun", "places", "textures", "ninco", "ssb_hard", "openimage_o")
DENSENET_D = 342                 # DenseNet-BC-100's penultimate width


def _context(**params):
    def context(profile: str):
        from .. import mme

        cfg = mme.resolve_config(profile, seed_now=False, **params)
        return {"cfg": cfg, "preset": params.get("preset") or mme.default_preset(cfg)}
    return context


def _hp(detector: str, key: str):
    """A detector hyperparameter as ``get_detector(detector, preset=<the card's preset>)`` builds it (a
    truncation paired with the Energy score keeps its own in ``.truncation``)."""
    def read(ctx):
        from ..detectors import get_detector

        det = get_detector(detector, preset=ctx["preset"])
        if key in det.hparams:
            return det.hparams[key]
        return det.truncation.hparams[key]
    return read


def _width(fn: str, d: int):
    def read(ctx):
        from ..detectors import scores

        value = _hp("mme", "k" if fn == "pca_k" else "dim")(ctx)
        return getattr(scores, fn)(d) if value == "auto" else int(value)
    return read


def _cfg(key: str):
    return lambda ctx: ctx["cfg"].values[key]


_ensemble = (
    Field("mme.scale_percentile", 90.0, f"{NOTES} (p = 90 inside MME)", _hp("mme", "scale_percentile")),
    Field("mme.vra_quantiles", (0.01, 0.99), f"{NOTES} (two-sided clip to scalar training quantiles)",
          lambda ctx: (_hp("mme", "vra_lower")(ctx), _hp("mme", "vra_upper")(ctx))),
    Field("mme.co_weight", 2.0, "MME Sec. 3 (CO+ lambda = 2); OpenOOD fork", _hp("mme", "co_weight")),
    Field("scale.percentile", 85.0, f"{REF} (SCALE stand-alone baseline)", _hp("scale", "percentile")),
    Field("react.percentile", 90.0, f"{REF} (90th percentile of ID activations)", _hp("react", "percentile")),
    Field("odin", {"temperature": 1000.0, "eps": 0.0014}, REF,
          lambda ctx: {k: _hp("odin", k)(ctx) for k in ("temperature", "eps")}),
    Field("gen", {"gamma": 0.1, "M": 100}, REF, lambda ctx: {k: _hp("gen", k)(ctx) for k in ("gamma", "M")}),
    Field("nnguide.k", 10, f"{REF} (original NNGuide; OpenOOD uses 100)", _hp("nnguide", "k")),
    Field("metrics", METRICS, "MME Sec. 4 (FPR95 with ID positive; OpenOOD v1.5 reports the mirror)",
          lambda ctx: _metrics(ctx)),
    Field("log_mme", "sum of logs (no float32 overflow)", "the kit's rule: the code takes exp in float32, "
          "overflowing past ~88.7 and tying those samples", None),
)

CIFAR = Card("mme_table1", PAPER, "Table 1 (CIFAR-10/100, DenseNet) and the CIFAR figures", ("20", "21"),
             _context(), (
    Field("id_dataset", "cifar10", "MME Table 1 (CIFAR-10; -p id_dataset cifar100 for CIFAR-100)",
          _cfg("id_dataset")),
    Field("arch", "densenet100", "MME Table 1 (DenseNet-BC-100)", _cfg("arch")),
    Field("ood_sets", CIFAR_OOD, "MME Table 1", lambda ctx: tuple(data.ood_sets(ctx["cfg"].id_dataset))),
    Field("preset", "cifar", "MME Table 1", lambda ctx: ctx["preset"]),
    Field("mme.temperature", 0.1, f"MME (NME+ T = 0.1 on CIFAR); {NOTES}", _hp("mme", "temperature")),
    Field("mme.pca_k", 256, f"{NOTES} (k = 256 principal directions; DenseNet's D = {DENSENET_D})",
          _width("pca_k", DENSENET_D)),
    Field("mme.vim_dim", DENSENET_D // 2, f"{NOTES} (ViM's DIM: D/2 below 768 dims)", _width("vim_dim", DENSENET_D)),
    Field("knn.k", 50, f"{REF} (CIFAR)", _hp("knn", "k")),
    Field("dice.p", 90.0, f"{REF} (CIFAR)", _hp("dice", "p")),
    Field("ash.percentile", 95.0, f"{REF} (ASH-S, CIFAR)", _hp("ash", "percentile")),
    *_ensemble))

IMAGENET = Card("mme_table2", PAPER, "Table 2 (ImageNet-1K, BiT and ViT)", ("20", "21"),
                _context(id_dataset="imagenet1k", checkpoint="<weights>"), (
    Field("id_dataset", "imagenet1k", "MME Table 2", _cfg("id_dataset")),
    Field("arch", "vit_b16", "MME Table 2 (ViT-B/16; BiT-S-R101x1 with -p arch)", _cfg("arch")),
    Field("ood_sets", IMAGENET_OOD, "MME Table 2", lambda ctx: tuple(data.ood_sets(ctx["cfg"].id_dataset))),
    Field("preset", "imagenet", "MME Table 2", lambda ctx: ctx["preset"]),
    Field("mme.temperature", 0.5, f"MME (NME+ T = 0.5 on ImageNet); {NOTES}", _hp("mme", "temperature")),
    Field("mme.pca_k", 256, NOTES, _width("pca_k", 768)),
    Field("mme.vim_dim", 512, f"{NOTES} (ViT-B/16: D = 768)", _width("vim_dim", 768)),
    Field("knn.k", 1000, f"{REF} (ImageNet)", _hp("knn", "k")),
    Field("dice.p", 70.0, f"{REF} (ImageNet)", _hp("dice", "p")),
    Field("ash.percentile", 90.0, f"{REF} (ASH-S, ImageNet)", _hp("ash", "percentile")),
    *_ensemble), selector={"id_dataset": "imagenet1k"}, profiles=("paper",))

REFERENCE = Card("mme_reference_imagenet", PAPER, "the stand-alone code's ImageNet run", ("20", "21"),
                 _context(id_dataset="imagenet1k", checkpoint="<weights>", preset="reference_imagenet"), (
    Field("preset", "reference_imagenet", NOTES, lambda ctx: ctx["preset"]),
    Field("mme.co_weight", 0.5, f"{NOTES} (lambda = 0.5 on ImageNet: penalises agreement, contrary to the "
          "paper)", _hp("mme", "co_weight")),
    Field("mme.temperature", 0.5, NOTES, _hp("mme", "temperature")),
    Field("react.percentile", 99.0, f"{NOTES} (ViM-style code: the 0.99 training quantile)",
          _hp("react", "percentile")),
), selector={"preset": "reference_imagenet"}, profiles=("paper",))

OPENOOD = Card("mme_openood", PAPER, "the OpenOOD fork's setting", ("20", "21"), _context(preset="openood"), (
    Field("preset", "openood", "MME OpenOOD fork", lambda ctx: ctx["preset"]),
    Field("mme.scale_percentile", 85.0, "MME OpenOOD fork (SCALE p = 85 inside MME)", _hp("mme", "scale_percentile")),
    Field("mme.co_weight", 2.0, "MME OpenOOD fork (lambda = 2 everywhere)", _hp("mme", "co_weight")),
    Field("nnguide.k", 100, "OpenOOD (NNGuide k = 100)", _hp("nnguide", "k")),
), selector={"preset": "openood"})

CARDS = (CIFAR, IMAGENET, REFERENCE, OPENOOD)
DEPARTURES = ()
