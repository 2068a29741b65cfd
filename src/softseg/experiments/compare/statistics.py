"""Paired statistics of a comparison: each method against the reference, case by case.

Pure functions on numbers (no files). The conventions, stated once:

* **Pairs are held-out cases.** A case's value of a method is its metric averaged over that
  method's seeds (NaN seeds ignored; a case with no defined value has none). Methods are
  paired by case id over the cases both have, never by position.
* **Difference** = method − reference, in the metric's native unit (fractions).
* **Test**: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, its defaults:
  zero differences dropped, exact distribution for small samples). All differences zero:
  p = 1, and the note says so. Fewer than :data:`FEW_PAIRS` non-zero pairs: the note says the
  test has little power (with n pairs the smallest two-sided p is 2 / 2**n).
* **CI**: 95 % **percentile** bootstrap of the mean difference (``scipy.stats.bootstrap``,
  :data:`N_RESAMPLES` resamples of the cases, seeded). Fewer than 2 pairs: undefined.
* **Holm**: p-values adjusted over the non-reference methods within one task and metric;
  significant means Holm-adjusted p < :data:`ALPHA`.
* **Metrics** (:data:`METRICS`): Dice at t = 0.5 (``dice_at_0.5``), the QUBIQ score (mean
  Dice over t = 0.1 ... 0.9, which is also Table 2's Dice), ECE and E[1−IoU(y, ŷ)].
  Multi-class data add, over all classes at once (:data:`CLASS_METRICS`), the class-wise
  ECE and the multi-class Brier score.
* **Better**: each metric's direction in :mod:`softseg.evaluation.registry`: higher Dice and
  QUBIQ, lower ECE, E[1−IoU(y, ŷ)] (``pred_rater_dist``), class-wise ECE and multi-class Brier.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _scipy

from softseg.data.cases import natural_key
from softseg.evaluation.registry import spec

# Dice at t = 0.5, not Table 2's Dice: that is the mean of Dice over t = 0.1 ... 0.9, which per
# case is the QUBIQ score, so testing both would test one number twice.
METRICS = ("dice_at_0.5", "qubiq", "ece", "pred_rater_dist")
# multi-class data: over all classes at once (one row group, not per class)
CLASS_METRICS = ("classwise_ece", "multiclass_brier")
N_RESAMPLES = 10_000
CI_METHOD = "percentile"
CONFIDENCE = 0.95
ALPHA = 0.05
FEW_PAIRS = 6

CaseValues = Mapping[str, Mapping[str, Mapping[str, float]]]  # task -> case -> metric -> value


def seed_average(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per case id, the mean of its defined values over the seeds (``per_seed[s][case]``);
    cases with no defined value are left out."""
    collected: dict[str, list[float]] = {}
    for values in per_seed:
        for case, value in values.items():
            if value is not None and math.isfinite(value):
                collected.setdefault(case, []).append(float(value))
    return {case: float(np.mean(v)) for case, v in collected.items()}


def pair(values: Mapping[str, float], reference: Mapping[str, float]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The cases both have (natural order) and their values: (cases, method values, reference
    values), float64 arrays of equal length."""
    cases = tuple(sorted(set(values) & set(reference), key=natural_key))
    return (cases, np.array([values[c] for c in cases], dtype=np.float64),
            np.array([reference[c] for c in cases], dtype=np.float64))


def wilcoxon_test(differences: np.ndarray) -> tuple[float, float, str]:
    """(statistic, two-sided p, note) of the Wilcoxon signed-rank test of ``differences``.

    The statistic is scipy's: the smaller of the rank sums of positive and negative
    differences. No differences: NaN, NaN. All zero: (0, 1). The note names all-zero
    differences, dropped zeros and too few pairs; empty when there is nothing to say.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan, "no paired cases"
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return 0.0, 1.0, f"all {d.size} differences are zero: p = 1"
    notes = []
    if nonzero < d.size:
        notes.append(f"{d.size - nonzero} zero difference(s) dropped by the test")
    if nonzero < FEW_PAIRS:
        notes.append(f"only {nonzero} non-zero pair(s): the test has little power "
                     f"(smallest possible p = {2.0 ** (1 - nonzero):.3g})")
    with warnings.catch_warnings():
        # scipy warns when it falls back to the normal approximation (zeros, ties); the note says so
        warnings.simplefilter("ignore")
        result = _scipy.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue), "; ".join(notes)


