"""The paper's reference numbers and the QUBIQ 2021 task list, as data.

Source: Lourenço-Silva & Oliveira, MICCAI 2021 QUBIQ (docs SPEC.md, paper Tables 2 and 3).
Values are kept in the paper's display units: Dice, precision, recall and E[Dice] in percent,
HD95 in pixels, the Table 3 distances as fractions. The paper's "±" is the spread over the
nine thresholds (Table 2) and over cases (Table 3).

Metric keys match the evaluation folder's column names (``metrics.csv`` / ``cases.csv``) and
:mod:`softseg.evaluation.registry`: our own values arrive as fractions and are shown as the
registry says (percent metrics x 100).
"""

from __future__ import annotations

from dataclasses import dataclass

from softseg.errors import SoftsegError
from softseg.evaluation.registry import specs
from softseg.model.config import task_name

# The columns of the paper's tables; each metric's label, unit, decimals and direction are
# its entry in softseg.evaluation.registry.
TABLE2 = specs("dice", "precision", "recall", "hd95")
TABLE3 = specs("ged2", "pred_rater_dist", "rater_diversity", "expected_dice")
CALIBRATION = specs("qubiq", "ece", "brier")  # not the paper's; compare shows them after Tables 2 and 3


@dataclass(frozen=True)
class QubiqTask:
    """One of the paper's seven tasks: a QUBIQ dataset folder and a task id within it."""

    dataset: str  # folder name in the QUBIQ release: "brain-growth", "brain-tumor", ...
    task: str  # "task01", "task02", ...
    label: str  # the paper's row name

    @property
    def key(self) -> str:
        """The task's one name (folders, ``--tasks``, its preset in
        :data:`softseg.model.config.PRESETS`): ``brain-tumor-task02``."""
        return f"{self.dataset}-{self.task}"


QUBIQ_TASKS = (
    QubiqTask("brain-growth", "task01", "Brain Growth"),
    QubiqTask("brain-tumor", "task01", "Brain Tumor 1"),
    QubiqTask("brain-tumor", "task02", "Brain Tumor 2"),
    QubiqTask("brain-tumor", "task03", "Brain Tumor 3"),
    QubiqTask("kidney", "task01", "Kidney"),
    QubiqTask("prostate", "task01", "Prostate 1"),
    QubiqTask("prostate", "task02", "Prostate 2"),
)
QUBIQ_DATASETS = ("brain-growth", "brain-tumor", "kidney", "prostate")

# (mean, std) per task label and metric key, in the paper's units.
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "Brain Growth": {"dice": (93.19, 1.83), "precision": (93.33, 2.55), "recall": (93.16, 1.84), "hd95": (3.53, 0.73)},
    "Brain Tumor 1": {"dice": (92.90, 1.09), "precision": (93.79, 1.01), "recall": (89.04, 2.30), "hd95": (6.84, 2.37)},
    "Brain Tumor 2": {"dice": (65.06, 20.27), "precision": (67.18, 21.75), "recall": (63.74, 19.57), "hd95": (15.15, 13.18)},
    "Brain Tumor 3": {"dice": (85.73, 4.88), "precision": (97.67, 1.78), "recall": (78.34, 6.67), "hd95": (2.27, 2.15)},
    "Kidney": {"dice": (96.04, 1.43), "precision": (96.57, 1.64), "recall": (95.65, 2.53), "hd95": (7.67, 3.65)},
    "Prostate 1": {"dice": (95.64, 0.04), "precision": (94.13, 1.05), "recall": (97.43, 0.78), "hd95": (16.18, 7.58)},
    "Prostate 2": {"dice": (93.56, 4.58), "precision": (91.78, 4.09), "recall": (95.70, 5.32), "hd95": (12.48, 5.46)},
}
PAPER_TABLE3: dict[str, dict[str, tuple[float, float]]] = {
    "Brain Growth": {"ged2": (0.1323, 0.0077), "pred_rater_dist": (0.1876, 0.0087), "rater_diversity": (0.2429, 0.0124), "expected_dice": (89.63, 1.60)},
    "Brain Tumor 1": {"ged2": (0.1455, 0.0622), "pred_rater_dist": (0.1393, 0.0492), "rater_diversity": (0.1330, 0.0497), "expected_dice": (92.39, 3.78)},
    "Brain Tumor 2": {"ged2": (0.6731, 0.5631), "pred_rater_dist": (0.6843, 0.3167), "rater_diversity": (0.6955, 0.0835), "expected_dice": (34.27, 43.45)},
    "Brain Tumor 3": {"ged2": (0.2515, 0.1928), "pred_rater_dist": (0.2272, 0.1523), "rater_diversity": (0.2030, 0.1306), "expected_dice": (86.25, 10.22)},
    "Kidney": {"ged2": (0.0613, 0.0077), "pred_rater_dist": (0.0814, 0.0105), "rater_diversity": (0.1015, 0.0150), "expected_dice": (95.73, 1.59)},
    "Prostate 1": {"ged2": (0.0950, 0.0692), "pred_rater_dist": (0.1096, 0.0569), "rater_diversity": (0.1242, 0.0478), "expected_dice": (94.07, 3.80)},
    "Prostate 2": {"ged2": (0.0988, 0.0907), "pred_rater_dist": (0.1431, 0.0679), "rater_diversity": (0.1874, 0.0828), "expected_dice": (90.99, 15.25)},
}


def select_tasks(names: list[str] | None) -> tuple[QubiqTask, ...]:
    """The tasks named by ``--tasks``: task keys (``kidney-task01``) or dataset names (``brain-tumor``
    = its three tasks), in the paper's order. ``None`` or empty selects all seven.

    Raises :class:`SoftsegError` naming the unknown entry and the known names.
    """
    if not names:
        return QUBIQ_TASKS
    wanted: set[str] = set()
    for name in names:
        matches = [t.key for t in QUBIQ_TASKS if t.dataset == name]
        if not matches:
            try:
                matches = [task_name(name)]  # a task, in any accepted spelling (with a hint)
            except SoftsegError as error:
                known = ", ".join(list(QUBIQ_DATASETS) + [t.key for t in QUBIQ_TASKS])
                raise SoftsegError(f"--tasks: unknown QUBIQ task {name!r}; expected one of: {known}") from error
        wanted.update(matches)
    return tuple(t for t in QUBIQ_TASKS if t.key in wanted)
