"""The four transfer-learning cases: runnable recipes, an advisor that measures which case applies, the
similarity measures it uses, and `transfer`: the best recipe for a data set found by measuring within a budget."""

from pipeline.strategy.advisor import Advice, advise
from pipeline.strategy.recipes import CASES, CaseResult, early_taps, feature_taps, run_case
from pipeline.strategy.similarity import bn_shift, target_bn_statistics
from pipeline.strategy.transfer import TransferResult, transfer

__all__ = ["Advice", "CASES", "CaseResult", "advise", "bn_shift", "early_taps", "feature_taps", "run_case",
           "target_bn_statistics", "TransferResult", "transfer"]
