"""One home for the statistics the platform prints: mean, spread, intervals, paired tests.

The arithmetic is scipy.stats' (the t quantiles and intervals, the percentile bootstrap,
the paired t-test); what is ours is the policy: which interval an accuracy gets, what is
paired with what, how many seeds a verdict needs, and the sentence it is said in.

Every mean this platform shows carries what its spread is and over how many seeds:
`Summary.text()` reads "91.05 ± 1.94 (mean ± std, n=10; 95% CI [89.66, 92.44])".

- `summarize(values)`: mean, sample std (n - 1), n and a 95% interval for the mean.
  `interval="t"` is Student's t; `interval="bootstrap"` is a percentile bootstrap of the
  mean, which never leaves the range of the data, so an interval of accuracies stays
  within [0, 100] (a t-interval of [2, 0, 1] would not). Accuracies use the bootstrap.
- `paired_difference(a, b)`: two methods compared on the seeds they share (seed i of
  method a against seed i of method b, so seed-to-seed luck cancels), with the
  t-interval of the mean difference and a paired t-test.
- `verdict(...)`: the one sentence a researcher quotes.

With n = 1 there is no spread and no interval: they are NaN and the text says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (n - 1); NaN for n < 2
    n: int
    low: float  # the interval of the mean; NaN for n < 2
    high: float
    interval: str  # "t" or "bootstrap"
    confidence: float = CONFIDENCE

    def contains(self, value: float) -> bool:
        return self.n >= 2 and self.low <= value <= self.high

    def text(self, digits: int = 2) -> str:
        """'m ± s (mean ± std, n=N; 95% CI [a, b])'."""
        if self.n == 0:
            return "no runs"
        if self.n == 1:
            return f"{self.mean:.{digits}f} (one run, n=1: no spread, no interval)"
        return (f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (mean ± std, n={self.n}; "
                f"{self.ci_label} [{self.low:.{digits}f}, {self.high:.{digits}f}])")

    def short(self, digits: int = 2) -> str:
        """'m ± s [a, b]' for table cells whose header says what the numbers are."""
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.mean:.{digits}f} (n=1)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    @property
    def ci_label(self) -> str:
        return f"{round(100 * self.confidence)}% CI"


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("summary of non-finite values: drop diverged runs and count them apart")
    return array


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval of the mean."""
    x = _clean(values)
    if len(x) < 2:
        return math.nan, math.nan
    return t_interval_of(float(x.mean()), float(x.std(ddof=1)), len(x), confidence)


def t_interval_of(mean: float, std: float, n: int,
                  confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student's t interval of a mean, from the mean, standard deviation (ddof=1) and size
    of its sample (as a printed "mean ± std, n" gives them)."""
    from scipy import stats

    sem = std / math.sqrt(n)
    if sem == 0.0:
        return mean, mean
    low, high = stats.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return float(low), float(high)


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap). Seeded, so the
    same values always give the same interval; it lies within [min, max] of the values."""
    from scipy import stats

    x = _clean(values)
    if len(x) < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):  # every resample's mean is x[0]; scipy would warn of degeneracy
        return float(x[0]), float(x[0])
    found = stats.bootstrap((x,), np.mean, n_resamples=resamples, method="percentile",
                            confidence_level=confidence, rng=np.random.default_rng(seed),
                            vectorized=True).confidence_interval
    return float(found.low), float(found.high)


def summarize(values: Sequence[float], interval: str = "bootstrap",
              confidence: float = CONFIDENCE) -> Summary:
    """Mean, std (n - 1), n and an interval of the mean ("bootstrap" or "t")."""
    x = _clean(values)
    if interval not in ("t", "bootstrap"):
        raise ValueError(f"interval must be 't' or 'bootstrap', got {interval!r}")
    n = len(x)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan, interval, confidence)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    low, high = (bootstrap_interval if interval == "bootstrap" else t_interval)(x, confidence)
    return Summary(mean, std, n, low, high, interval, confidence)


@dataclass(frozen=True)
class Paired:
    """Method a minus method b, paired by seed."""

    a: str
    b: str
    seeds: tuple[int, ...]  # the seeds both have
    difference: Summary  # of a - b per seed, t-interval
    p_value: float  # two-sided paired t-test; NaN for n < 2 or identical pairs

    @property
    def n(self) -> int:
        return self.difference.n

    @property
    def detectable(self) -> bool:
        """The interval excludes zero."""
        d = self.difference
        return d.n >= 2 and (d.low > 0 or d.high < 0)


def welch_interval(a: Summary, mean_b: float, std_b: float, n_b: int,
                   confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The 95% interval of mean(a) - mean_b for two independent samples (Welch's t, its
    degrees of freedom by Welch-Satterthwaite): how far our mean is from a published one,
    given both spreads. std_b is a sample standard deviation (n - 1)."""
    from scipy import stats

    va, vb = a.std ** 2 / a.n, std_b ** 2 / n_b
    if a.n < 2 or n_b < 2 or va + vb == 0:
        return (math.nan, math.nan)
    dof = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (n_b - 1))
    low, high = stats.t.interval(confidence, df=dof, loc=a.mean - mean_b, scale=math.sqrt(va + vb))
    return float(low), float(high)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], name_a: str = "a",
                      name_b: str = "b", confidence: float = CONFIDENCE) -> Paired:
    """a - b over the seeds both have. `a` and `b` map seed -> value. The interval and the
    p-value are scipy's paired t-test (`ttest_rel`) of the shared seeds."""
    from scipy import stats

    seeds = tuple(sorted(set(a) & set(b)))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    summary = summarize(diffs, interval="t", confidence=confidence)
    p = math.nan
    if len(seeds) >= 2 and summary.std > 0:
        test = stats.ttest_rel([float(a[s]) for s in seeds], [float(b[s]) for s in seeds])
        low, high = test.confidence_interval(confidence)
        summary = dataclasses.replace(summary, low=float(low), high=float(high))
        p = float(test.pvalue)
    elif len(seeds) >= 2 and summary.mean != 0:
        p = 0.0  # every seed differs by the same non-zero amount
    return Paired(name_a, name_b, seeds, summary, p)


def verdict(paired: Paired, what: str = "keeps old tasks better", unit: str = "points") -> str:
    """One sentence: which method wins by how much, with its interval, or that no
    difference is detectable with this many seeds."""
    d, n = paired.difference, paired.n
    if n < 2:
        return (f"{paired.a} vs {paired.b}: {n} shared seed(s); at least 2 are needed for an "
                f"interval, and 5 or more for a verdict worth quoting")
    ci = f"{d.ci_label} {d.low:+.2f} to {d.high:+.2f}, {n} paired seeds"
    p = "" if math.isnan(paired.p_value) else f", paired t-test p={paired.p_value:.2g}"
    if not paired.detectable:
        return (f"No difference between {paired.a} and {paired.b} detectable with {n} seeds "
                f"({paired.a} - {paired.b} = {d.mean:+.2f} {unit}, {ci}{p}).")
    winner, loser = (paired.a, paired.b) if d.mean > 0 else (paired.b, paired.a)
    return (f"{winner} {what} than {loser} by {abs(d.mean):.2f} {unit} "
            f"({paired.a} - {paired.b}: {ci}{p}).")