_RNG_KEYWORD = "rng" if "rng" in inspect.signature(_scipy.bootstrap).parameters else "random_state"


def bootstrap_ci(differences: np.ndarray, seed: int = 0, n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """95 % percentile-bootstrap CI of the mean of ``differences`` (``scipy.stats.bootstrap``
    with a generator seeded by ``seed``). Fewer than 2 values: (NaN, NaN); all equal: that value
    twice (every resample has the same mean)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.nan, math.nan
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    result = _scipy.bootstrap(
        (d,), np.mean, n_resamples=n_resamples, confidence_level=CONFIDENCE, method=CI_METHOD,
        **{_RNG_KEYWORD: np.random.default_rng(seed)},
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: sorted ascending p_(1) ≤ … ≤ p_(m),
    adjusted p_(i) = max over j ≤ i of min(1, (m − j + 1) p_(j)). NaN stays NaN and does not
    count in m."""
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    defined = np.flatnonzero(np.isfinite(p))
    m = defined.size
    running = 0.0
    for rank, index in enumerate(defined[np.argsort(p[defined], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return [float(x) for x in adjusted]


def better(mean_difference: float, higher_is_better: bool) -> str:
    """Which side the mean difference (method − reference) favours: "method", "reference",
    "neither" (zero) or "" (undefined)."""
    if not math.isfinite(mean_difference):
        return ""
    if mean_difference == 0:
        return "neither"
    return "method" if (mean_difference > 0) == higher_is_better else "reference"


@dataclass(frozen=True)
class PairedComparison:
    """One method against the reference on one task and metric."""

    task: str
    metric: str
    method: str
    reference: str
    cases: tuple[str, ...]  # the pairs
    method_values: np.ndarray  # per pair, seed-averaged
    reference_values: np.ndarray
    mean_difference: float
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    p_holm: float
    better: str
    note: str

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p_holm) and self.p_holm < ALPHA

    def row(self) -> dict:
        """The numbers for statistics.csv / .json (native units; no per-case arrays)."""
        return {
            "task": self.task, "metric": self.metric, "method": self.method, "reference": self.reference,
            "n_pairs": len(self.cases), "method_mean": _mean(self.method_values),
            "reference_mean": _mean(self.reference_values), "mean_difference": self.mean_difference,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "wilcoxon_statistic": self.statistic,
            "p_value": self.p_value, "p_holm": self.p_holm, "significant": self.significant,
            "higher_is_better": spec(self.metric).higher_is_better, "better": self.better, "note": self.note,
        }


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def paired_statistics(
    per_seed: Mapping[str, Sequence[CaseValues]],
    reference: str,
    tasks: Sequence[str],
    metrics: Sequence[str] = METRICS,
    seed: int = 0,
) -> list[PairedComparison]:
    """Every non-reference method of ``per_seed`` (method -> one :data:`CaseValues` per seed)
    against ``reference``, per task and metric, in that order (tasks, metrics, methods).
    The bootstrap of every comparison uses a generator seeded by ``seed``. Each metric needs a
    direction in :mod:`softseg.evaluation.registry` (ValueError otherwise: which side a
    difference favours would be meaningless)."""
    undirected = [m for m in metrics if not spec(m).better]
    if undirected:
        raise ValueError(f"metric(s) {undirected}: no better direction in evaluation.registry; "
                         "paired statistics need one")
    others = [m for m in per_seed if m != reference]
    out: list[PairedComparison] = []
    for task in tasks:
        for metric in metrics:
            averaged = {
                m: seed_average([{c: v.get(metric, math.nan) for c, v in s.get(task, {}).items()}
                                 for s in per_seed[m]])
                for m in [reference, *others]
            }
            found = []
            for method in others:
                cases, values, ref = pair(averaged[method], averaged[reference])
                d = values - ref
                statistic, p, note = wilcoxon_test(d)
                low, high = bootstrap_ci(d, seed)
                mean = float(d.mean()) if d.size else math.nan
                found.append(dict(
                    task=task, metric=metric, method=method, reference=reference, cases=cases,
                    method_values=values, reference_values=ref, mean_difference=mean, ci_low=low,
                    ci_high=high, statistic=statistic, p_value=p,
                    better=better(mean, spec(metric).higher_is_better), note=note,
                ))
            adjusted = holm([f["p_value"] for f in found])
            out += [PairedComparison(**f, p_holm=a) for f, a in zip(found, adjusted)]
    return out
