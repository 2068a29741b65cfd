"""`softseg evaluate` end to end on tiny generated data: files, numbers, layouts, errors."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from softseg.data import io
from softseg.evaluation import metrics
from softseg.cli import main
from softseg.data.datasets import load_dataset
from softseg.data.synthetic import write_demo_dataset
from softseg.errors import DatasetError, SoftsegError
from softseg.evaluation.evaluate import evaluate
from softseg.data.labels import soft_label
from softseg.data.cases import CaseQuery


def fake_prediction(case, task, seed):
    """A plausible probability map: the blurred soft label plus a little noise."""
    rng = np.random.default_rng(seed)
    soft = soft_label(case, task)
    prob = ndimage.gaussian_filter(soft, 1.0) + rng.normal(0, 0.05, soft.shape)
    return np.clip(prob, 0, 1).astype(np.float32)


def write_predictions(dataset, root, cases=None, folder=None, skip=()):
    """Write <root>/<case>/<task>.<ext> (or <root>/<folder>/<case>/...) for labelled cases."""
    arrays = {}
    for i, case in enumerate(dataset.cases):
        if cases is not None and case.case_id not in cases:
            continue
        for j, task in enumerate(dataset.tasks):
            if not case.is_labelled(task) or (case.case_id, task) in skip:
                continue
            prob = fake_prediction(case, task, seed=10 * i + j)
            base = root / folder if folder else root
            path = base / case.case_id / f"{task}{io.map_suffix(case.geometry)}"
            io.write_map(path, prob, case.geometry)
            arrays[case.case_id, task] = io.read_probability(path)[0]
    return arrays


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def number(text):
    return math.nan if text == "" else float(text)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_demo_dataset(root, seed=1, size=32, n_train=2, n_val=2, n_test=1)
    data = root / "demo-shapes"
    return data, load_dataset(data)


@pytest.fixture(scope="module")
def evaluated(demo, tmp_path_factory):
    data, dataset = demo
    pred = tmp_path_factory.mktemp("pred")
    arrays = write_predictions(dataset, pred)
    # side outputs of `softseg predict` and its record are not predictions
    case = dataset.cases[0]
    io.write_map(pred / case.case_id / "task01_std.nii.gz", np.zeros(case.spatial_shape), case.geometry)
    io.write_map(pred / case.case_id / "task01_mask-0.50.nii.gz", np.zeros(case.spatial_shape, bool), case.geometry)
    (pred / "predictions.json").write_text("{}")
    out = tmp_path_factory.mktemp("eval") / "eval"
    assert main(["evaluate", str(pred), str(data), "--out", str(out), "--no-progress"]) == 0
    return out, arrays, dataset, pred


def test_files_and_per_case_values(evaluated):
    out, arrays, dataset, _ = evaluated
    assert sorted(p.name for p in out.iterdir()) == [
        "cases.csv", "curves.csv", "metrics.csv", "summary.json", "tables.md"]
    rows = read_csv(out / "metrics.csv")
    labelled = [(c, t) for c in dataset.cases for t in dataset.tasks if c.is_labelled(t)]
    assert len(rows) == 9 * len(labelled) == 9 * len(arrays)
    for case, task in labelled:
        expected = metrics.case_metrics(arrays[case.case_id, task], soft_label(case, task),
                                        case.masks[task], spacing=case.spacing)
        mine = [r for r in rows if r["case"] == case.case_id and r["task"] == task]
        assert [float(r["threshold"]) for r in mine] == metrics.THRESHOLDS.tolist()
        for key in ("dice", "precision", "recall", "gt_area_frac", "iou", "hd95", "hd95_mm"):
            np.testing.assert_array_equal([number(r[key]) for r in mine], expected["table2"][key])
        assert [r["hd95_status"] for r in mine] == expected["table2"]["hd95_status"].tolist()
    cases = read_csv(out / "cases.csv")
    assert len(cases) == len(labelled)
    first = cases[0]
    case = dataset.cases[0]
    expected = metrics.case_metrics(arrays[case.case_id, "task01"], soft_label(case, "task01"),
                                    case.masks["task01"])
    for key in ("ged2", "pred_rater_dist", "rater_diversity", "expected_dice"):
        assert float(first[key]) == expected["table3"][key]
    assert float(first["qubiq"]) == expected["qubiq"]
    assert int(first["n_raters"]) == case.n_raters["task01"]
    curves = read_csv(out / "curves.csv")
    assert len(curves) == 99 * len(labelled)
    assert [float(r["threshold"]) for r in curves[:99]] == metrics.FINE_THRESHOLDS.tolist()


def test_summary_aggregates_metrics_csv(evaluated):
    out, _, dataset, pred = evaluated
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predictions"] == str(pred.resolve())
    assert summary["data"] == str(dataset.root.resolve())
    assert summary["layout"] == "qubiq" and summary["predictions_layout"] == "cases"
    cases_of = {t: {r["case"] for r in read_csv(out / "cases.csv") if r["task"] == t}
                for t in dataset.tasks}
    for task in dataset.tasks:  # the evaluated file of every row, relative to the folder
        assert summary["files"][task] == {c: f"{c}/{task}.nii.gz" for c in cases_of[task]}
    assert summary["conventions"]["ece_bins"] == 10
    assert "maximum of the two directions" in summary["conventions"]["hd95"]
    rows = read_csv(out / "metrics.csv")
    cases = read_csv(out / "cases.csv")
    for task in dataset.tasks:
        entry = summary["tasks"][task]
        mine = [r for r in rows if r["task"] == task]
        n_cases = len(mine) // 9
        assert entry["n_cases"] == n_cases
        for key in ("dice", "precision", "recall", "hd95"):
            grid = np.array([number(r[key]) for r in mine]).reshape(n_cases, 9)
            per_threshold = np.nanmean(grid, axis=0)
            assert entry["table2"][key]["mean"] == pytest.approx(per_threshold.mean(), abs=1e-12)
            assert entry["table2"][key]["std"] == pytest.approx(per_threshold.std(), abs=1e-12)
            per_case = np.nanmean(grid, axis=1)
            assert entry["table2_over_cases"][key]["mean"] == pytest.approx(per_case.mean(), abs=1e-12)
        undefined = sum(r["hd95_status"] == "one_empty" for r in mine)
        assert entry["hd95_undefined"] == undefined
        ged = [float(r["ged2"]) for r in cases if r["task"] == task]
        assert entry["table3"]["ged2"]["mean"] == pytest.approx(np.mean(ged), abs=1e-12)
        assert entry["table3"]["ged2"]["std"] == pytest.approx(np.std(ged), abs=1e-12)
        qubiq = [float(r["qubiq"]) for r in cases if r["task"] == task]
        assert entry["qubiq"]["mean"] == pytest.approx(np.mean(qubiq), abs=1e-12)
        reliability = entry["calibration"]["reliability"]
        assert sum(reliability["count"]) == n_cases * 32 * 32


def test_tables_md_and_stdout(evaluated, capsys):
    out, _, dataset, _ = evaluated
    text = (out / "tables.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    dice = summary["tasks"]["task01"]["table2"]["dice"]
    assert f"{dice['mean'] * 100:.2f} ± {dice['std'] * 100:.2f}" in text
    ged = summary["tasks"]["task02"]["table3"]["ged2"]
    assert f"{ged['mean']:.4f} ± {ged['std']:.4f}" in text
    assert "HD95 mm" in text  # demo spacing is 0.8 mm
    assert "maximum of the two directions" in text
    for heading in ("## Table 2", "## Table 3", "## QUBIQ score and calibration", "## Conventions"):
        assert heading in text


def test_qubiq_submission_layout_gives_the_same_numbers(evaluated, demo, tmp_path):
    out, _, _, _ = evaluated
    data, dataset = demo
    write_predictions(dataset, tmp_path / "sub", folder=dataset.name)
    out2 = evaluate(tmp_path / "sub", data, tmp_path / "eval", progress=False)
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["predictions_layout"] == "qubiq"
    assert summary["files"]["task01"]["case01"] == f"{dataset.name}/case01/task01.nii.gz"
    assert (out2 / "metrics.csv").read_text() == (out / "metrics.csv").read_text()


def test_split_selects_cases_and_skips_other_predictions(evaluated, demo, tmp_path):
    _, _, _, pred = evaluated  # holds Training and Validation predictions
    data, dataset = demo
    out = evaluate(pred, data, tmp_path / "eval", progress=False, query=CaseQuery(split="Validation", tasks=("task02",)))
    rows = read_csv(out / "cases.csv")
    validation = [c.case_id for c in dataset.cases if c.split == "Validation"]
    assert [r["case"] for r in rows] == validation
    assert {r["task"] for r in rows} == {"task02"}
    assert list(json.loads((out / "summary.json").read_text())["tasks"]) == ["task02"]


def test_missing_and_extra_predictions_are_listed_together(demo, tmp_path):
    data, dataset = demo
    first = dataset.cases[0].case_id
    write_predictions(dataset, tmp_path / "pred", skip={(first, "task02")})
    (tmp_path / "pred" / "case99").mkdir()
    case = dataset.cases[1]
    io.write_map(tmp_path / "pred" / case.case_id / "task07.nii.gz",
                 np.zeros(case.spatial_shape), case.geometry)
    with pytest.raises(DatasetError) as info:
        evaluate(tmp_path / "pred", data, tmp_path / "eval", progress=False)
    message = str(info.value)
    assert f"{first}/task02.*: missing prediction for case {first}, task task02" in message
    assert "case99: extra folder, matches no case of dataset 'demo-shapes'" in message
    assert "task07.nii.gz: extra prediction for unknown task 'task07'" in message
    assert len(info.value.problems) == 3
    assert not (tmp_path / "eval").exists()


def test_bad_maps_are_listed_and_nothing_is_written(demo, tmp_path):
    data, dataset = demo
    write_predictions(dataset, tmp_path / "pred")
    a, b = dataset.cases[0], dataset.cases[1]
    io.write_map(tmp_path / "pred" / a.case_id / "task01.nii.gz", np.zeros((8, 8)),
                 a.geometry.__class__(format="nifti", disk_shape=(8, 8), affine=np.eye(4)),
                 overwrite=True)
    import nibabel as nib
    nib.save(nib.Nifti1Image(np.full(b.spatial_shape, 1.5, np.float32), np.eye(4)),
             str(tmp_path / "pred" / b.case_id / "task02.nii.gz"))
    nan = np.zeros(b.spatial_shape, np.float32)
    nan[3, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(tmp_path / "pred" / b.case_id / "task01.nii.gz"))
    with pytest.raises(DatasetError, match="nothing written") as info:
        evaluate(tmp_path / "pred", data, tmp_path / "eval", progress=False)
    message = str(info.value)
    assert len(info.value.problems) == 3
    assert f"{a.case_id}/task01.nii.gz: prediction shape (8, 8) != image shape (32, 32)" in message
    assert f"{b.case_id}/task02.nii.gz: expected probabilities in [0, 1], found values in" in message
    assert f"{b.case_id}/task01.nii.gz: expected finite probabilities in [0, 1], found NaN" in message
    assert not (tmp_path / "eval").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".eval")]


def test_refuses_a_non_empty_out_unless_overwrite(evaluated, demo, tmp_path, capsys):
    _, _, _, pred = evaluated
    data, _ = demo
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["evaluate", str(pred), str(data), "--out", str(out), "--no-progress"]) == 2
    assert "output folder is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    evaluate(pred, data, out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "summary.json").is_file()


def test_one_empty_hd95_is_marked_and_counted(demo, tmp_path):
    data, dataset = demo
    write_predictions(dataset, tmp_path / "pred")
    case = dataset.cases[0]
    io.write_map(tmp_path / "pred" / case.case_id / "task01.nii.gz",
                 np.zeros(case.spatial_shape, np.float32), case.geometry, overwrite=True)
    out = evaluate(tmp_path / "pred", data, tmp_path / "eval", progress=False)
    rows = [r for r in read_csv(out / "metrics.csv") if r["case"] == case.case_id and r["task"] == "task01"]
    soft = soft_label(case, "task01")
    undefined = [bool((soft >= np.float32(t)).any()) for t in metrics.THRESHOLDS]
    assert [r["hd95_status"] for r in rows] == ["one_empty" if u else "both_empty" for u in undefined]
    assert all(r["hd95"] == "" for r, u in zip(rows, undefined) if u)
    assert all(float(r["precision"]) == 0.0 for r, u in zip(rows, undefined) if u)
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["tasks"]["task01"]
    assert entry["hd95_undefined"] >= sum(undefined) and entry["hd95_undefined_cases"] >= 1
    assert f"{entry['hd95_undefined']} of {entry['hd95_rows']}" in (out / "tables.md").read_text()


def test_rater_folders_with_png_predictions(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "data"
    yy, xx = np.mgrid[:40, :48]
    for c in range(3):
        Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8)).save(
            (root / "images").mkdir(parents=True, exist_ok=True) or root / "images" / f"im{c}.png")
        (root / "raters" / f"im{c}").mkdir(parents=True)
        for r in range(3):
            mask = (yy - 20) ** 2 + (xx - 24) ** 2 < (8 + 2 * r + c) ** 2
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "raters" / f"im{c}" / f"r{r}.png")
    dataset = load_dataset(root)
    arrays = write_predictions(dataset, tmp_path / "pred")
    out = evaluate(tmp_path / "pred", root, tmp_path / "eval", progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == "raters"
    assert summary["tasks"]["task01"]["n_cases"] == 3
    case = dataset.cases[2]
    expected = metrics.case_metrics(arrays[case.case_id, "task01"], soft_label(case, "task01"), case.masks["task01"])
    row = [r for r in read_csv(out / "cases.csv") if r["case"] == case.case_id][0]
    assert float(row["expected_dice"]) == expected["table3"]["expected_dice"]
    assert "HD95 mm" not in (out / "tables.md").read_text()  # PNG: spacing 1, pixels only


def test_agreement_maps_mark_table3_na(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "agreement").mkdir()
    yy, xx = np.mgrid[:32, :32]
    for c in range(2):
        Image.fromarray(np.full((32, 32), 100, np.uint8)).save(root / "images" / f"a{c}.png")
        level = np.clip(4 - np.hypot(yy - 16, xx - 16) // 3, 0, 4) / 4
        Image.fromarray((level * 255).round().astype(np.uint8)).save(root / "agreement" / f"a{c}.png")
    (root / "dataset.json").write_text(json.dumps({"n_raters": 4}))
    dataset = load_dataset(root)
    write_predictions(dataset, tmp_path / "pred")
    out = evaluate(tmp_path / "pred", root, tmp_path / "eval", progress=False)
    entry = json.loads((out / "summary.json").read_text())["tasks"]["task01"]
    assert entry["table3"] is None
    assert "no individual rater masks" in entry["table3_note"]
    assert "n/a: agreement maps have no individual rater masks" in (out / "tables.md").read_text()
    row = read_csv(out / "cases.csv")[0]
    assert row["ged2"] == "" and row["qubiq"] != ""


def test_argument_errors(evaluated, demo, tmp_path, capsys):
    _, _, _, pred = evaluated
    data, _ = demo
    with pytest.raises(SoftsegError, match=r"unknown task\(s\) task09; the dataset has task01, task02"):
        evaluate(pred, data, tmp_path / "a", progress=False, query=CaseQuery(tasks=("task09",)))
    with pytest.raises(SoftsegError, match=r"no case labelled for task\(s\) task01 in the selection"):
        evaluate(pred, data, tmp_path / "b", progress=False, query=CaseQuery(split="Testing", tasks=("task01",)))
    with pytest.raises(SoftsegError, match=r"expected a folder of predictions .* found nothing"):
        evaluate(tmp_path / "nowhere", data, tmp_path / "c", progress=False)
    with pytest.raises(SoftsegError, match=r"unknown case id\(s\) case77"):
        evaluate(pred, data, tmp_path / "d", progress=False, query=CaseQuery(case_ids=("case77",)))
    assert main(["evaluate", str(tmp_path / "nowhere"), str(data), "--out", str(tmp_path / "e")]) == 2
    assert "softseg evaluate: error:" in capsys.readouterr().err


def test_summary_is_versioned_and_read_back_whole(evaluated):
    from softseg.evaluation.result import SCHEMA_VERSION, read_result, to_json

    out, _, dataset, pred = evaluated
    written = json.loads((out / "summary.json").read_text())
    assert next(iter(written)) == "schema" and written["schema"] == SCHEMA_VERSION == "softseg-evaluation/1"
    result = read_result(out)
    assert to_json(result) == written  # every key, in order, survives the round trip
    assert list(to_json(result)) == list(written)
    assert result.predictions == pred.resolve() and tuple(result.tasks) == dataset.tasks
    entry = result.tasks["task01"]
    assert entry.table2.dice.mean == written["tasks"]["task01"]["table2"]["dice"]["mean"]
    assert entry.table2_by_threshold.at("dice", 0.5) == written["tasks"]["task01"]["table2_by_threshold"]["dice"][4]
    assert entry.table2_by_threshold.at("dice", 0.55) is None  # not on the grid
    assert entry.table2.hd95_mm is not None  # demo spacing is 0.8 mm


def test_wrong_schema_version_is_refused_naming_the_file(evaluated, tmp_path):
    import shutil

    from softseg.evaluation.result import read_result

    out, _, _, _ = evaluated
    copy = tmp_path / "eval"
    shutil.copytree(out, copy)
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "schema": "softseg-evaluation/2"}))
    with pytest.raises(SoftsegError, match=r"eval/summary\.json: expected an evaluation summary of schema "
                       r"'softseg-evaluation/1', found 'softseg-evaluation/2'; re-run `softseg evaluate`"):
        read_result(copy)
    del summary["tasks"]["task02"]["calibration"]["ece"]["n"]
    summary["tasks"]["task02"]["n_cases"] = "4"
    (copy / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(DatasetError) as info:
        read_result(copy)
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        'tasks.task02.n_cases: expected an integer, found "4"',
        "tasks.task02.calibration.ece.n: missing",
    ]


def test_evaluation_folder_gets_umask_permissions(evaluated, demo, tmp_path):
    import os
    import stat

    _, _, _, pred = evaluated
    data, _ = demo
    previous = os.umask(0o022)
    try:
        out = evaluate(pred, data, tmp_path / "eval", progress=False, query=CaseQuery(tasks=("task01",)))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    files = sorted(out.iterdir())
    assert len(files) == 5
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o644 for p in files}
