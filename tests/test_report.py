"""softseg report: the page from hand-made evaluation folders (contract of docs/architecture.md).

The fixture writes every file of an evaluation folder by hand, a rater-folder dataset and
16-bit PNG predictions, so the numbers the page must show are known in advance.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from softseg.report import build as report
from softseg.report.examples import (Example, _prepare, choose_cases, load_examples,
                                      threshold_levels)
from softseg.report.figures import (FALSE_NEGATIVE, FALSE_POSITIVE, reliability_data,
                                     threshold_grid)
from softseg.report.inputs import read_evaluation
from softseg.cli import main
from softseg.data.cases import Case
from softseg.data.io import Geometry
from softseg.errors import DatasetError, SoftsegError
from softseg.evaluation.result import MeanStd, Reliability, Table3

SIZE = 40
CASE_SCORES = {"c01": 0.9124, "c02": 0.5531, "c03": 0.7712, "c04": 0.6618}
TABLES_MD = """# Table 2

| Task | Dice % | Precision % | Recall % | HD95 px |
|---|---|---|---|---|
| task01 | 91.23 ± 1.45 | 92.34 ± 2.56 | 90.12 ± 3.67 | 4.56 ± 0.78 |

# Table 3

| Task | D²_GED | E[1−IoU(y, ŷ)] | diversity | E[Dice] % |
|---|---|---|---|---|
| task01 | 0.1357 | 0.1864 | 0.2371 | 88.81 |
"""


def fine_curve(case_index: int, name: str) -> np.ndarray:
    """The made-up per-case curves the fixture writes (t = 0.01 ... 0.99)."""
    t = np.arange(1, 100) / 100
    if name == "precision":
        return 0.5 + 0.45 * t - 0.01 * case_index
    if name == "recall":
        return 0.98 - 0.6 * t**2 - 0.01 * case_index
    return 0.8 - 0.1 * (t - 0.5) ** 2 - 0.01 * case_index


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_dataset(root: Path) -> tuple[Path, Path]:
    """A rater-folder dataset (3 raters, disks) and 16-bit PNG predictions (soft blobs)."""
    data, predictions = root / "data", root / "predictions"
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i, case in enumerate(CASE_SCORES):
        centre = (14 + 3 * i, 20 + 2 * i)
        dist = np.hypot(yy - centre[0], xx - centre[1])
        image = (60 + 120 * (dist < 10) + 5 * (xx % 7)).astype(np.uint8)
        _write_png(data / "images" / f"{case}.png", image)
        for r, radius in enumerate((7, 9, 11)):
            _write_png(data / "raters" / case / f"rater{r}.png",
                       ((dist < radius) * 255).astype(np.uint8))
        prob = np.clip(1.0 - (dist - 5.0) / 9.0, 0.0, 1.0)
        _write_png(predictions / case / "task01.png", np.round(prob * 65535).astype(np.uint16))
    return data, predictions


def ms(mean, std, n=4):
    """A summary.json mean ± std entry."""
    return {"mean": mean, "std": std, "n": n}


def write_summary(eval_dir: Path, data: Path, predictions: Path, **changes) -> dict:
    """summary.json of schema softseg-evaluation/1, every key written by hand; ``changes``
    replaces top-level keys."""
    thresholds = list(np.arange(1, 10) / 10)
    by_threshold = {"threshold": thresholds}
    for key in ("dice", "precision", "recall", "hd95", "gt_area_frac"):
        by_threshold[key] = [0.5 + 0.01 * k for k in range(9)]
    by_threshold["dice"][4] = 0.8431  # t = 0.5
    by_threshold["hd95_undefined"] = [1, 1, 1, 1, 1, 1, 1, 0, 0]
    summary = {
        "schema": "softseg-evaluation/1",
        "softseg_version": "0.1.0",
        "predictions": str(predictions),
        "predictions_layout": "cases",
        "data": str(data),
        "dataset": "data",
        "layout": "raters",
        "split": None,
        "cases": list(CASE_SCORES),
        "files": {"task01": {case: f"{case}/task01.png" for case in CASE_SCORES}},
        "conventions": {"thresholds": "np.arange(1, 10) / 10, prediction >= t",
                        "hd95": "maximum of the two directed 95th percentiles"},
        "tasks": {"task01": {
            "n_cases": 4,
            "table2": {"dice": ms(0.9123, 0.0145), "precision": ms(0.9234, 0.0256),
                       "recall": ms(0.9012, 0.0367), "hd95": ms(4.56, 0.78),
                       "gt_area_frac": ms(0.2, 0.0)},
            "table2_by_threshold": by_threshold,
            "table2_over_cases": {"dice": ms(0.83, 0.02), "precision": ms(0.75, 0.0),
                                  "recall": ms(0.85, 0.0), "hd95": ms(2.5, 0.0, 3),
                                  "gt_area_frac": ms(0.2, 0.0)},
            "table3": {"ged2": ms(0.1357, 0.0211), "pred_rater_dist": ms(0.1864, 0.03),
                       "rater_diversity": ms(0.2371, 0.04), "expected_dice": ms(0.8881, 0.012)},
            "table3_note": None,
            "qubiq": ms(0.7246, 0.1311),
            "calibration": {
                "ece": ms(0.0234, 0.0051), "brier": ms(0.0456, 0.0102), "ece_pooled": 0.0199,
                "n_bins": 5,
                "reliability": {  # an empty bin is null
                    "bin_edges": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                    "count": [900, 80, 0, 70, 490],
                    "mean_pred": [0.05, 0.3, None, 0.7, 0.95],
                    "mean_soft": [0.03, 0.25, None, 0.72, 0.97],
                },
            },
            "hd95_undefined": 7,
            "hd95_undefined_cases": 1,
            "hd95_rows": 36,
        }},
    }
    summary.update(changes)
    (eval_dir / "summary.json").write_text(json.dumps(summary))
    return summary


def write_evaluation(root: Path) -> Path:
    """An evaluation folder written by hand, exactly per the contract."""
    data, predictions = write_dataset(root)
    eval_dir = root / "eval"
    eval_dir.mkdir()
    thresholds = np.arange(1, 10) / 10
    with open(eval_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "task", "threshold", "dice", "precision", "recall", "hd95",
                         "hd95_status", "gt_area_frac"])
        for i, case in enumerate(CASE_SCORES):
            for t in thresholds:
                writer.writerow([case, "task01", t, 0.8 + 0.02 * i, 0.7 + 0.1 * t, 0.9 - 0.1 * t,
                                 "" if i == 1 else 2.5, "undefined" if i == 1 else "ok", 0.2])
    with open(eval_dir / "cases.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "task", "ged2", "pred_rater_dist", "rater_diversity",
                         "expected_dice", "qubiq", "ece", "brier", "n_raters"])
        for case, score in CASE_SCORES.items():
            writer.writerow([case, "task01", 0.1, 0.2, 0.3, 0.88, score, 0.01, 0.02, 3])
    with open(eval_dir / "curves.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "task", "threshold", "precision", "recall", "dice"])
        for i, case in enumerate(CASE_SCORES):
            columns = [fine_curve(i, n) for n in ("precision", "recall", "dice")]
            for j, t in enumerate(np.arange(1, 100) / 100):
                writer.writerow([case, "task01", t] + [c[j] for c in columns])
    write_summary(eval_dir, data, predictions)
    (eval_dir / "tables.md").write_text(TABLES_MD)  # for people: the report does not read it
    return eval_dir


def write_run(root: Path) -> Path:
    run = root / "runs" / "seed0"
    run.mkdir(parents=True)
    rows = ["epoch,train_loss,val_loss,val_qubiq,lr,seconds"]
    rows += [f"{e},{0.5 / e},{0.6 / e},{0.5 + 0.04 * e},{1e-2 * 0.5 ** e},1.0" for e in range(1, 6)]
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    eval_dir = write_evaluation(root)
    out = report.write_report(eval_dir, root / "out" / "report.html", run=write_run(root))
    return root, eval_dir, out, out.read_text(encoding="utf-8")


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_page_is_self_contained(built):
    _, _, out, page = built
    assert not re.search(r"https?://", page)
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "url(" not in page
    for png in _data_uris(page):
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
    # 1 curves + 1 reliability + 1 training + 3 x (Figure 2, slider image, slider levels)
    assert len(sources) == 3 + 3 * 3


def test_page_shows_the_evaluation_numbers(built):
    _, _, _, page = built
    for number in ("91.23 ± 1.45", "92.34 ± 2.56", "90.12 ± 3.67", "4.56 ± 0.78",
                   "0.1357", "0.1864", "0.2371", "88.81"):
        assert number in page
    assert "<th>Dice %</th>" in page and "<td>task01</td>" in page
    # headline: QUBIQ 0.7246 ± 0.1311, ECE 0.0234 ± 0.0051, GED 0.1357 ± 0.0211, Dice at
    # 0.5 from summary.json's table2_by_threshold (0.8431), not metrics.csv's mean (0.83)
    cards = page.split('<div class="cards">', 1)[1].split("</section>", 1)[0]
    for shown in ("0.725", "± 0.131", "0.023", "± 0.005", "0.136", "± 0.021", "0.843"):
        assert shown in cards
    assert "0.830" not in cards
    assert ("Model–rater distance 0.186 vs rater–rater 0.237 (Table 3, E[1 − IoU]): the model "
            "is closer to a rater than the raters are to each other.") in cards
    assert "<dt>task01</dt><dd>7 of 36 case × threshold rows</dd>" in page  # undefined HD95
    assert "ECE 0.0234, Brier 0.0456" in page  # in the reliability diagram's caption
    assert "maximum of the two directed 95th percentiles" in page
    # the slider's numbers are curves.csv's, embedded as JSON per example
    blobs = re.findall(r'<script type="application/json" class="curves">(.*?)</script>', page)
    first = json.loads(blobs[0])
    np.testing.assert_allclose(first["precision"], fine_curve(0, "precision"), atol=1e-12)
    np.testing.assert_allclose(first["recall"], fine_curve(0, "recall"), atol=1e-12)


def test_png_copies_beside_the_page(built):
    _, _, out, page = built
    folder = out.with_name("report_files")
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["curves_task01.png", "reliability_task01.png", "training.png",
                            "figure2_task01_c01.png", "figure2_task01_c02.png",
                            "figure2_task01_c04.png"])
    embedded = _data_uris(page)
    for name in names:
        png = (folder / name).read_bytes()
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and min(image.size) > 100
        assert png in embedded  # the copy is the embedded figure, byte for byte
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_examples_are_best_median_worst(built):
    _, eval_dir, _, page = built
    evaluation = read_evaluation(eval_dir)
    assert choose_cases(evaluation, "task01", 3) == [
        ("c01", "best", 0.9124), ("c04", "median", 0.6618), ("c02", "worst", 0.5531)]
    # ranking c01 > c03 > c04 > c02; with an even count the median is the upper middle one
    assert choose_cases(evaluation, "task01", 1) == [("c04", "median", 0.6618)]
    assert choose_cases(evaluation, "task01", 0) == []
    assert [c for c, _, _ in choose_cases(evaluation, "task01", 9)] == ["c01", "c03", "c04", "c02"]
    order = re.findall(r'class="viewer" id="viewer-\d" data-case="(c\d+)"', page)
    assert order == ["c01", "c04", "c02"]


def test_slider_levels_reproduce_the_thresholded_prediction(built):
    _, eval_dir, _, page = built
    examples = load_examples(read_evaluation(eval_dir), 3)
    levels = [png for png in _data_uris(page)
              if Image.open(io.BytesIO(png)).getextrema()[2] == (0, 0)]  # blue channel unused
    assert len(levels) == len(examples) == 3
    for example, png in zip(examples, levels):
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert rgb.shape[:2] == example.prob.shape
        for j in (1, 20, 50, 67, 99):
            t = np.float32(j / 100)
            np.testing.assert_array_equal(rgb[..., 0] >= j, example.prob >= t)
            np.testing.assert_array_equal(rgb[..., 1] >= j, example.soft >= t)
        assert len(np.unique(rgb[..., 0])) > 10  # the blob's soft edge spans many levels


def test_threshold_levels_by_hand():
    values = np.array([0.0, 0.005, 0.01, 0.3, np.float32(7) / np.float32(10), 0.999, 1.0],
                      dtype=np.float32)
    np.testing.assert_array_equal(threshold_levels(values), [0, 0, 1, 30, 70, 99, 99])
    soft = np.arange(0, 10, dtype=np.float32) / np.float32(9)  # 9 raters: k/9
    for j in range(1, 100):
        np.testing.assert_array_equal(threshold_levels(soft) >= j, soft >= np.float32(j / 100))


def test_figure2_colours_false_positives_red_and_false_negatives_green():
    soft = np.array([[0.0, 1 / 3, 2 / 3, 1.0], [0.0, 0.0, 0.7, 1.0]], dtype=np.float32)
    prob = np.array([[0.45, 0.45, 0.05, 0.95], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    example = Example("c9", "task01", "best", 0.9, np.zeros((2, 4, 3), np.uint8), soft, prob,
                      {}, "")
    figure = threshold_grid(example)
    axes = np.array(figure.axes[:20]).reshape(2, 10)
    t4 = axes[:, 4]  # t = 0.4: label = soft >= 0.4 -> [0, 0, 1, 1]; prediction [1, 1, 0, 1]
    assert t4[0].get_title() == "t = 0.4"
    top = np.asarray(t4[0].images[0].get_array())
    bottom = np.asarray(t4[1].images[0].get_array())
    np.testing.assert_array_equal(top[0, :, 0], [0, 0, 1, 1])
    expected = [FALSE_POSITIVE, FALSE_POSITIVE, FALSE_NEGATIVE, (1, 1, 1)]
    np.testing.assert_allclose(bottom[0], expected)
    np.testing.assert_allclose(bottom[1], [(0, 0, 0), (0, 0, 0), FALSE_NEGATIVE, FALSE_NEGATIVE])
    # t = 0.7: soft 2/3 < 0.7; t = 0.3: soft 1/3 >= 0.3 (k/A ties compare in float32)
    label_at = lambda column: np.asarray(axes[0, column].images[0].get_array())[..., 0]
    np.testing.assert_array_equal(label_at(7)[0], [0, 0, 0, 1])
    np.testing.assert_array_equal(label_at(3)[0], [0, 1, 1, 1])
    np.testing.assert_array_equal(label_at(7)[1], [0, 0, 1, 1])  # float32 0.7 >= 0.7


def test_volume_example_shows_the_slice_with_most_label_and_orients_nifti():
    shape = (80, 60, 5)
    masks = np.zeros((2,) + shape, bool)
    masks[:, 10:16, 4:9, 3] = True  # slice 3 holds the label
    masks[0, 10:12, 4:6, 1] = True
    case = Case("v1", np.random.default_rng(0).random((1,) + shape, dtype=np.float32), (1.0,) * 3,
                Geometry("nifti", shape, np.eye(4), None), Path("v1.nii.gz"),
                {"task01": masks}, {"task01": ("a", "b")}, {}, {"task01": 2}, "Validation")
    soft = masks.mean(axis=0, dtype=np.float32)
    prob = soft * np.float32(0.9)

    class Curves:  # an evaluation with no curves rows for this case
        curves = {"case": np.array([], str), "task": np.array([], str),
                  "threshold": np.array([]), "precision": np.array([]),
                  "recall": np.array([]), "dice": np.array([])}

    example = _prepare(Curves, case, "task01", "best", 0.9, soft, prob)
    assert "slice 3 of 5" in example.note
    # displayed as (y, x) with y upwards: the label's x range 10:16 becomes columns, y 4:9 rows
    full = np.flipud(soft[..., 3].T)
    rows, cols = np.nonzero(example.soft)
    assert np.ptp(cols) + 1 == 6 and np.ptp(rows) + 1 == 5
    crop = re.search(r"rows (\d+)–(\d+), columns (\d+)–(\d+)", example.note)
    r0, r1, c0, c1 = map(int, crop.groups())
    np.testing.assert_array_equal(example.soft, full[r0:r1 + 1, c0:c1 + 1])
    np.testing.assert_array_equal(example.prob, np.flipud(prob[..., 3].T)[r0:r1 + 1, c0:c1 + 1])
    assert example.image.shape == example.soft.shape + (3,)
    assert all(np.isnan(v) for v in example.curves["precision"])


def test_headline_verdict_follows_table3():
    from softseg.report.html import _verdict

    def table3(model, raters):
        return Table3(MeanStd(0.1, 0.0, 3), MeanStd(model, 0.0, 3), MeanStd(raters, 0.0, 3),
                      MeanStd(0.9, 0.0, 3))

    assert "is not closer to" in _verdict(table3(0.3, 0.2))
    assert "is closer to" in _verdict(table3(0.1, 0.2))
    assert _verdict(None) == "" and _verdict(table3(None, 0.2)) == ""


def test_summary_of_another_schema_version_is_refused(tmp_path, capsys):
    eval_dir = write_evaluation(tmp_path)
    data, predictions = tmp_path / "data", tmp_path / "predictions"
    summary = write_summary(eval_dir, data, predictions)
    del summary["schema"]  # as written before the schema was versioned
    (eval_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SoftsegError, match=r"summary\.json: expected an evaluation summary of "
                       r"schema 'softseg-evaluation/1', found no schema version .*"
                       r"re-run `softseg evaluate`"):
        report.write_report(eval_dir, tmp_path / "r.html")
    write_summary(eval_dir, data, predictions, schema="softseg-evaluation/0")
    assert main(["report", str(eval_dir), "--out", str(tmp_path / "r.html")]) == 2
    assert "found 'softseg-evaluation/0'; re-run `softseg evaluate`" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_summary_missing_or_ill_typed_keys_are_listed(tmp_path):
    eval_dir = write_evaluation(tmp_path)
    summary = write_summary(eval_dir, tmp_path / "data", tmp_path / "predictions")
    entry = summary["tasks"]["task01"]
    del entry["calibration"]["reliability"]
    del entry["table2_by_threshold"]
    entry["qubiq"] = 0.7246  # a bare number where {"mean", "std", "n"} belongs
    (eval_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(DatasetError, match=r"summary\.json: not a softseg-evaluation/1 evaluation "
                       r"summary \(re-run `softseg evaluate`") as info:
        report.write_report(eval_dir, tmp_path / "r.html")
    assert [p.split(": ", 1)[1] for p in info.value.problems] == [
        "tasks.task01.table2_by_threshold: missing",
        "tasks.task01.qubiq: expected an object with keys mean, std, n, found 0.7246",
        "tasks.task01.calibration.reliability: missing",
    ]


def test_overwrite_replaces_and_refuses_without_flag(tmp_path):
    eval_dir = write_evaluation(tmp_path)
    out = tmp_path / "r.html"
    report.write_report(eval_dir, out, n_cases=0)
    (tmp_path / "r_files" / "stale.png").write_bytes(b"old")
    with pytest.raises(SoftsegError, match=r"r\.html.*already exist.*--overwrite"):
        report.write_report(eval_dir, out, n_cases=0)
    report.write_report(eval_dir, out, n_cases=1, overwrite=True)
    assert "viewer-0" in out.read_text()
    assert not (tmp_path / "r_files" / "stale.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_report(tmp_path, capsys):
    eval_dir = write_evaluation(tmp_path)
    out = tmp_path / "cli.html"
    assert main(["report", str(eval_dir), "--out", str(out), "--cases", "1",
                 "--run", str(write_run(tmp_path))]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    assert 'id="training"' in out.read_text()
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")]) == 2
    assert "expected an evaluation folder" in capsys.readouterr().err


# ---- error paths: each names the file, what was expected, what was found, the way out ----

def test_missing_or_invalid_eval_dir(tmp_path):
    with pytest.raises(SoftsegError, match=r"nope: expected an evaluation folder.*found nothing"):
        report.write_report(tmp_path / "nope", tmp_path / "r.html")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SoftsegError, match=r"expected an evaluation folder.*found a file"):
        report.write_report(tmp_path / "file", tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"(?s)not a complete evaluation folder.*"
                       r"summary\.json: missing.*metrics\.csv: missing.*tables\.md: missing"):
        report.write_report(tmp_path / "empty", tmp_path / "r.html")


@pytest.mark.parametrize("name, content, message", [
    ("summary.json", "{not json", r"summary\.json: expected JSON, found a syntax error"),
    ("summary.json", '{"schema": "softseg-evaluation/1", "tasks": {}}',
     r"summary\.json: expected an object with a non-empty"),
    ("metrics.csv", "case,task,threshold,dice\nc01,task01,0.5,0.8\n",
     r"metrics\.csv: expected columns .*missing precision, recall \(found case, task"),
    ("cases.csv", "case,task,qubiq\nc01,task01,high\n",
     r"cases\.csv: row 2, column 'qubiq': expected a number, found 'high'"),
    ("cases.csv", "case,task,qubiq\nc01,task02,0.5\n",
     r"cases\.csv: expected rows for task 'task01'"),
    ("curves.csv", "case,task,threshold,precision,recall,dice\nc01,task01,0.125,1,1,1\n",
     r"curves\.csv: expected thresholds in 0\.01 … 0\.99 by 0\.01"),
])
def test_invalid_evaluation_files(tmp_path, name, content, message):
    eval_dir = write_evaluation(tmp_path)
    (eval_dir / name).write_text(content)
    with pytest.raises(DatasetError, match=message):
        report.write_report(eval_dir, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_output_and_option_errors(tmp_path):
    eval_dir = write_evaluation(tmp_path)
    with pytest.raises(SoftsegError, match=r"r\.pdf: expected an \.html file name"):
        report.write_report(eval_dir, tmp_path / "r.pdf")
    (tmp_path / "d.html").mkdir()
    with pytest.raises(SoftsegError, match=r"d\.html: expected a file name.*found a folder"):
        report.write_report(eval_dir, tmp_path / "d.html")
    (tmp_path / "f_files").write_text("x")
    with pytest.raises(SoftsegError, match=r"f_files: expected a folder.*found a file"):
        report.write_report(eval_dir, tmp_path / "f.html", overwrite=True)
    with pytest.raises(SoftsegError, match=r"--cases: expected 0 or more.*found -1"):
        report.write_report(eval_dir, tmp_path / "r.html", n_cases=-1)
    with pytest.raises(SoftsegError, match=r"history\.csv: expected the training history.*"
                       r"found no run folder"):
        report.write_report(eval_dir, tmp_path / "r.html", run=tmp_path / "norun")
    bad_run = tmp_path / "badrun"
    bad_run.mkdir()
    (bad_run / "history.csv").write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(DatasetError, match=r"history\.csv: expected columns .*missing train_loss"):
        report.write_report(eval_dir, tmp_path / "r.html", run=bad_run)


def test_example_inputs_missing(tmp_path):
    eval_dir = write_evaluation(tmp_path)
    (tmp_path / "predictions" / "c01" / "task01.png").unlink()
    with pytest.raises(SoftsegError, match=r"c01/task01.png: expected the prediction of case "
                       r"'c01', task 'task01' that was evaluated, found no file.*--cases 0"):
        report.write_report(eval_dir, tmp_path / "r.html")
    report.write_report(eval_dir, tmp_path / "r.html", n_cases=0)  # the way out works
    summary = json.loads((eval_dir / "summary.json").read_text())
    del summary["files"]["task01"]["c01"]  # an evaluation that did not record the file
    (eval_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SoftsegError, match=r"summary.json: expected the prediction file of case "
                       r"'c01', task 'task01' under \"files\", found none"):
        report.write_report(eval_dir, tmp_path / "r3.html")
    summary["predictions"] = str(tmp_path / "moved")
    (eval_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SoftsegError, match=r"the predictions folder it names .*moved\) does "
                       r"not exist.*--cases 0"):
        report.write_report(eval_dir, tmp_path / "r2.html")


def test_example_case_missing_from_the_data(tmp_path):
    eval_dir = write_evaluation(tmp_path)
    with open(eval_dir / "cases.csv", "a", newline="") as handle:
        csv.writer(handle).writerow(["c99", "task01", 0.1, 0.2, 0.3, 0.88, 0.99, 0.01, 0.02, 3])
    with pytest.raises(SoftsegError, match=r"data: expected labelled case 'c99' for task "
                       r"'task01' \(cases.csv lists it\), found no such case.*--cases 0"):
        report.write_report(eval_dir, tmp_path / "r.html")


def test_prediction_of_another_size_is_refused(tmp_path):
    eval_dir = write_evaluation(tmp_path)
    _write_png(tmp_path / "predictions" / "c01" / "task01.png", np.zeros((8, 8), np.uint16))
    with pytest.raises(SoftsegError, match=r"'c01', task 'task01': prediction shape \(8, 8\) "
                       r"!= soft label shape \(40, 40\)"):
        report.write_report(eval_dir, tmp_path / "r.html")


def test_reliability_data_of_the_result():
    got = reliability_data(Reliability(bin_edges=(0.0, 0.5, 1.0), count=(3, 0),
                                       mean_pred=(0.2, None), mean_soft=(0.1, None)))
    np.testing.assert_array_equal(got["confidence"], [0.2, np.nan])
    np.testing.assert_array_equal(got["observed"], [0.1, np.nan])
    np.testing.assert_array_equal(got["count"], [3, 0])


def test_report_of_a_real_evaluation(tmp_path):
    """The contract end to end: `evaluate` writes the folder, the report renders its numbers."""
    from softseg.evaluation.evaluate import evaluate

    data, predictions = write_dataset(tmp_path)
    eval_dir = evaluate(predictions, data, tmp_path / "eval", progress=False)
    out = report.write_report(eval_dir, tmp_path / "r.html", n_cases=3)
    page = out.read_text()
    summary = json.loads((eval_dir / "summary.json").read_text())["tasks"]["task01"]
    cards = page.split('<div class="cards">', 1)[1].split("</section>", 1)[0]
    assert f"{summary['qubiq']['mean']:.3f}" in cards
    assert f"{summary['calibration']['ece']['mean']:.3f}" in cards
    assert f"{summary['table3']['ged2']['mean']:.3f}" in cards
    for line in (eval_dir / "tables.md").read_text().splitlines():
        if line.startswith("| task01 |"):  # every row of Tables 2 and 3, cell by cell
            for cell in line.strip("|").split("|"):
                assert f"<td>{cell.strip()}</td>" in page
    assert (tmp_path / "r_files" / "reliability_task01.png").is_file()
    with open(eval_dir / "curves.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["task"] == "task01"]
    viewers = re.findall(r'data-case="(\w+)".*?class="curves">(.*?)</script>', page)
    assert len(viewers) == 3
    for case, blob in viewers:
        shown = json.loads(blob)
        expected = [float(r["precision"]) for r in rows if r["case"] == case]
        np.testing.assert_allclose(shown["precision"], expected, rtol=0, atol=0)


def test_training_curves_skip_epochs_without_validation(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_text("epoch,train_loss,val_loss,val_qubiq,lr,seconds\n"
                                     "1,0.5,,,0.01,1\n2,0.4,0.45,0.6,0.005,1\n3,0.3,,,0.001,1\n"
                                     "4,0.2,0.25,0.7,0.0001,1\n")
    from softseg.report.figures import training_curves
    from softseg.report.inputs import read_history

    loss, score, rate = training_curves(read_history(run), "run").axes[:3]
    train, val = loss.get_lines()
    np.testing.assert_array_equal(train.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(val.get_xdata(), [2, 4])
    np.testing.assert_array_equal(val.get_ydata(), [0.45, 0.25])
    np.testing.assert_array_equal(score.get_lines()[0].get_ydata(), [0.6, 0.7])
    assert rate.get_yscale() == "log"


def test_report_of_multichannel_nifti_in_the_qubiq_submission_layout(tmp_path):
    """NIfTI images with 4 channels, 2 tasks, predictions in <dataset>/<case>/<task>.nii.gz."""
    import nibabel as nib

    from softseg.data.datasets import load_dataset
    from softseg.data.synthetic import write_demo_dataset
    from softseg.evaluation.evaluate import evaluate
    from softseg.data.labels import soft_label

    data = write_demo_dataset(tmp_path / "demo", size=32, n_train=1, n_val=1, n_test=0)
    data = data / "demo-multichannel"
    dataset = load_dataset(data)
    predictions = tmp_path / "pred"
    for case in dataset.cases:
        for task in dataset.tasks:
            prob = np.clip(soft_label(case, task) * 0.8 + 0.1, 0, 1).astype(np.float32)
            folder = predictions / dataset.name / case.case_id
            folder.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(prob, case.geometry.affine), folder / f"{task}.nii.gz")
    eval_dir = evaluate(predictions, data, tmp_path / "eval", progress=False)
    out = report.write_report(eval_dir, tmp_path / "r.html", n_cases=1)
    page = out.read_text()
    assert re.findall(r'class="viewer" id="viewer-\d" data-case="\w+" data-task="(\w+)"',
                      page) == ["task01", "task02"]
    assert page.count("channel 0 of 4") == 2
    names = sorted(p.name for p in (tmp_path / "r_files").iterdir())
    assert [n for n in names if n.startswith("curves")] == ["curves_task01.png",
                                                            "curves_task02.png"]
    assert len([n for n in names if n.startswith("figure2")]) == 2


def test_compare_figures_draw_the_numbers_given():
    from matplotlib.colors import to_hex

    from softseg.report.comparison import (BETTER, MEAN, SAME, WORSE, FractionSeries, PairedPanel,
                                           fractions_figure, paired_figure)

    dice = PairedPanel("Dice %", "majority:ce", "soft:ce", [50.0, 60.0, 70.0], [55.0, 40.0, 70.0],
                       means=(60.0, 55.0), higher_is_better=True, caption="Δ −5.00")
    ece = PairedPanel("ECE", "majority:ce", "soft:ce", [0.10, 0.20], [0.05, 0.30],
                      means=(0.15, 0.175), higher_is_better=False)
    figure = paired_figure("task01", [[dice], [ece]])
    top, bottom = figure.axes
    colours = [to_hex(line.get_color()) for line in top.lines]
    assert colours == [BETTER, WORSE, SAME, MEAN]  # up is better for Dice; the bold line is the mean
    assert list(top.lines[1].get_ydata()) == [60.0, 40.0] and list(top.lines[-1].get_ydata()) == [60.0, 55.0]
    assert [to_hex(line.get_color()) for line in bottom.lines] == [BETTER, WORSE, MEAN]  # down is better for ECE
    assert "lower is better" in bottom.get_ylabel() and any(t.get_text() == "Δ −5.00" for t in top.texts)
    series = FractionSeries("soft:ce", [0.25, 0.5, 1.0], [70.0, 75.0, 80.0], [1.0, 0.5, 0.0])
    lines = fractions_figure("task01", {"Dice %": [series]}).axes[0].lines
    assert list(lines[0].get_xdata()) == [0.25, 0.5, 1.0] and list(lines[0].get_ydata()) == [70.0, 75.0, 80.0]
