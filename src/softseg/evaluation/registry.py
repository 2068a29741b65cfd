"""What is shown of each metric, in one place: its name, unit, decimals and which direction
is better.

The metric functions live in :mod:`softseg.evaluation.metrics`; this module only says how
their numbers are presented and read. Everything that prints or judges a metric reads it
here: the evaluation's tables (:mod:`softseg.evaluation.tables`, which the report draws),
the report's cards and captions, the tables beside the paper and compare's tables,
statistics and figures. Keys are the column names of an evaluation folder (``metrics.csv``,
``cases.csv``, summary.json), plus ``dice_at_0.5`` (Dice at the 0.5 operating point) and,
for multi-class data, ``classwise_ece`` and ``multiclass_brier`` over all classes.

Values are stored in native units (fractions, pixels, millimetres); a metric whose unit is
``%`` is shown multiplied by 100, so its differences read in percentage points.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

PERCENT = "%"
DIRECTIONS = ("higher", "lower", "")
# the row group of the metrics over all classes of multi-class data (softmax against the class
# distribution, background included); no class name has a space, so it cannot clash with a task
ALL_CLASSES = "all classes"


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is named, shown and judged."""

    key: str  # its column in the evaluation's files: "dice", "hd95", "ece", ...
    name: str  # short name, a table header without its unit: "Dice", "HD95", "D²_GED"
    unit: str = ""  # display unit: "%" (shown x 100), "px", "mm", or "" (a fraction, or no unit)
    digits: int = 4  # decimals in the display unit
    better: str = ""  # "higher" or "lower" is better; "" for a property of the data itself
    title: str = ""  # the name in sentences and headline cards, when longer than ``name``

    @property
    def label(self) -> str:
        """The column header: name and unit, ``Dice %``, ``HD95 px``, ``ECE``."""
        return f"{self.name} {self.unit}".rstrip()

    @property
    def scale(self) -> float:
        """Native value x scale = displayed value (100 for percent metrics, else 1)."""
        return 100.0 if self.unit == PERCENT else 1.0

    @property
    def higher_is_better(self) -> bool:
        return self.better == "higher"

    @property
    def lower_is_better(self) -> bool:
        return self.better == "lower"

    @property
    def long_name(self) -> str:
        return self.title or self.name

    def format(self, value: float | None) -> str:
        """A native value in display units with this metric's decimals; "n/a" if undefined."""
        if value is None or not math.isfinite(value):
            return "n/a"
        return f"{value * self.scale:.{self.digits}f}"


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {s.key: s for s in specs}


SPECS: dict[str, MetricSpec] = _specs(
    # Table 2: prediction >= t against soft label >= t, t = 0.1 ... 0.9
    MetricSpec("dice", "Dice", PERCENT, 2, "higher"),
    MetricSpec("precision", "Precision", PERCENT, 2, "higher"),
    MetricSpec("recall", "Recall", PERCENT, 2, "higher"),
    MetricSpec("hd95", "HD95", "px", 2, "lower"),
    MetricSpec("hd95_mm", "HD95", "mm", 2, "lower"),
    MetricSpec("gt_area_frac", "GT area", PERCENT, 2),
    # Table 3: prediction >= 0.5 against each rater; d = 1 - IoU
    MetricSpec("ged2", "D²_GED", "", 4, "lower"),
    MetricSpec("pred_rater_dist", "E[1−IoU(y,ŷ)]", "", 4, "lower"),
    MetricSpec("rater_diversity", "E[1−IoU(y,y′)]", "", 4, title="rater diversity"),
    MetricSpec("expected_dice", "E[Dice(y,ŷ)]", PERCENT, 2, "higher"),
    # the QUBIQ score and calibration
    MetricSpec("qubiq", "QUBIQ", PERCENT, 2, "higher", title="QUBIQ score"),
    MetricSpec("ece", "ECE", "", 4, "lower"),
    MetricSpec("ece_pooled", "ECE pooled", "", 4, "lower"),
    MetricSpec("brier", "Brier", "", 4, "lower"),
    # Dice at the 0.5 operating point (prediction >= 0.5 against soft label >= 0.5, the
    # majority vote): compare's Dice, since Table 2's Dice (the mean over t = 0.1 ... 0.9) is
    # per case the QUBIQ score itself
    MetricSpec("dice_at_0.5", "Dice@0.5", PERCENT, 2, "higher", title="Dice at t = 0.5"),
    # multi-class data, over all classes at once
    MetricSpec("classwise_ece", "Class-wise ECE", "", 4, "lower", title="class-wise ECE"),
    MetricSpec("multiclass_brier", "Multi-class Brier", "", 4, "lower", title="multi-class Brier"),
)


# the LIDC benchmark's scores of N hypotheses per case (softseg.evaluation.sampled), one key
# per N: ged_16, hmiou_16, diversity_16, ...; ged_map is the D²_GED of the map at 0.5 alone
_SAMPLED = re.compile(r"^(ged|hmiou|diversity)_([1-9][0-9]*)$")
GED_MAP = MetricSpec("ged_map", "D²_GED one map", "", 4, "lower", title="D²_GED of the map at 0.5 (i = i′ kept)")


def sampled_spec(key: str) -> MetricSpec | None:
    """The spec of a hypothesis score key (``ged_16``, ``hmiou_100``, ``diversity_16``,
    ``ged_map``), or None for any other key."""
    if key == GED_MAP.key:
        return GED_MAP
    match = _SAMPLED.match(key)
    if match is None:
        return None
    kind, n = match.group(1), match.group(2)
    if kind == "ged":
        return MetricSpec(key, f"D²_GED {n}", "", 4, "lower", title=f"D²_GED over {n} hypotheses (i = i′ kept)")
    if kind == "hmiou":
        return MetricSpec(key, f"HM-IoU {n}", PERCENT, 2, "higher", title=f"HM-IoU of {n} hypotheses")
    return MetricSpec(key, f"diversity {n}", "", 4, title=f"diversity of {n} hypotheses (i = i′ kept)")


def spec(key: str) -> MetricSpec:
    """The :class:`MetricSpec` of ``key``; KeyError naming the known keys otherwise."""
    found = SPECS.get(key) or sampled_spec(key)
    if found is None:
        raise KeyError(f"no metric {key!r} in the registry; known: {', '.join(SPECS)}, "
                       "ged_map, ged_N, hmiou_N, diversity_N")
    return found


def specs(*keys: str) -> tuple[MetricSpec, ...]:
    """The specs of ``keys``, in that order (a table's columns)."""
    return tuple(spec(k) for k in keys)


def better_sentence(keys: Sequence[str]) -> str:
    """Which way is better for ``keys``, as words for a table's note: "higher is better for
    Dice@0.5 and QUBIQ; lower for ECE and E[1−IoU(y,ŷ)]" (metrics with no direction left out)."""
    parts = []
    for direction in ("higher", "lower"):
        names = [spec(k).name for k in keys if spec(k).better == direction]
        if names:
            joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            parts.append(f"{direction}{' is better' if not parts else ''} for {joined}")
    return "; ".join(parts)
