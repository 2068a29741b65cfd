"""Experiments: the tables beside the paper, methods side by side, and the commands end to end."""

import csv
import json
import math

import pytest

from softseg._paper import PAPER_TABLE2, PAPER_TABLE3, QUBIQ_TASKS, select_tasks
from softseg._tables import Cell, aggregate, below_diversity, write_comparison, write_paper_tables
from softseg.errors import SoftsegError


# --- tables on hand-made numbers -------------------------------------------------------


def test_aggregate_mean_population_std_and_undefined():
    cell = aggregate([0.90, 0.94, float("nan")], spreads=[0.02, 0.04])
    assert cell.mean == pytest.approx(0.92) and cell.n == 2
    assert cell.std == pytest.approx(0.02)  # population std of (0.90, 0.94)
    assert cell.spread == pytest.approx(0.03)
    empty = aggregate([float("nan")])
    assert math.isnan(empty.mean) and empty.n == 0


def test_paper_table_difference_per_cell(tmp_path):
    kidney = {
        "dice": Cell(0.9500, 0.0100, 3), "precision": Cell(0.9657, 0.0, 3), "recall": Cell(0.90, 0.0, 3),
        "hd95": Cell(8.67, 0.5, 3), "ged2": Cell(0.0713, 0.001, 3), "pred_rater_dist": Cell(0.08, 0.0, 3),
        "rater_diversity": Cell(0.1015, 0.0, 3), "expected_dice": Cell(0.9, 0.0, 3),
    }
    write_paper_tables(tmp_path, {"Kidney": kidney}, note="3 seeds")
    rows = json.loads((tmp_path / "tables.json").read_text())["rows"]
    by_metric = {r["metric"]: r for r in rows}
    # paper Kidney: Dice 96.04, precision 96.57, HD95 7.67, D²_GED 0.0613
    assert by_metric["dice"]["ours_mean"] == pytest.approx(95.00)
    assert by_metric["dice"]["diff"] == pytest.approx(95.00 - 96.04)
    assert by_metric["precision"]["diff"] == pytest.approx(0.0, abs=1e-9)
    assert by_metric["hd95"]["diff"] == pytest.approx(1.00)
    assert by_metric["ged2"]["diff"] == pytest.approx(0.0100)
    assert by_metric["expected_dice"]["paper_mean"] == 95.73
    md = (tmp_path / "tables.md").read_text()
    assert "| Kidney | 95.00 ± 1.00 | 96.04 ± 1.43 | −1.04 |" in md
    assert "8.67 ± 0.50 | 7.67 ± 3.65 | +1.00" in md
    assert "0.0713 ± 0.0010 | 0.0613 ± 0.0077 | +0.0100" in md
    assert "3 seeds" in md
    with (tmp_path / "tables.csv").open() as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == 8 and float(csv_rows[0]["diff"]) == pytest.approx(-1.04)


def test_paper_table_missing_metric_is_na(tmp_path):
    write_paper_tables(tmp_path, {"Brain Growth": {"dice": Cell(0.93, 0.0, 1)}})
    md = (tmp_path / "tables.md").read_text()
    assert "| Brain Growth | 93.00 ± 0.00 | 93.19 ± 1.83 | −0.19 | n/a | 93.33 ± 2.55 | n/a |" in md
    rows = json.loads((tmp_path / "tables.json").read_text())["rows"]
    assert [r["diff"] for r in rows if r["metric"] == "hd95"] == [None]  # NaN -> null


def test_comparison_side_by_side_and_diversity_verdict(tmp_path):
    common = {"rater_diversity": Cell(0.20, 0.0, 2)}
    results = {"cells": {
        "soft": {**common, "pred_rater_dist": Cell(0.15, 0.01, 2), "ece": Cell(0.012, 0.002, 2), "dice": Cell(0.8, 0.0, 2)},
        "majority": {**common, "pred_rater_dist": Cell(0.25, 0.01, 2), "ece": Cell(0.05, 0.0, 2)},
        "random_rater": {"dice": Cell(0.7, 0.0, 2)},
    }}
    write_comparison(tmp_path, results, note="2 folds")
    rows = json.loads((tmp_path / "comparison.json").read_text())["rows"]
    verdict = {r["method"]: r["below_diversity"] for r in rows}
    assert verdict == {"soft": True, "majority": False, "random_rater": None}
    md = (tmp_path / "comparison.md").read_text()
    soft_line = next(line for line in md.splitlines() if line.startswith("| soft |"))
    assert "80.00 ± 0.00" in soft_line and "0.0120 ± 0.0020" in soft_line and soft_line.endswith("| yes |")
    assert next(line for line in md.splitlines() if line.startswith("| majority |")).endswith("| no |")
    assert "## cells" in md and "2 folds" in md
    assert below_diversity({"pred_rater_dist": Cell(0.2, 0, 1), "rater_diversity": Cell(0.2, 0, 1)}) is False


