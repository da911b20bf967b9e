"""BOOD's recipe cards (Liao et al., ICML 2025). BOOD has no public repository; it builds on DreamOOD
(deeplearning-wisc/dream-ood), whose public code fills what the paper leaves out (the latent encoder's
training, the decoding pipeline). Where the paper states a value, the card follows the paper."""
from __future__ import annotations

from .card import METRICS, Card, Departure, Field
from .card import metrics_definition as _metrics

PAPER = "BOOD (ICML 2025)"
SEC41 = "BOOD Sec. 4.1"
DREAM = "DreamOOD public code (deeplearning-wisc/dream-ood)"
CIFAR_OOD = ("svhn", "places365", "lsun_c", "isun", "textures")
IMAGENET_OOD = ("inaturalist", "places", "sun", "textures")


def _context(**params):
    def context(profile: str):
        from .. import profiles

        return profiles.resolve(profile, "bood", seed_now=False, **params)
    return context


def _ids(cfg):
    from ..bood import experiments

    return experiments.id_datasets(cfg)


def _paper_value(dataset: str, key: str):
    def read(cfg):
        from ..bood import experiments

        return experiments.paper_values(cfg, dataset)[key]
    return read


def _phi_layers(dataset: str):
    """The layers of units of phi as the kit builds it for ``dataset``, counted as VOS counts its "3-layer
    MLP": input, hidden and output layers (1 -> 512 -> 2 is three; the Linear(1, 2) of DreamOOD's CIFAR code
    is two). A network of n linear maps in a chain has n + 1 layers of units."""
    def read(cfg):
        import torch.nn as nn

        from ..bood import experiments, regularize

        phi = regularize.build_phi(experiments.paper_values(cfg, dataset)["phi_hidden"])
        return sum(isinstance(m, nn.Linear) for m in phi.modules()) + 1
    return read


def _table_sets(dataset: str, table: int):
    def read(_cfg):
        from ..bood import experiments

        return tuple(experiments.TABLE_SETS[dataset][table])
    return read


def _sweep(key: str):
    def read(cfg):
        from ..bood import experiments

        return tuple(experiments.SWEEPS[cfg.profile].get(key, ())) if cfg.sweeps else ()
    return read


def _sd(attr: str, key: str | None = None):
    def read(_cfg):
        from ..bood import sd

        value = getattr(sd, attr)
        return value[key] if key else value
    return read


_training = (
    Field("arch", "resnet34", f"{SEC41}; BOOD Appendix (ResNet-34 for the OOD classifier)", lambda c: c.arch),
    Field("init", "scratch", f"{SEC41} (trained with the generated outliers)", lambda c: c.reg_init),
    Field("epochs", 100, "not stated by BOOD: the kit's choice", lambda c: c.reg_epochs),
    Field("optimizer", "sgd", DREAM, None),
    Field("lr", 0.1, SEC41, lambda c: c.lr),
    Field("schedule", "cosine", SEC41, None),
    Field("nesterov", True, f"{DREAM} (momentum 0.9)", lambda c: c.profile != "mini"),
    Field("weight_decay", 5e-4, DREAM, lambda c: c.weight_decay),
    Field("batch", 160, SEC41, lambda c: c.values.get("reg_batch_size", c.batch_size)),
    Field("n_outliers", 1000, f"{SEC41} (1000 images per class, 100,000 in all)", lambda c: c.n_outliers),
    Field("outlier_input", "resize", "BOOD Sec. 3.3 (generated images as training inputs)",
          lambda c: c.outlier_transform,
          "DreamOOD's public code random-crops 32 px (padding 4) out of the 256-px images, a crop rather than "
          "the image; the card follows the paper's intent (the whole outlier image). "
          "-p outlier_transform random_crop runs the public code's crops."),
    Field("precision", "fp32", "not stated by BOOD", lambda c: "amp" if c.amp else "fp32"),
    Field("score", "energy: logsumexp(logits)", f"BOOD Sec. 3.3 (eq. 7); {DREAM}", None),
    Field("metrics", METRICS, "BOOD Sec. 4.1, Evaluation metrics", _metrics),
)

