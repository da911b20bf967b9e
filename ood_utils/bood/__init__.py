"""BOOD (Liao et al., ICML 2025): boundary-based out-of-distribution data generation.

    from ood_utils import bood
    anchors = bood.class_anchors(class_names, source="minilm")           # Gamma(y), Sec. 3.1
    model, info = bood.train_latent_encoder(cfg, "mnist5k", anchors)     # eq. (2)
    kappa = bood.boundary_steps(z, y, anchors.vectors)                   # eq. (3)
    z_ood, crossed = bood.synthesize(z, y, anchors.vectors)              # eqs. (4)-(5)
    outliers = bood.boundary_outliers(z, y, anchors.vectors, ratio=5)    # Sec. 3.2 end to end

Modules: ``anchors`` (class token embeddings), ``latent`` (the aligned encoder), ``boundary`` (eqs. 3-5),
``baselines`` (the ablations' feature generators), ``regularize`` (eq. 7), ``experiments`` (what the
notebooks run), ``report`` (records and verdicts), ``figures``.
"""
from .anchors import (AnchorError, Anchors, anchor_source, anchors_from_table, check_clip_tokenizer,
                      check_sd_weights, class_anchors, embedding_table, minilm_dir, sd_dir)
from .boundary import (BoundaryError, Outliers, boundary_features, boundary_outliers, boundary_steps, calibrate_step,
                       class_margin, predict, rescale_to_anchors,
                       select_boundary, sign_step, synthesize)
from .latent import (CosineHead, LatentEncoder, build_latent_encoder, cosine_logits, latent_loss,
                     train_latent_encoder)
from .decoders import decode, get_decoder, get_mini_ldm
from . import baselines, experiments, figures, regularize, report  # noqa: E402  (modules: bood.report...)
