"""Experiments: the tables beside the paper, methods side by side, and the commands end to end."""

import csv
import json
import math

import pytest

from softseg.experiments.paper import PAPER_TABLE2, PAPER_TABLE3, QUBIQ_TASKS, select_tasks
from softseg.experiments.cells import Cell, aggregate
from softseg.experiments.compare.tables import below_diversity, write_comparison
from softseg.experiments.paper_tables import write_paper_tables
from softseg.errors import SoftsegError

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: a second thread only waits


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


def test_calibration_over_all_classes_is_averaged_over_cases_then_seeds_and_comes_last(tmp_path):
    from softseg.experiments.compare.outputs import read_class_values
    from softseg.experiments.compare.tables import class_cells

    # two seeds of one method, per case: seed 0 has cases a, b; seed 1 has a and an undefined b
    seeds = [{"all classes": {"a": {"classwise_ece": 0.10, "multiclass_brier": 0.4},
                              "b": {"classwise_ece": 0.30, "multiclass_brier": 0.2}}},
             {"all classes": {"a": {"classwise_ece": 0.40, "multiclass_brier": 0.6},
                              "b": {"classwise_ece": math.nan, "multiclass_brier": 0.4}}}]
    cells = class_cells(seeds)
    # class-wise ECE: seed means 0.2 and 0.4 -> 0.3 ± 0.1; spread = mean of the std over cases (0.1, 0)
    assert cells["classwise_ece"].mean == pytest.approx(0.3) and cells["classwise_ece"].std == pytest.approx(0.1)
    assert cells["classwise_ece"].spread == pytest.approx(0.05) and cells["classwise_ece"].n == 2
    assert cells["multiclass_brier"].mean == pytest.approx(0.4) and cells["multiclass_brier"].std == pytest.approx(0.1)

    write_comparison(tmp_path, {"all classes": {"soft": cells}, "rim": {"soft": {"dice": Cell(0.8, 0.0, 1)}}})
    rows = json.loads((tmp_path / "comparison.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["rim", "all classes"] and "below_diversity" not in rows[1]
    md = (tmp_path / "comparison.md").read_text()
    assert md.index("## rim") < md.index("## all classes")
    assert "| soft | 0.3000 ± 0.1000 | 0.4000 ± 0.1000 |" in md

    (tmp_path / "eval").mkdir()
    with pytest.raises(SoftsegError, match=r"eval/classes.csv: expected the calibration over all classes"):
        read_class_values(tmp_path / "eval")
    (tmp_path / "eval" / "classes.csv").write_text("case,classwise_ece,brier\nc1,0.25,\n")
    assert read_class_values(tmp_path / "eval") == {
        "all classes": {"c1": {"classwise_ece": 0.25, "multiclass_brier": pytest.approx(math.nan, nan_ok=True)}}}
    (tmp_path / "eval" / "classes.csv").write_text("case,brier\nc1,0.5\n")
    with pytest.raises(SoftsegError, match=r"classes.csv: expected columns .*missing classwise_ece"):
        read_class_values(tmp_path / "eval")


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
    from softseg.experiments.qubiq_release import locate_all
    from softseg.experiments.reproduce import _qubiq_dataset
    from softseg.experiments.paper import select_tasks

    root = write_qubiq_lookalike(tmp_path, datasets=("kidney",), release=release)
    found = locate_all(root, ["kidney"])
    dataset = _qubiq_dataset(found["kidney"], select_tasks(["kidney"])[0])
    assert [c.case_id for c in dataset.cases] == [f"case{i:02d}" for i in range(1, 7)]
    assert [c.split for c in dataset.cases] == ["Training"] * 4 + ["Validation"] * 2
    assert dataset.tasks == ("task01",)


def test_qubiq_root_missing_dataset_is_named(tmp_path):
    from softseg.experiments.qubiq_release import locate_all

    root = write_qubiq_lookalike(tmp_path, datasets=("kidney",))
    with pytest.raises(SoftsegError, match=r"QUBIQ dataset 'prostate' has no Training / Validation split .*"
                                           r"training_data_v3/prostate/Training.*--tasks"):
        locate_all(root, ["kidney", "prostate"])
    with pytest.raises(SoftsegError, match="QUBIQ_ROOT not found"):
        locate_all(tmp_path / "nowhere", ["kidney"])


# --- end to end (tiny: 32 px, 1 epoch, no pretrained weights) ---------------------------

TINY = ["--epochs", "1", "--crop-size", "32", "--encoder-weights", "none", "--device", "cpu"]


@pytest.fixture
def tiny_config(tmp_path):
    """Two images per step and no augmented copies: the code paths of the paper's batch, at a
    fraction of the CPU time."""
    path = tmp_path / "tiny.yaml"
    path.write_text("batch_size: 2\naug_copies: 0\nprecision: fp32\n")
    return ["--config", str(path)]


def _summary(eval_dir):
    return json.loads((eval_dir / "summary.json").read_text())


def test_demo_end_to_end_and_refusal_to_overwrite(tmp_path, capsys):
    from softseg.cli import main
    from softseg.experiments.demo import DemoSettings, demo

    out = tmp_path / "demo"
    settings = DemoSettings(epochs=1, image_size=32, crop_size=32, n_train=4, n_val=2, device="cpu",
                            batch_size=2, aug_copies=0)
    # an earlier demo's stale output and a file of the user's: --overwrite replaces only the former
    (out / "eval").mkdir(parents=True)
    (out / "eval" / "summary.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SoftsegError, match=r"output folder is not empty .*pass --overwrite"):
        demo(out, settings, progress=False)
    assert main(["demo", "--out", str(out)]) == 2
    assert "output folder is not empty" in capsys.readouterr().err

    result = demo(out, settings, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert result.report == out / "report.html" and "<html" in result.report.read_text().lower()
    saved = json.loads((out / "demo.json").read_text())
    summary = _summary(out / "eval")
    assert set(summary["cases"]) == {"case05", "case06"}  # the Validation split, nothing else
    for task in ("task01", "task02"):
        entry = summary["tasks"][task]
        assert saved["headline"][task]["qubiq"] == pytest.approx(entry["qubiq"]["mean"])
        assert saved["headline"][task]["ece"] == pytest.approx(entry["calibration"]["ece"]["mean"])
        assert saved["headline"][task]["ged2"] == pytest.approx(entry["table3"]["ged2"]["mean"])
        assert saved["headline"][task]["dice_0.5"] == pytest.approx(entry["table2_by_threshold"]["dice"][4])
        assert 0.0 <= saved["headline"][task]["qubiq"] <= 1.0
    assert (out / "run" / "seed0" / "checkpoints" / "last.pt").is_file()
    assert f"report: {out / 'report.html'}" in result.text()
    assert set(saved["seconds"]) == {"data", "train", "predict", "evaluate", "report"}


def test_reproduce_end_to_end_on_lookalike_with_resume(tmp_path, capsys, tiny_config):
    from softseg.cli import main

    root = write_qubiq_lookalike(tmp_path / "qubiq", datasets=("kidney", "brain-growth"))
    out = tmp_path / "repro"
    args = ["reproduce", str(root), "--out", str(out), "--tasks", "kidney", "--seeds", "0", *TINY, *tiny_config]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| Kidney |" in printed and "tables:" in printed
    summary = _summary(out / "kidney-task01" / "eval" / "seed0")
    assert summary["cases"] == ["case05", "case06"]  # official Validation split only
    rows = {r["metric"]: r for r in json.loads((out / "tables.json").read_text())["rows"]}
    dice = summary["tasks"]["task01"]["table2"]["dice"]["mean"]
    assert rows["dice"]["ours_mean"] == pytest.approx(100 * dice)
    assert rows["dice"]["diff"] == pytest.approx(100 * dice - 96.04)
    assert rows["dice"]["n_seeds"] == 1 and rows["dice"]["ours_std"] == 0.0
    assert rows["ged2"]["ours_mean"] == pytest.approx(summary["tasks"]["task01"]["table3"]["ged2"]["mean"])
    run = out / "kidney-task01" / "seed0"
    config = json.loads((run / "config.json").read_text())
    assert config["preset"] == "kidney-task01" and config["vflip"] == 0.0 and config["tasks"] == ["task01"]
    assert config["epochs"] == 1 and config["crop_size"] == 32 and config["batch_size"] == 2

    # rerun without --resume: refused; with --resume a finished task is skipped
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    result = out / "kidney-task01" / "result.json"
    stamp = result.stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    assert result.stat().st_mtime_ns == stamp
    # a half-finished task (trained, never evaluated) resumes without training again
    import shutil

    result.unlink()
    shutil.rmtree(out / "kidney-task01" / "eval")
    shutil.rmtree(out / "kidney-task01" / "predictions")
    checkpoint = (run / "checkpoints" / "last.pt").stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    assert (run / "checkpoints" / "last.pt").stat().st_mtime_ns == checkpoint
    assert _summary(out / "kidney-task01" / "eval" / "seed0")["cases"] == ["case05", "case06"]
    # another task later, into the same folder: the tables keep the earlier one
    assert main(args[:5] + ["brain-growth"] + args[6:] + ["--resume"]) == 0
    tables = (out / "tables.md").read_text()
    assert "| Kidney |" in tables and "| Brain Growth |" in tables


def write_rater_folders(root, patients=3, images_per_patient=2, size=32, raters=3):
    """A rater-folder dataset (images/<case>.png, raters/<case>/<rater>.png) whose case ids
    name their patient: p0_a, p0_b, p1_a, ..."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    for p in range(patients):
        for i in range(images_per_patient):
            case = f"p{p}_{'abcdefgh'[i]}"
            centre, radius = rng.integers(10, size - 10, 2), int(rng.integers(5, 8))
            image = 60 + 120 * _disk(size, centre, radius) + rng.normal(0, 10, (size, size))
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"{case}.png")
            for r in range(raters):
                folder = root / "raters" / case
                folder.mkdir(parents=True, exist_ok=True)
                mask = _disk(size, centre, radius - 2 + r).astype(np.uint8) * 255
                Image.fromarray(mask).save(folder / f"rater{r}.png")
    return root


def test_compare_two_folds_patient_level(tmp_path, capsys, tiny_config):
    from softseg.cli import main

    data = write_rater_folders(tmp_path / "data")
    out = tmp_path / "cmp"
    args = ["compare", str(data), "--out", str(out), "--folds", "2", "--group-regex", r"^(p\d+)_",
            "--seeds", "0", "--methods", "soft", "random_rater:ce", *TINY, *tiny_config]
    # one fold first (a fixed split drawn from the manifest), then the rest with --resume
    assert main(args + ["--run-folds", "0"]) == 0
    manifest = json.loads((out / "folds.json").read_text())
    first = _summary(out / "soft-ce" / "seed0" / "eval-fold0")
    assert sorted(first["cases"]) == sorted(manifest["folds"][0]["test"])
    assert not (out / "soft-ce" / "seed0" / "fold1").exists()
    fold0_checkpoint = (out / "soft-ce" / "seed0" / "fold0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args + ["--resume"]) == 0
    assert (out / "soft-ce" / "seed0" / "fold0" / "checkpoints" / "last.pt").stat().st_mtime_ns == fold0_checkpoint
    printed = capsys.readouterr().out
    assert manifest["k"] == 2 and manifest["grouping"] == r"regex ^(p\d+)_"
    for fold in manifest["folds"]:
        patients = {c.split("_")[0] for c in fold["test"]}
        assert not patients & {c.split("_")[0] for c in fold["train"]}  # patient-level
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["soft:ce", "random_rater:ce"]  # in --methods order
    assert not (out / "majority-ce").exists()
    all_cases = sorted(f"p{p}_{x}" for p in range(3) for x in "ab")
    for row in rows:
        method_dir = out / row["method"].replace(":", "-") / "seed0"
        summary = _summary(method_dir / "eval")
        assert sorted(summary["cases"]) == all_cases  # held-out predictions of both folds pooled
        for fold in (0, 1):  # each fold's model trained on the other fold's patients only
            split = json.loads((method_dir / f"fold{fold}" / "split.json").read_text())
            assert split["train"] == manifest["folds"][fold]["train"]
        config = json.loads((method_dir / "fold0" / "config.json").read_text())
        assert f"{config['label_mode']}:{config['loss']}" == row["method"] and config["seed"] == 0
        entry = summary["tasks"]["task01"]
        assert row["qubiq_mean"] == pytest.approx(100 * entry["qubiq"]["mean"])
        assert row["ece_mean"] == pytest.approx(entry["calibration"]["ece"]["mean"])
        pred, div = entry["table3"]["pred_rater_dist"]["mean"], entry["table3"]["rater_diversity"]["mean"]
        assert row["below_diversity"] == (pred < div)
    assert "| soft:ce |" in printed and "| random_rater:ce |" in printed
    folds = [{"name": f"fold{f['fold']}", "test": f["test"]} for f in manifest["folds"]]
    _check_per_fold_and_statistics(out, folds, ["soft:ce", "random_rater:ce"], seeds=[0])


def test_compare_refusals(tmp_path, capsys):
    from softseg.cli import main
    from softseg.data.datasets import load_dataset
    from softseg.experiments.compare import CompareOptions, compare

    data = write_rater_folders(tmp_path / "data", patients=2, images_per_patient=1)
    dataset = load_dataset(data)
    with pytest.raises(SoftsegError, match="no official Training/Validation split .* pass --folds K"):
        compare(dataset, tmp_path / "a", CompareOptions(seeds=(0,)))
    with pytest.raises(SoftsegError, match=r"--folds 3: only 2 patient\(s\)"):
        compare(dataset, tmp_path / "b", CompareOptions(seeds=(0,), folds=3))
    with pytest.raises(SoftsegError, match="--methods: expected LABEL.*soft, majority, random_rater, staple"
                                           ".*'dice': label mode 'dice' is not one of"):
        compare(dataset, tmp_path / "c", CompareOptions(methods=("dice",)))
    with pytest.raises(SoftsegError, match="--seeds: expected at least one seed"):
        compare(dataset, tmp_path / "d", CompareOptions(seeds=()))
    with pytest.raises(SoftsegError, match=r"--run-folds \[2\]: expected fold numbers 0 ... 1"):
        compare(dataset, tmp_path / "f", CompareOptions(seeds=(0,), folds=2, run_folds=(0, 2)))
    with pytest.raises(SoftsegError, match="--run-folds selects folds of --folds K"):
        compare(dataset, tmp_path / "g", CompareOptions(seeds=(0,), run_folds=(0,)))
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "x").write_text("")
    assert main(["compare", str(data), "--out", str(tmp_path / "e"), "--folds", "2"]) == 2
    assert "output folder is not empty (an earlier compare run?); choose another --out or pass --resume" \
        in capsys.readouterr().err


def _csv_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cases_csv(eval_dir):
    """{(task, case): row} of an evaluation's cases.csv, read independently of softseg."""
    return {(r["task"], r["case"]): r for r in _csv_rows(eval_dir / "cases.csv")}


def _check_per_fold_and_statistics(out, folds, methods, seeds, fraction_dir="", tag=""):
    """per_fold.csv and statistics.csv recomputed from each evaluation's cases.csv: fold means
    over the fold's held-out cases; differences paired by case id after averaging the seeds,
    scipy's Wilcoxon p."""
    import numpy as np
    from scipy import stats

    per_fold = _csv_rows(out / "per_fold.csv")
    per_case = {}
    for method in methods:
        for seed in seeds:
            eval_dir = out / method.replace(":", "-") / f"seed{seed}" / fraction_dir / f"eval{tag}"
            per_case[method, seed] = rows = _cases_csv(eval_dir)
            for r in _csv_rows(eval_dir / "metrics.csv"):  # Dice at t = 0.5, per case
                if float(r["threshold"]) == 0.5:
                    rows[r["task"], r["case"]]["dice_at_0.5"] = r["dice"]
            for fold in folds:
                line = next(r for r in per_fold if (r["method"], r["seed"], r["fold"], float(r["fraction"]))
                            == (method, str(seed), fold["name"], 1.0))
                assert int(line["n_cases"]) == len(fold["test"])
                for metric in ("dice_at_0.5", "qubiq", "ece", "pred_rater_dist"):
                    expected = np.mean([float(rows["task01", c][metric]) for c in fold["test"]])
                    assert float(line[metric]) == pytest.approx(expected)
    statistics = _csv_rows(out / "statistics.csv")
    reference = methods[0]
    assert {(r["method"], r["metric"]) for r in statistics} == {
        (m, k) for m in methods[1:] for k in ("dice_at_0.5", "qubiq", "ece", "pred_rater_dist")}
    for row in statistics:
        def averaged(method, metric):
            by_case = {}
            for seed in seeds:
                for (task, case), r in per_case[method, seed].items():
                    by_case.setdefault(case, []).append(float(r[metric]))
            return {case: np.mean(v) for case, v in by_case.items()}

        mine, ref = averaged(row["method"], row["metric"]), averaged(reference, row["metric"])
        d = np.array([mine[c] - ref[c] for c in sorted(ref)])
        assert int(row["n_pairs"]) == len(d) and row["reference"] == reference
        assert float(row["mean_difference"]) == pytest.approx(d.mean())
        p = 1.0 if not np.any(d) else stats.wilcoxon(d).pvalue
        assert float(row["p_value"]) == pytest.approx(p)
        assert float(row["p_holm"]) == pytest.approx(p)  # one method against the reference: Holm keeps p
    md = (out / "comparison.md").read_text()
    assert "# Paired differences against the reference" in md and "percentile bootstrap CI" in md
    assert "[paired-task01.png](paired-task01.png)" in md
    assert (out / "paired-task01.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_methods_are_label_and_loss():
    from softseg.experiments.compare.methods import Method, parse_methods

    methods, reference = parse_methods(["soft", "majority:ce+dml", "soft:ce", "staple"], "soft")
    assert [m.name for m in methods] == ["soft:ce", "majority:ce+dml", "staple:ce"]  # soft = soft:ce, once
    assert [m.folder for m in methods] == ["soft-ce", "majority-ce+dml", "staple-ce"]
    assert reference == Method("soft", "ce")
    config = methods[1].config(__import__("softseg").TrainConfig(), seed=3)
    assert (config.label_mode, config.loss, config.seed) == ("majority", "ce+dml", 3)
    with pytest.raises(SoftsegError, match=r"LOSS one of ce, dml, ce\+dml.*'soft:dice': loss 'dice' is not one of"
                                           r".*'vote': label mode 'vote'"):
        parse_methods(["soft:dice", "vote"])
    with pytest.raises(SoftsegError, match=r"--reference majority:ce: not among the methods \(soft:ce\)"):
        parse_methods(["soft"], "majority")
    with pytest.raises(SoftsegError, match="none given"):
        parse_methods([])


def test_inference_variants_reuse_the_trained_method():
    from softseg.experiments.compare.methods import Method, parse_methods

    methods, _ = parse_methods(["soft:ce", "soft@tta", "majority:dml@tta+ts", "soft:ce@ts"])
    assert [m.name for m in methods] == ["soft:ce", "soft:ce@tta", "majority:dml@tta+ts", "soft:ce@ts"]
    assert [m.folder for m in methods] == ["soft-ce", "soft-ce@tta", "majority-dml@tta+ts", "soft-ce@ts"]
    assert [m.trained for m in methods] == [Method("soft", "ce"), Method("soft", "ce"),
                                            Method("majority", "dml"), Method("soft", "ce")]
    assert [(m.tta, m.temperature) for m in methods] == [
        ("none", False), ("flip", False), ("flip", True), ("none", True)]
    with pytest.raises(SoftsegError, match=r"VARIANT one of tta, ts, tta\+ts.*'soft@tt': inference variant 'tt'"):
        parse_methods(["soft@tt"])


def test_crossfit_halves_partition_seeded_and_refuse_one_case():
    from softseg.experiments.compare.variants import halves

    ids = [f"c{i}" for i in range(7)]
    a, b = halves(ids, 0, "fold0")
    assert sorted(a + b) == sorted(ids) and not set(a) & set(b) and (len(a), len(b)) == (3, 4)
    assert [c for c in ids if c in a] == a  # each half keeps the given order
    assert halves(ids, 0, "fold0") == (a, b)
    assert halves(ids, 0, "fold1") != (a, b) or halves(ids, 1, "fold0") != (a, b)
    with pytest.raises(SoftsegError, match="fold2: 1 held-out case.*needs at least 2"):
        halves(["c0"], 0, "fold2")


def test_compare_variants_predict_with_the_trained_models(tmp_path, tiny_config):
    from softseg.cli import main
    from softseg.experiments.compare.variants import halves
    from softseg.inference.outputs import read_record

    data = write_rater_folders(tmp_path / "data", patients=4)
    out = tmp_path / "cmp"
    assert main(["compare", str(data), "--out", str(out), "--folds", "2", "--group-regex", r"^(p\d+)_",
                 "--seeds", "0", "--methods", "soft", "soft@tta", "soft@ts", "--no-progress",
                 *TINY, *tiny_config]) == 0
    manifest = json.loads((out / "folds.json").read_text())
    for variant in ("soft-ce@tta", "soft-ce@ts"):
        seed_dir = out / variant / "seed0"
        assert not (seed_dir / "fold0").exists() and not (seed_dir / "fold1").exists()  # no training
        assert len(_cases_csv(seed_dir / "eval")) == 8
    record = read_record(out / "soft-ce@tta" / "seed0" / "predictions" / "predictions.json")
    assert record["tta"]["mode"] == "flip"
    temperatures = json.loads((out / "soft-ce@ts" / "seed0" / "temperatures.json").read_text())
    for fold in manifest["folds"]:
        name = f"fold{fold['fold']}"
        entry = temperatures[name]
        assert tuple(entry["halves"]) == tuple(map(list, halves(fold["test"], 0, name)))
        assert all(t["task01"] > 0 for t in entry["fitted_on_other_half"])
    plain = read_record(out / "soft-ce" / "seed0" / "predictions" / "predictions.json")
    assert plain["temperatures"] is None and plain["tta"]["mode"] == "none"
    scaled = read_record(out / "soft-ce@ts" / "seed0" / "predictions" / "predictions.json")
    assert scaled["temperatures"] and scaled["tta"]["mode"] == "none"
    rows = {r["method"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert set(rows) == {"soft:ce", "soft:ce@tta", "soft:ce@ts"}
    stats = _csv_rows(out / "statistics.csv")
    assert {r["method"] for r in stats} == {"soft:ce@tta", "soft:ce@ts"}


def test_fraction_subsets_nested_seeded_patient_level():
    from softseg.experiments.compare.fractions import check_fractions, n_patients, nested_subsets, patient_order

    train = [f"p{p}_{x}" for p in range(10) for x in "ab"]
    patients = {c: c.split("_")[0] for c in train}
    fractions = check_fractions([0.5, 0.25, 0.1])
    assert fractions == (0.1, 0.25, 0.5, 1.0)  # sorted, 1.0 always included
    subsets = nested_subsets(train, patients, fractions, seed=0, fold=1)
    sizes = [len({patients[c] for c in subsets[f]}) for f in fractions]
    assert sizes == [1, 3, 5, 10]  # ceil(f * 10) patients
    for small, large in zip(fractions, fractions[1:]):
        assert set(subsets[small]) < set(subsets[large])  # nested
    for subset in subsets.values():  # whole patients only
        assert all(f"{patients[c]}_a" in subset and f"{patients[c]}_b" in subset for c in subset)
    assert subsets[1.0] == tuple(train)  # the ordinary run's training cases, in order
    assert nested_subsets(train, patients, fractions, seed=0, fold=1) == subsets  # seeded
    assert patient_order(train, patients, 0, 1) != patient_order(train, patients, 0, 2)  # per fold
    assert patient_order(train, patients, 1, 1) != patient_order(train, patients, 0, 1)  # per split seed
    assert n_patients(0.1, 30) == 3 and n_patients(0.01, 30) == 1  # 0.1 * 30 is 3.0000000000000004
    with pytest.raises(SoftsegError, match=r"--fractions: expected fractions in \(0, 1\].*\[0, 1.5\]"):
        check_fractions([0.5, 0, 1.5])



def test_fractions_manifest_merges_and_refuses_another_seed(tmp_path):
    from softseg.experiments.compare.fractions import prepare_fractions
    from softseg.experiments.compare.splits import Fold

    patients = {f"c{i}": f"c{i}" for i in range(6)}
    folds = [Fold("fold0", 0, ("c0", "c1", "c2", "c3"), ("c4", "c5"))]
    path = tmp_path / "fractions.json"
    first = prepare_fractions(path, folds, patients, (0.5, 1.0), seed=0)
    prepare_fractions(path, folds, patients, (0.25, 1.0), seed=0)  # a later run adds a fraction
    saved = json.loads(path.read_text())["folds"]["fold0"]["train"]
    assert set(saved) == {"0.25", "0.5", "1"} and saved["0.5"] == list(first["fold0"][0.5])
    with pytest.raises(SoftsegError, match=r"fractions.json: saved training fractions \(split seed 0\) do not "
                                           r"match this run \(split seed 1\).*use a fresh --out"):
        prepare_fractions(path, folds, patients, (0.5, 1.0), seed=1, write=False)


def test_split_csv_every_problem_at_once_nothing_written(tmp_path, capsys):
    from softseg.cli import main

    data = write_rater_folders(tmp_path / "data", patients=2, images_per_patient=2)
    split = tmp_path / "split.csv"
    split.write_text("case,split\np0_a,train\np0_b,Holdout\np9_z,test\np0_a,test\n")
    out = tmp_path / "out"
    assert main(["compare", str(data), "--out", str(out), "--split-csv", str(split)]) == 2
    err = capsys.readouterr().err
    assert f"{split}: split CSV has problems" in err
    assert "row 3: unknown split 'Holdout' for case p0_b; expected Training/train or Validation/test" in err
    assert "row 4: unknown case id 'p9_z'" in err and "row 5: case p0_a listed again (first in row 2)" in err
    assert "no test case" in err
    assert not out.exists()
    split.write_text("case,split\np0_a,TRAINING\np0_b,Validation\n")  # one patient on both sides
    assert main(["compare", str(data), "--out", str(out), "--split-csv", str(split),
                 "--group-regex", r"^(p\d+)_"]) == 2
    assert "patient(s) on both sides: p0" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse: not allowed with --folds
        main(["compare", str(data), "--out", str(out), "--split-csv", str(split), "--folds", "2"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    from softseg.data.datasets import load_dataset
    from softseg.experiments.compare import CompareOptions, compare

    with pytest.raises(SoftsegError, match="--split-csv and --folds both given"):
        compare(load_dataset(data), out, CompareOptions(split_csv=split, folds=2))
    with pytest.raises(SoftsegError, match=r"--reference staple:ce: not among the methods"):
        compare(load_dataset(data), out, CompareOptions(methods=("soft",), reference="staple"))
    assert not out.exists()


def test_default_methods_soft_and_majority_with_ce_and_ce_dml_against_softsegs_default():
    from softseg.cli import build_parser
    from softseg.experiments.compare import CompareOptions
    from softseg.experiments.compare.methods import DEFAULT_METHODS, DEFAULT_REFERENCE, parse_methods
    from softseg.model.config import TrainConfig

    assert DEFAULT_METHODS == ("soft:ce", "soft:ce+dml", "majority:ce", "majority:ce+dml")
    methods, reference = parse_methods(CompareOptions().methods, CompareOptions().reference)
    assert [m.name for m in methods] == list(DEFAULT_METHODS)
    defaults = TrainConfig()  # the reference is what `softseg train` trains by default
    assert reference.name == DEFAULT_REFERENCE == f"{defaults.label_mode}:{defaults.loss}" == "soft:ce+dml"
    # without --reference: the default when among the methods, else the first method
    assert parse_methods(["majority", "soft:ce+dml"])[1].name == "soft:ce+dml"
    assert parse_methods(["majority", "soft"])[1].name == "majority:ce"
    parser = build_parser()
    args = parser.parse_args(["compare", "DATA", "--out", "OUT"])
    assert args.methods == list(DEFAULT_METHODS) and args.reference is None
    compare_help = " ".join(parser._subparsers._group_actions[0].choices["compare"].format_help().split())
    assert "default: soft:ce soft:ce+dml majority:ce majority:ce+dml" in compare_help
    assert "default: soft:ce+dml" in compare_help


def _with_partial_labels(tmp_path):
    """The demo release (4 Training, 2 Validation, 2 unlabelled Testing cases; tasks task01 and
    task02) with its first Training case labelled for task01 only."""
    import dataclasses

    from softseg.data.datasets import load_dataset
    from softseg.data.synthetic import write_demo_dataset

    loaded = load_dataset(write_demo_dataset(tmp_path / "demo", size=32, n_train=4, n_val=2, n_test=2)
                          / "demo-shapes")
    first = loaded.cases[0]
    only = {name: {"task01": getattr(first, name)["task01"]} for name in ("masks", "raters", "n_raters")}
    partial = dataclasses.replace(first, **only)
    return loaded, dataclasses.replace(loaded, cases=(partial, *loaded.cases[1:]))


def test_unlabelled_cases_never_enter_folds_fractions_or_a_fixed_split(tmp_path, caplog):
    import logging

    from softseg.experiments.compare.fractions import prepare_fractions
    from softseg.experiments.compare.splits import plan_splits

    loaded, dataset = _with_partial_labels(tmp_path)
    ids = [c.case_id for c in dataset.cases]
    testing = [c.case_id for c in dataset.cases if c.split == "Testing"]
    assert testing == ["case07", "case08"] and not dataset.cases[-1].is_labelled("task01")
    labelled = ids[1:6]  # every trained task labelled, not in the Testing split

    with caplog.at_level(logging.WARNING, logger="softseg.experiments.compare.splits"):
        plan = plan_splits(dataset, tmp_path / "out", folds=2)
    assert sorted(c for f in plan.folds for c in f.test) == labelled
    assert all(set(f.train) <= set(labelled) for f in plan.folds) and sorted(plan.patients) == labelled
    assert plan.left_out == ("case01", "case07", "case08")
    for text in (plan.note, caplog.text):
        assert "3 of the dataset's 8 cases left out of the folds" in text
        assert "1 with no label for task(s) task02 (case01)" in text
        assert "2 of the Testing split with no label for task(s) task01, task02 (case07, case08)" in text
    # the training fractions are subsets of the folds' training cases
    subsets = prepare_fractions(tmp_path / "fractions.json", plan.folds, plan.patients, (0.5, 1.0), 0, write=False)
    assert all(set(cases) <= set(labelled) for fold in subsets.values() for cases in fold.values())
    # the trained tasks decide: with task01 alone the partly labelled case is in a fold again
    plan = plan_splits(dataset, tmp_path / "out1", tasks=("task01",), folds=2)
    assert sorted(c for f in plan.folds for c in f.test) == ids[:6] and plan.left_out == ("case07", "case08")

    # a fixed split naming such a case is refused: the official split ...
    with pytest.raises(SoftsegError, match=r"official split has 1 case\(s\) that cannot train or be tested: "
                                           r"case01 \(no label for task\(s\) task02\)"):
        plan_splits(dataset, tmp_path / "out2")
    official = plan_splits(loaded, tmp_path / "out2")  # ... where Testing is simply not part of it
    assert official.folds[0].train == tuple(ids[:4]) and official.folds[0].test == tuple(ids[4:6])
    # ... and a CSV, every problem at once
    split = tmp_path / "split.csv"
    split.write_text("case,split\ncase01,train\ncase02,train\ncase03,train\ncase05,test\ncase07,test\n")
    with pytest.raises(SoftsegError, match=r"row 2: case case01 cannot train or be tested: no label for task\(s\) "
                                           r"task02; leave the row out; row 6: case case07 cannot train"):
        plan_splits(dataset, tmp_path / "out3", split_csv=split)
    with pytest.raises(SoftsegError, match="no case to cross-validate"):
        plan_splits(dataset, tmp_path / "out4", tasks=("task03",), folds=2)


def test_compare_folds_on_demo_data_leave_the_testing_split_out(tmp_path, caplog, tiny_config):
    import logging

    from softseg.cli import main

    demo = tmp_path / "demo"
    # 8 labelled cases, so each fold trains on 4: whole batches of 2 (tiny_config)
    assert main(["demo-data", str(demo), "--size", "32", "--cases", "5", "3", "2"]) == 0
    out = tmp_path / "cmp"
    with caplog.at_level(logging.WARNING, logger="softseg.experiments.compare.splits"):
        assert main(["compare", str(demo / "demo-shapes"), "--out", str(out), "--folds", "2", "--seeds", "0",
                     "--methods", "majority:ce", "soft:ce+dml", "--no-progress", *TINY, *tiny_config]) == 0
    assert "2 of the dataset's 10 cases left out of the folds" in caplog.text
    labelled = [f"case{i:02d}" for i in range(1, 9)]  # Training and Validation; case09, case10: Testing
    manifest = json.loads((out / "folds.json").read_text())
    assert sorted(manifest["patients"]) == labelled
    assert sorted(c for fold in manifest["folds"] for c in fold["test"]) == labelled
    for method in ("majority-ce", "soft-ce+dml"):
        assert sorted(_summary(out / method / "seed0" / "eval")["cases"]) == labelled
    saved = json.loads((out / "compare.json").read_text())
    assert saved["reference"] == "soft:ce+dml" and saved["left_out"] == ["case09", "case10"]
    assert "left out of the folds" in saved["split"]
    assert {r["reference"] for r in _csv_rows(out / "statistics.csv")} == {"soft:ce+dml"}


def _mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("last.pt")) + sorted(folder.rglob("result*.json"))}


def test_compare_split_csv_fractions_and_reuse(tmp_path, capsys, tiny_config):
    from softseg.cli import main

    data = write_rater_folders(tmp_path / "data", patients=4, images_per_patient=2)
    split = tmp_path / "split.csv"
    split.write_text("case,split\n" + "".join(f"p{p}_{x},{'Training' if p < 3 else 'test'}\n"
                                              for p in range(4) for x in "ab"))
    out = tmp_path / "cmp"
    base = ["compare", str(data), "--out", str(out), "--split-csv", str(split), "--group-regex", r"^(p\d+)_",
            "--seeds", "0", *TINY, *tiny_config]
    assert main(base + ["--methods", "soft"]) == 0
    saved = json.loads((out / "split.json").read_text())
    assert saved["test"] == ["p3_a", "p3_b"] and len(saved["train"]) == 6
    ordinary = _mtimes(out)
    assert not (out / "fractions.json").exists() and not (out / "fractions.csv").exists()

    # more methods and fractions in the same --out: the finished run is reused, not retrained
    capsys.readouterr()
    assert main(base + ["--methods", "soft:ce", "majority:ce", "--fractions", "0.5", "1.0", "--resume"]) == 0
    assert "# Training fractions" in capsys.readouterr().out
    assert {p: t for p, t in _mtimes(out).items() if p in ordinary} == ordinary
    manifest = json.loads((out / "fractions.json").read_text())
    entry = manifest["folds"]["run"]
    half, full = entry["train"]["0.5"], entry["train"]["1"]
    assert full == saved["train"] and set(half) < set(full)
    assert {c.split("_")[0] for c in half} == set(entry["patients"][:2])  # ceil(0.5 * 3) = 2 patients
    for method in ("soft-ce", "majority-ce"):
        run = out / method / "seed0" / "frac0.5" / "run"
        split_json = json.loads((run / "split.json").read_text())
        assert split_json["train"] == half and split_json["val"] == saved["test"]  # same held-out cases
        assert sorted(_summary(out / method / "seed0" / "frac0.5" / "eval")["cases"]) == ["p3_a", "p3_b"]
    fractions = _csv_rows(out / "fractions.csv")
    assert {(r["method"], float(r["fraction"])) for r in fractions} == {
        (m, f) for m in ("soft:ce", "majority:ce") for f in (0.5, 1.0)}
    for r in fractions:
        folder = out / r["method"].replace(":", "-") / "seed0" / ("" if float(r["fraction"]) == 1 else "frac0.5")
        entry = _summary(folder / "eval")["tasks"]["task01"]
        at_half = entry["table2_by_threshold"]["threshold"].index(0.5)
        assert float(r["dice_at_0.5"]) == pytest.approx(entry["table2_by_threshold"]["dice"][at_half])
        assert float(r["qubiq"]) == pytest.approx(entry["qubiq"]["mean"])
        assert float(r["ece"]) == pytest.approx(entry["calibration"]["ece"]["mean"])
    assert (out / "fractions-task01.png").read_bytes()[:4] == b"\x89PNG"
    assert "[fractions-task01.png](fractions-task01.png)" in (out / "comparison.md").read_text()
    compare_json = json.loads((out / "compare.json").read_text())
    assert compare_json["reference"] == "soft:ce" and compare_json["fractions"] == [0.5, 1.0]
    assert [m["folder"] for m in compare_json["methods"]] == ["soft-ce", "majority-ce"]
    _check_per_fold_and_statistics(out, [{"name": "run", "test": saved["test"]}], ["soft:ce", "majority:ce"], [0])

    # everything finished: a rerun retrains nothing; another split into this --out is refused
    finished = _mtimes(out)
    assert main(base + ["--methods", "soft:ce", "majority:ce", "--fractions", "0.5", "--resume"]) == 0
    assert _mtimes(out) == finished
    split.write_text("case,split\np0_a,train\np3_a,test\n")
    assert main(base + ["--methods", "soft", "--resume"]) == 2
    assert "split.json: the saved split (6 training, 2 test cases" in capsys.readouterr().err


def test_demo_3d_end_to_end(tmp_path):
    from dataclasses import replace

    from softseg.experiments.demo import DEMO_3D, demo

    settings = replace(DEMO_3D, epochs=1, image_size=24, slices=8, n_train=2, n_val=1, patch_size=(16, 16, 8),
                       base_filters=4, device="cpu")
    result = demo(tmp_path / "demo3d", settings, progress=False)
    config = json.loads((result.run / "config.json").read_text())
    assert (config["dims"], config["patch_size"], config["base_filters"]) == ("3d", [16, 16, 8], 4)
    summary = _summary(result.eval_dir)
    assert set(summary["cases"]) == {"case03"}  # the one Validation volume
    assert result.headline["task01"]["qubiq"] == pytest.approx(summary["tasks"]["task01"]["qubiq"]["mean"])
    html = result.report.read_text()
    assert "slice" in html and "of 8 (last axis)" in html  # the volume shown as its fullest slice