LATENT = Card(
    "bood_latent_space", PAPER, "Sec. 3.1, eq. (2): the latent space behind Tables 1-2", ("30",), _context(), (
        Field("id_datasets", ("cifar100", "imagenet100"), f"{SEC41} (following DreamOOD)", _ids),
        Field("latent_arch", "resnet34_768", "BOOD Appendix (ResNet-34, last layer 512 -> 768)",
              lambda c: c.latent_arch),
        Field("anchors", "sd", "BOOD Sec. 3.1; DreamOOD: rows of SD v1.4's CLIP ViT-L/14 token-embedding table",
              lambda c: __import__("ood_utils.bood.anchors", fromlist=["x"]).anchor_source(c.profile)),
        Field("multi_token_names", "mean of every sub-token's row", "the kit's rule (the papers are silent; "
              "DreamOOD's code reads the first sub-token only)", _sd("MULTI_TOKEN_RULE"),
              "A first-sub-token anchor puts 'cockroach' at 'co'; the mean of all rows keeps the whole name, and "
              "the SD swap writes the outlier into every one of those rows, so both sides agree."),
        Field("temperature", 1.0, SEC41, lambda c: c.temperature,
              "DreamOOD's code uses t = 0.1; BOOD states t = 1, and BOOD's numbers came from BOOD's own code."),
        Field("latent_epochs", 200, f"{DREAM} (CIFAR-100 encoder)", lambda c: c.latent_epochs),
        Field("latent_lr", 0.1, DREAM, lambda c: c.lr),
        Field("latent_nesterov", True, DREAM, lambda c: c.profile != "mini"),
        Field("latent_weight_decay", 5e-4, DREAM, lambda c: c.weight_decay),
        Field("latent_batch", 256, DREAM, lambda c: c.values.get("latent_batch_size", c.batch_size)),
    ))

SYNTHESIS = Card(
    "bood_synthesis", PAPER, "Sec. 3.2, eqs. (3)-(6); Figs. 3, 7-8", ("31",), _context(), (
        Field("step_size", 0.015, SEC41, lambda c: c.step_size),
        Field("extra_steps", 2, "BOOD Sec. 4.3 (best c = 2)", lambda c: c.extra_steps),
        Field("max_steps", 100, SEC41, lambda c: c.max_steps),
        Field("boundary_ratio", 5.0, f"{SEC41} (r = 5%, per class)", lambda c: c.boundary_ratio),
        Field("rescale", "to the class anchor's norm, normalised first", "BOOD Sec. 3.3; DreamOOD (multiplies by "
              "the norm without normalising: a bug the kit avoids)", None),
        Field("decoder", "sd", "BOOD Sec. 3.3 (Stable Diffusion v1.4)",
              lambda c: __import__("ood_utils.bood.anchors", fromlist=["x"]).anchor_source(c.profile)),
        Field("prompt", "A high-quality image of the <class>", DREAM, lambda c: _sd("PROMPT")(c).format("<class>")),
        Field("multi_token_names", "mean of every sub-token's row", "the kit's rule", _sd("MULTI_TOKEN_RULE")),
        Field("sampler", "PLMS", DREAM, None),
        Field("sd_steps", 50, DREAM, lambda c: c.sd_steps),
        Field("sd_guidance", 7.5, DREAM, lambda c: c.sd_guidance),
        Field("sd_size", 512, DREAM, lambda c: c.sd_size),
        Field("save_size", 256, DREAM, _sd("SD_DEFAULTS", "save_size")),
        Field("n_outliers", 1000, SEC41, lambda c: c.n_outliers),
    ))

