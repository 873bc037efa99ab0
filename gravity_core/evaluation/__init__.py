"""Evaluation as in the paper (GRAVITY section 4.1, appendix D.3): the judge's replies, the
orderings it sees, the metrics, their intervals and tests, and the judge's reliability.

Pure: no model calls, no files. Shares are in [0, 1]; the paper prints percentages.
"""
from gravity_core.evaluation.ablation import ablation_deltas
from gravity_core.evaluation.bootstrap import bootstrap_intervals
from gravity_core.evaluation.breakdowns import (
    PaperGenreGroups,
    assign_paper_genres,
    check_covers,
    metrics_by_group,
    paper_genre_table,
    parse_paper_genre_groups,
)
from gravity_core.evaluation.degrade import degrade_description
from gravity_core.evaluation.metrics import (
    ORIGINAL,
    bradley_terry,
    method_metrics,
    pairwise_outcomes,
    validate_verdicts,
    verdict_outcomes,
    win_matrix,
)
from gravity_core.evaluation.orderings import (
    check_position_balance,
    latin_square_orderings,
    position_balance,
    position_balance_problems,
)
from gravity_core.evaluation.parsing import (
    candidate_ids,
    ids_to_methods,
    parse_ranking,
    parse_score,
    ranking_schema,
    score_schema,
)
from gravity_core.evaluation.reference import (
    PaperResults,
    ablation_frame,
    country_frame,
    metric_frame,
    parse_paper_results,
)
from gravity_core.evaluation.reliability import (
    DEGRADED,
    JudgeThresholds,
    first_position_rate,
    judge_flags,
    judge_reliability,
    ordering_consistency,
    sanity_accuracy,
)
from gravity_core.evaluation.stats import (
    compare_to_reference,
    holm_adjust,
    paired_wilcoxon,
    per_user_mean,
    per_user_metric,
    significance_stars,
)

__all__ = [
    "DEGRADED", "ORIGINAL", "JudgeThresholds", "PaperGenreGroups", "PaperResults",
    "ablation_deltas", "ablation_frame", "assign_paper_genres", "bootstrap_intervals", "bradley_terry",
    "candidate_ids", "check_covers", "check_position_balance", "compare_to_reference", "country_frame",
    "degrade_description", "first_position_rate", "holm_adjust", "ids_to_methods", "judge_flags",
    "judge_reliability", "latin_square_orderings", "method_metrics", "metric_frame", "metrics_by_group",
    "ordering_consistency", "paired_wilcoxon", "pairwise_outcomes", "paper_genre_table",
    "parse_paper_genre_groups", "parse_paper_results", "parse_ranking", "parse_score", "per_user_mean",
    "per_user_metric", "position_balance", "position_balance_problems", "ranking_schema", "sanity_accuracy",
    "score_schema", "significance_stars", "validate_verdicts", "verdict_outcomes", "win_matrix",
]
