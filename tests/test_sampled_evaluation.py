"""predict --samples and evaluate --samples: level sets of a deterministic run's map, an SSN
run's own draws, and the LIDC benchmark's scores in cases.csv, summary.json and tables.md,
checked against softseg.evaluation.hypotheses on the files written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from _runs import make_run  # tests/_runs.py
from softseg.cli import main
from softseg.data import io
from softseg.data.datasets import load_dataset
from softseg.data.synthetic import write_demo_dataset
from softseg.evaluation import hypotheses
from softseg.evaluation.result import read_result

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), seed=1, size=32, n_train=2, n_val=2,
                              n_test=0) / "demo-shapes"


@pytest.fixture(scope="module")
def predicted(shapes, tmp_path_factory):
    """A deterministic run's maps and 4 level sets per case of the two Validation cases."""
    root = tmp_path_factory.mktemp("pred")
    run = make_run(root / "run", tasks=("task01", "task02"))
    out = root / "p"
    assert main(["predict", str(run), str(shapes), "--out", str(out), "--split", "Validation", "--samples", "4",
                 "--no-progress"]) == 0
    return out


def _read(folder, name, upper=1.0):
    """The map ``name`` in ``folder`` in whichever format predict wrote it (the data's)."""
    (path,) = [f for f in folder.iterdir() if io.stem(f) == name]
    return io.read_map(path, upper=upper)[0]


def _cases(eval_dir):
    with open(eval_dir / "cases.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_predict_writes_the_maps_level_sets_and_says_so(predicted):
    record = json.loads((predicted / "predictions.json").read_text())
    assert record["samples"]["source"] == "level-set" and record["samples"]["count"] == 4
    for case in record["cases"]:
        prob = _read(predicted / case, "task01")
        masks = np.stack([_read(predicted / case, f"task01_sample-0{k}") >= 0.5
                          for k in range(4)])
        np.testing.assert_array_equal(masks, hypotheses.level_set_masks(prob, 4))
        assert np.all(masks[1:] <= masks[:-1])  # nested


def test_evaluate_samples_scores_each_case_like_the_hypotheses_module(predicted, shapes, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", str(predicted), str(shapes), "--out", str(out), "--split", "Validation",
                 "--samples", "1", "4", "--no-progress"]) == 0
    rows = _cases(out)
    data = {c.case_id: c for c in load_dataset(shapes).cases}
    for row in rows:
        prob = _read(predicted / row["case"], row["task"])
        raters = data[row["case"]].masks[row["task"]]
        expected = hypotheses.sampled_scores(hypotheses.level_set_masks(prob, 4), raters)
        assert float(row["ged_4"]) == pytest.approx(expected["ged"], abs=1e-12)
        assert float(row["hmiou_4"]) == pytest.approx(expected["hmiou"], abs=1e-12)
        assert float(row["diversity_4"]) == pytest.approx(expected["diversity"], abs=1e-12)
        # one stratified level set is the map at 0.5: no diversity, the one-map D²_GED
        assert float(row["diversity_1"]) == 0.0 and float(row["ged_1"]) == float(row["ged_map"])
        # the field's one-map D²_GED keeps the rater self-pairs: 2 E d(y, ŷ) - (R-1)/R E_{y≠y'} d
        r = len(raters)
        table3 = 2 * float(row["pred_rater_dist"]) - (r - 1) / r * float(row["rater_diversity"])
        assert float(row["ged_map"]) == pytest.approx(table3, abs=1e-12)
    summary = read_result(out)
    for task, result in summary.tasks.items():
        values = [float(r["ged_4"]) for r in rows if r["task"] == task]
        assert result.sampled["ged_4"].mean == pytest.approx(np.mean(values))
        assert result.sampled["ged_4"].n == len(values) == 2
    assert "level sets" in summary.conventions["hypotheses"]
    tables = (out / "tables.md").read_text()
    assert "Hypotheses: the LIDC benchmark's scores" in tables and "HM-IoU 4 %" in tables


def test_evaluate_without_samples_writes_no_hypothesis_columns(predicted, shapes, tmp_path):
    out = tmp_path / "plain"
    assert main(["evaluate", str(predicted), str(shapes), "--out", str(out), "--split", "Validation",
                 "--no-progress"]) == 0
    assert "ged_map" not in _cases(out)[0] and read_result(out).tasks["task01"].sampled is None


@pytest.mark.parametrize("counts", [["0"], ["4", "4"]])
def test_evaluate_refuses_bad_counts(predicted, shapes, tmp_path, counts):
    assert main(["evaluate", str(predicted), str(shapes), "--out", str(tmp_path / "e"), "--split", "Validation",
                 "--samples", *counts, "--no-progress"]) == 2
    assert not (tmp_path / "e").exists()