def test_paper_numbers_match_spec():
    # D²_GED = 2·E[d(y, ŷ)] − diversity holds for every row the paper printed (to rounding)
    for label, row in PAPER_TABLE3.items():
        assert row["ged2"][0] == pytest.approx(2 * row["pred_rater_dist"][0] - row["rater_diversity"][0], abs=2e-4)
    assert set(PAPER_TABLE2) == set(PAPER_TABLE3) == {t.label for t in QUBIQ_TASKS}


def test_task_selection():
    assert [t.key for t in select_tasks(["brain-tumor"])] == [
        "brain-tumor-task01", "brain-tumor-task02", "brain-tumor-task03"]
    assert [t.label for t in select_tasks(["prostate-task02", "kidney"])] == ["Kidney", "Prostate 2"]
    assert len(select_tasks(None)) == 7
    with pytest.raises(SoftsegError, match="--tasks: unknown QUBIQ task 'liver'; expected one of: brain-growth"):
        select_tasks(["liver"])


# --- QUBIQ look-alike ------------------------------------------------------------------


def _disk(size, centre, radius):
    import numpy as np

    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def write_qubiq_lookalike(root, datasets=("kidney", "brain-growth"), n_train=4, n_val=2, size=32, release=True,
                          n_tasks=None):
    """A tiny QUBIQ 2021 look-alike: bright discs, 3 raters drawing slightly different radii."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    for name in datasets:
        tasks = (n_tasks or {}).get(name, 1)
        for split, numbers in (("Training", range(1, n_train + 1)), ("Validation", range(n_train + 1, n_train + n_val + 1))):
            top = ("training_data_v3" if split == "Training" else "validation_data_qubiq2021") if release else ""
            for number in numbers:
                folder = root / top / name / split / f"case{number:02d}"
                folder.mkdir(parents=True)
                centre = rng.integers(10, size - 10, 2)
                radius = int(rng.integers(5, 8))
                image = _disk(size, centre, radius) * 1.0 + rng.normal(0, 0.2, (size, size))
                nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), folder / "image.nii.gz")
                for t in range(1, tasks + 1):
                    for r in range(1, 4):
                        mask = _disk(size, centre, radius - 3 + r).astype(np.uint8)
                        nib.save(nib.Nifti1Image(mask, np.eye(4)), folder / f"task{t:02d}_seg{r:02d}.nii.gz")
    return root


@pytest.mark.parametrize("release", [True, False])
def test_qubiq_root_both_layouts(tmp_path, release):
    from softseg._qubiq_root import locate_all
    from softseg.experiments import _qubiq_dataset
    from softseg._paper import select_tasks

    root = write_qubiq_lookalike(tmp_path, datasets=("kidney",), release=release)
    found = locate_all(root, ["kidney"])
    dataset = _qubiq_dataset(found["kidney"], select_tasks(["kidney"])[0])
    assert [c.case_id for c in dataset.cases] == [f"case{i:02d}" for i in range(1, 7)]
    assert [c.split for c in dataset.cases] == ["Training"] * 4 + ["Validation"] * 2
    assert dataset.tasks == ("task01",)


def test_qubiq_root_missing_dataset_is_named(tmp_path):
    from softseg._qubiq_root import locate_all

    root = write_qubiq_lookalike(tmp_path, datasets=("kidney",))
    with pytest.raises(SoftsegError, match=r"QUBIQ dataset 'prostate' has no Training / Validation split .*"
                                           r"training_data_v3/prostate/Training.*--tasks"):
        locate_all(root, ["kidney", "prostate"])
    with pytest.raises(SoftsegError, match="QUBIQ_ROOT not found"):
        locate_all(tmp_path / "nowhere", ["kidney"])
