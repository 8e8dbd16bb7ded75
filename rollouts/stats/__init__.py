"""Pure statistics for the analysis provider: functions of arrays and counts, no I/O, no Flask.

Every test returns a :class:`TestResult`; bad input (empty, NaN/inf, wrong shape, impossible
counts) raises ``ValueError`` with a message a caller can show.
"""

from rollouts.stats.compare import mann_whitney_test, mcnemar_test, two_proportion_test
from rollouts.stats.drift import chi2_test, ks_test, psi
from rollouts.stats.mmd import mmd_test
from rollouts.stats.multiple import adjust_p_values
from rollouts.stats.result import TestResult
from rollouts.stats.sampling import subsample
from rollouts.stats.sequential import sequential_count_test, sequential_mean_test, sequential_proportion_test

__all__ = [
    "TestResult",
    "adjust_p_values",
    "chi2_test",
    "ks_test",
    "mann_whitney_test",
    "mcnemar_test",
    "mmd_test",
    "psi",
    "sequential_count_test",
    "sequential_mean_test",
    "sequential_proportion_test",
    "subsample",
    "two_proportion_test",
]
