"""The four transfer-learning cases: runnable recipes, an advisor that measures which case applies, and
the similarity measures it uses."""

from pipeline.strategy.advisor import Advice, advise
from pipeline.strategy.recipes import CASES, CaseResult, early_taps, feature_taps, run_case
from pipeline.strategy.similarity import bn_shift, target_bn_statistics

__all__ = ["Advice", "CASES", "CaseResult", "advise", "bn_shift", "early_taps", "feature_taps", "run_case",
           "target_bn_statistics"]
