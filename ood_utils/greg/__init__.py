"""The GReg paper (Sharifi et al., ECCV 2024): gradient-regularised energy training and energy-based sampling.

=====================  =================================================================================
module                 what
=====================  =================================================================================
``energy``             the energy score ``S = -LSE(f(x))`` (lower = more ID) and the energy loss, eq. (1)
``regularizer``        the gradient regulariser, eq. (3) (double backprop), paper and public-code forms
``objectives``         CE + lambda_S L_S + lambda_grad L_grad as ``train.fit`` loss functions: Energy, GReg,
                       OE, POEM, DOS, GReg+ (Tables 1-5)
``sampling``           torch K-Means, Algorithm 1 (energy-based cluster sampling), DOS and POEM samplers
``certify``            the certified radius of eq. (4) with local Lipschitz estimates
``toy``                the 2D toy of Fig. 1a and Fig. 3 (``toy_figures``: its plots)
=====================  =================================================================================
"""
from .energy import PAPER_M_AUX, PAPER_M_IN, check_margins, energy_loss, energy_score, id_score
from .objectives import DEFAULTS, METHODS, IDAuxLoader, Objective, get_method, make_objective, oe_loss
from .regularizer import (FORMS, form_gap, gradient_regularizer, gradient_term, input_gradient,
                          scores_and_gradient_norms)
from .sampling import (SAMPLERS, ClusterSampler, PosteriorSampler, dos_sample, energy_cluster_sample, kmeans,
                       make_sampler, pool_features)
from .certify import certified_radius, linear_region, sampled_lipschitz, steepest_flip
from . import toy