TABLE1 = Card("bood_table1", PAPER, "Table 1 (CIFAR-100)", ("32",), _context(), (
    Field("id_dataset", "cifar100", SEC41, lambda c: _ids(c)[0]),
    Field("averaged", CIFAR_OOD, f"{SEC41}; BOOD Table 1 (Average)", _table_sets("cifar100", 1)),
    Field("reg_weight", 2.5, f"{SEC41} (beta, CIFAR-100)", _paper_value("cifar100", "reg_weight")),
    Field("phi_layers", 3, "BOOD Sec. 3.3 (a 3-layer MLP as in VOS: layers of units 1, 512, 2)",
          _phi_layers("cifar100"), "DreamOOD's CIFAR code uses Linear(1, 2) (two layers of units); the card "
          "follows BOOD's text, Linear(1, 512)-ReLU-Linear(512, 2)."),
    Field("eval_per_set", 2000, f"{DREAM} (up to 2,000 OOD images per set)",
          lambda c: "all" if c.max_eval is None else c.max_eval),
    Field("seeds", 3, "not stated by BOOD: the kit's three", lambda c: c.n_seeds),
    *_training))

TABLE2 = Card("bood_table2", PAPER, "Table 2 (ImageNet-100)", ("32",), _context(id_datasets=["imagenet100"]), (
    Field("id_dataset", "imagenet100", SEC41, lambda c: _ids(c)[0]),
    Field("averaged", IMAGENET_OOD, f"{SEC41} (following MOS); BOOD Table 2", _table_sets("imagenet100", 2)),
    Field("reg_weight", 1.0, f"{SEC41} (beta, ImageNet-100)", _paper_value("imagenet100", "reg_weight")),
    Field("phi_layers", 3, "BOOD Sec. 3.3 (a 3-layer MLP as in VOS: layers of units 1, 512, 2); DreamOOD's "
          "ImageNet-100 code: the same Linear(1, 512)-ReLU-Linear(512, 2)", _phi_layers("imagenet100")),
    *_training), selector={"id_datasets": ["imagenet100"]}, profiles=("paper",))

SWEEPS = Card("bood_figs_5_6", PAPER, "Figs. 5-6 (alpha, c, r, beta, K)", ("32",), _context(), (
    Field("extra_steps", (0, 1, 2, 3, 4, 5), "BOOD Sec. 4.3, Fig. 5 right", _sweep("extra_steps")),
    Field("boundary_ratio", (2.5, 5.0, 10.0, 20.0), "BOOD Sec. 4.3, Fig. 6 left", _sweep("boundary_ratio")),
    Field("max_steps", (5, 50, 100, 200, 400), "BOOD Sec. 4.3, Fig. 6 right", _sweep("max_steps")),
    Field("step_size", "not listed in the text", "BOOD Fig. 5 left (the grid is only in the figure)", None),
    Field("reg_weight", "not listed in the text", "BOOD Fig. 6 middle (best beta = 2.5)", None),
), profiles=("paper",))

CARDS = (LATENT, SYNTHESIS, TABLE1, TABLE2, SWEEPS)

_Q = ("quick",)
DEPARTURES = (
    Departure("bood_latent_space", "id_datasets", _Q, ("cifar100",), "quick: CIFAR-100 only"),
    Departure("bood_latent_space", "latent_epochs", _Q, 50, "quick: 50 encoder epochs"),
    Departure("bood_synthesis", "n_outliers", _Q, 200, "quick: 200 images per class"),
    Departure("bood_table1", "n_outliers", _Q, 200, "quick: 200 images per class"),
    Departure("bood_table1", "epochs", _Q, 30, "quick: 30 epochs"),
    Departure("bood_table1", "eval_per_set", ("paper",), "all",
              "every image of each OOD set is scored (narrower intervals than the code's 2,000 cap)"),
    *(Departure(card, "precision", profiles, "amp",
                "mixed precision on a GPU for speed (the classifiers' plain cross-entropy and energy terms)")
      for card, profiles in (("bood_table1", ("quick", "paper")), ("bood_table2", ("paper",)))),
)