def test_multiclass_level_sets_are_label_maps_with_the_class_marginals(tmp_path):
    from softseg.data.synthetic_classes import write_demo_classes

    data = write_demo_classes(tmp_path / "classes", size=32, n_cases=2)
    dataset = load_dataset(data)
    run = make_run(tmp_path / "run", in_channels=3, tasks=dataset.tasks, classes=dataset.classes)
    out = tmp_path / "p"
    assert main(["predict", str(run), str(data), "--out", str(out), "--samples", "8",
                 "--no-progress"]) == 0
    case = dataset.cases[0]
    probs = np.stack([_read(out / case.case_id, c) for c in dataset.classes])
    labels = np.stack([np.rint(_read(out / case.case_id, f"label-map_sample-0{k}", 255.0))
                       for k in range(8)])
    np.testing.assert_array_equal(labels, hypotheses.level_set_labels(probs, 8))
    assert main(["evaluate", str(out), str(data), "--out", str(tmp_path / "e"), "--samples", "8",
                 "--no-progress"]) == 0
    row = _cases(tmp_path / "e")[0]
    assert row["case"] == case.case_id
    expected = hypotheses.sampled_scores(labels == dataset.classes.index(row["task"]), case.masks[row["task"]])
    assert float(row["ged_8"]) == pytest.approx(expected["ged"], abs=1e-12)


def test_compare_samples_scores_level_sets_and_an_ssns_draws_with_paired_statistics(tmp_path, capsys):
    from test_experiments import write_rater_folders

    data = write_rater_folders(tmp_path / "data")  # 3 raters: 4 hypotheses match at lcm(4, 3)
    out = tmp_path / "cmp"
    config = tmp_path / "tiny.yaml"
    config.write_text("batch_size: 2\naug_copies: 0\nprecision: fp32\nssn_rank: 2\nssn_samples: 4\n"
                      "ssn_eval_samples: 8\n")
    assert main(["compare", str(data), "--out", str(out), "--folds", "2", "--run-folds", "0", "--group-regex",
                 r"^(p\d+)_", "--seeds", "0", "--methods", "soft:ce", "ssn", "--samples", "2", "4",
                 "--epochs", "1", "--crop-size", "32", "--encoder-weights", "none", "--device", "cpu",
                 "--config", str(config), "--no-progress"]) == 0
    ssn_record = json.loads((out / "ssn" / "seed0" / "predictions" / "predictions.json").read_text())
    assert ssn_record["samples"]["source"] == "drawn" and ssn_record["samples"]["count"] == 4
    soft_record = json.loads((out / "soft-ce" / "seed0" / "predictions" / "predictions.json").read_text())
    assert soft_record["samples"] is None  # level sets are computed by the evaluation from the map
    stats = list(csv.DictReader(open(out / "statistics.csv", newline="")))
    tested = [r["metric"] for r in stats if r["method"] == "ssn"]
    assert tested[-5:] == ["ged_map", "ged_2", "hmiou_2", "ged_4", "hmiou_4"]  # no diversity: no direction
    for metric in ("ged_4", "hmiou_4"):
        row = next(r for r in stats if r["metric"] == metric)
        for method, column in (("ssn", "method_mean"), ("soft:ce", "reference_mean")):
            cases = _cases(out / method.replace(":", "-") / "seed0" / "eval-fold0")
            assert float(row[column]) == pytest.approx(np.mean([float(c[metric]) for c in cases]))
    assert "diversity_4" in next(csv.DictReader(open(out / "per_fold.csv", newline="")))
    assert "### task01: hypotheses" in (out / "comparison.md").read_text()
    # more hypotheses than the SSN drew: its evaluation is redone only from new draws, never
    # from level sets of its mean map
    import shutil

    shutil.rmtree(out / "ssn" / "seed0" / "eval-fold0")
    (out / "ssn" / "seed0" / "result-fold0.json").unlink()
    assert main(["compare", str(data), "--out", str(out), "--folds", "2", "--run-folds", "0", "--group-regex",
                 r"^(p\d+)_", "--seeds", "0", "--methods", "soft:ce", "ssn", "--samples", "2", "8",
                 "--epochs", "1", "--crop-size", "32", "--encoder-weights", "none", "--device", "cpu",
                 "--config", str(config), "--resume", "--no-progress"]) == 2
    assert "predictions hold 4 per case" in capsys.readouterr().err
