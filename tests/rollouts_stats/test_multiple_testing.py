"""Bonferroni and Benjamini-Hochberg against a published example, scipy and the defining formula."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rollouts.stats import adjust_p_values

# Benjamini & Hochberg (1995), section 4: 15 p-values; at q = 0.05 BH rejects the 4 smallest,
# Bonferroni only the 3 smallest (0.05 / 15 = 0.0033).
BH_1995 = [
    0.0001,
    0.0004,
    0.0019,
    0.0095,
    0.0201,
    0.0278,
    0.0298,
    0.0344,
    0.0459,
    0.3240,
    0.4262,
    0.5719,
    0.6528,
    0.7590,
    1.0000,
]


def _bh_by_definition(p: list[float]) -> list[float]:
    """adj_i = min(1, min over j with p_j >= p_i of m p_j / rank_j): written out, no vector tricks."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    rank = {idx: r + 1 for r, idx in enumerate(order)}
    out = []
    for i in range(m):
        candidates = [m * p[j] / rank[j] for j in range(m) if rank[j] >= rank[i]]
        out.append(min(1.0, min(candidates)))
    return out


def test_bh_on_the_1995_example() -> None:
    adjusted = adjust_p_values(BH_1995, method="bh")
    assert [i for i, a in enumerate(adjusted) if a <= 0.05] == [0, 1, 2, 3]
    bonf = adjust_p_values(BH_1995, method="bonferroni")
    assert [i for i, a in enumerate(bonf) if a <= 0.05] == [0, 1, 2]
    assert bonf[0] == pytest.approx(0.0015)
    assert bonf[-1] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_bh_matches_scipy_and_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = list(np.concatenate([rng.uniform(size=20), rng.uniform(0, 0.01, size=5), [0.03, 0.03, 0.5]]))
    rng.shuffle(p)
    got = adjust_p_values(p, method="bh")
    want = stats.false_discovery_control(p, method="bh")
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(got, _bh_by_definition(p), atol=1e-12)


def test_order_is_kept_and_bh_is_monotone_in_p() -> None:
    p = [0.04, 0.001, 0.2, 0.03]
    got = adjust_p_values(p, method="bh")
    assert got == pytest.approx([0.0533333333, 0.004, 0.2, 0.0533333333])
    by_p = [a for _, a in sorted(zip(p, got, strict=True))]
    assert by_p == sorted(by_p)
    assert adjust_p_values(p, method="bonferroni") == pytest.approx([0.16, 0.004, 0.8, 0.12])


def test_single_and_empty_families() -> None:
    assert adjust_p_values([0.2], method="bh") == [0.2]
    assert adjust_p_values([0.2], method="bonferroni") == [0.2]
    assert adjust_p_values([], method="bh") == []


@pytest.mark.parametrize(
    ("values", "method", "match"),
    [
        ([0.1, 1.2], "bh", "between 0 and 1"),
        ([0.1, -0.01], "bonferroni", "between 0 and 1"),
        ([0.1, float("nan")], "bh", "between 0 and 1"),
        ([0.1, None], "bh", "expected numbers"),
        ([0.1, "0.2"], "bh", "expected numbers"),
        ([0.1], "holm", "method must be"),
        ("0.1", "bh", "sequence of numbers"),
    ],
)
def test_bad_input(values: object, method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        adjust_p_values(values, method=method)  # type: ignore[arg-type]


def test_bh_controls_fdr_in_simulation() -> None:
    """20 features, 5 really drifted: the false discovery proportion averages at most q (with MC slack)."""
    rng = np.random.default_rng(7)
    q, trials, fdp = 0.1, 400, []
    for _ in range(trials):
        z = rng.normal(size=20)
        z[:5] += 3.0
        p = stats.norm.sf(z)
        rejected = np.array(adjust_p_values(list(p), method="bh")) <= q
        false = rejected[5:].sum()
        fdp.append(false / max(1, rejected.sum()))
    # Under independence BH's FDR is (15/20) q = 0.075; allow 3 Monte-Carlo standard errors.
    assert np.mean(fdp) <= 0.075 + 3 * np.std(fdp) / np.sqrt(trials)
