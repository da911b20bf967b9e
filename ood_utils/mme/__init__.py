"""The MME paper (Rakotoarivony, *Multi-Method Ensemble for OOD Detection*, BMVC 2025), as notebooks 20-21
use it: ``from ood_utils import mme``, then ``mme.<name>``.

| module | what |
|---|---|
| ``bootstrap`` | 95% intervals of AUROC / FPR95: ``metrics``' bootstrap, every resample evaluated at once |
| ``benchmark`` | the paper's names and settings, :func:`resolve_config`, :func:`load_benchmark` (cached features), scoring any detector on every set, :func:`evaluate_detectors` (Tables 1-2) |
| ``factors`` | eq. (7) rebuilt from its five detectors (:class:`MMEParts`), computed as a sum of logs |
| ``assumptions`` | Assumption 1 (covariances, CO ratio), Hypothesis 1 (truncation grid, Fig. 3), Proposition 1 |
| ``ensemble`` | Tables 3, 5, 6, Fig. 5, Fig. 1 and MME against the best other detector |
| ``figures`` | the notebooks' figures |
| ``records`` | result records named like the transcribed tables; the paper's numbers read back |
| ``report`` | verdict helpers and notebook 20's claim rows (primary / supporting, kind, diagnosis) |
| ``report_ensemble`` | notebook 21's claim rows: MME against every other detector, the ablations |

Scores are "higher = more ID" throughout; metric values are fractions in [0, 1].
"""
from .assumptions import (broken_premise_share, consistency_ratios, covariance_rows, covariance_table, grid_matrix,
                          grid_scores, hypothesis1_summary, mme_factor_values, noop_cells, premise_truncations,
                          proposition1_check, proposition1_counterexamples, score_covariances, separability,
                          truncation_grid, truncation_premise)
from .benchmark import (DATASET_NAMES, FAMILIES, FIG1_GROUPS, FIG3_SCORES, FIG3_TRUNCATIONS, FIT_ON, LAMBDAS,
                        PAPER, PAPER_ARCHS, PAPER_NAMES, TABLE1_METHODS, TABLE2_METHODS, TABLE4_SCORES,
                        TABLE6_EXTRAS, TABLE_SETS, TEMPERATURES, Benchmark, average_table, check_data, check_preset,
                        default_preset, detector_scores, evaluate_detectors, fit_detector, fitted_truncation,
                        load_benchmark, n_boot_for, per_set, resolve_config, score_sets, small_data_hparams,
                        wide_table)
from .bootstrap import bootstrap_bounds, paired_bounds, with_bounds
from .ensemble import (COMPONENT_TITLES, TABLE5_VARIANTS, TRUNCATION_TITLES, extra_scores, mme_ablation, mme_vs_best,
                       near_far_summary, per_set_ranks, rank, sensitivity, truncation_variants)
from .factors import (FACTOR_TITLES, MME_FACTORS, MME_TRUNCATIONS, MMEParts, factor_label, factor_table,
                      positive_factor, recombine)
from .figures import (FAMILY_COLORS, FIT_ON_SHORT, FIT_ON_TITLES, GROUP_COLORS, mark_chance, plot_consistency,
                      plot_covariance_gaps, plot_methods, plot_near_far, plot_proposition, plot_scale_tradeoff,
                      plot_score_distributions, plot_sensitivity, plot_truncation_grid)
from .records import (ARCH_NAMES, ID_NAMES, MINI_ANALOGUES, TABLE_IDS, analogue_table, assumption_records,
                      compare_main, ensemble_records,
                      grid_method_name, main_table, paper_pivot, paper_values, reference_settings, setting_name,
                      to_records)
from .report import (H1_EXCLUDED, H1_PRIMARY, VERDICT_ORDER, all_verdict, binomial_noise, claim_sets, claims_table,
                     claims_view, consistency_claims, covariance_claims, has_counterpart, hypothesis1_claims,
                     paired_effect, proposition1_claims, verdict_counts)
from .report_ensemble import CEILING, ensemble_claims, mechanism, sensitivity_claim
