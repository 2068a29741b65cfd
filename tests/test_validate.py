"""validate: pairwise rater Dice against hand values and medpy, the summary, the report text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from medpy.metric.binary import dc
from PIL import Image

from softseg.data.check import check_dataset, dataset_folders, format_report, pairwise_dice


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def test_pairwise_dice_hand_computed():
    a = np.zeros((1, 4, 4), bool)
    a[0, :2, :2] = True  # 4 px
    b = np.zeros((1, 4, 4), bool)
    b[0, :1, :2] = True  # 2 px inside a
    assert pairwise_dice(np.concatenate([a, b])) == pytest.approx(2 * 2 / 6)
    empty = np.zeros((1, 4, 4), bool)
    # pairs: (a,b) 2/3, (a,empty) 0, (b,empty) 0
    assert pairwise_dice(np.concatenate([a, b, empty])) == pytest.approx((2 / 3) / 3)
    assert pairwise_dice(np.zeros((3, 5, 5), bool)) == 1.0  # empty masks agree
    with pytest.raises(ValueError, match=r"pairwise Dice needs at least 2 raters, got 1"):
        pairwise_dice(a)


def test_pairwise_dice_matches_medpy_oracle():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 30, 20)) < np.linspace(0.2, 0.6, 5)[:, None, None]
    expected = np.mean([dc(masks[i], masks[j]) for i, j in itertools.combinations(range(5), 2)])
    assert pairwise_dice(masks) == pytest.approx(expected, rel=1e-12)
    volumes = rng.random((3, 6, 7, 5)) < 0.4
    expected = np.mean([dc(volumes[i], volumes[j]) for i, j in itertools.combinations(range(3), 2)])
    assert pairwise_dice(volumes) == pytest.approx(expected, rel=1e-12)


def rater_case(root, case, masks, shape=(4, 5), channels=1):
    image = np.zeros(shape, np.uint8) if channels == 1 else np.zeros((*shape, 3), np.uint8)
    png(root / "images" / f"{case}.png", image)
    for k, mask in enumerate(masks):
        png(root / "raters" / case / f"r{k}.png", np.asarray(mask, np.uint8) * 255)


def test_summary_values_hand_computed(tmp_path):
    root = tmp_path / "d"
    full, none = np.ones((4, 5)), np.zeros((4, 5))
    half = np.zeros((4, 5))
    half[:2] = 1
    rater_case(root, "a", [full, half])          # soft mean 0.75, Dice 2*10/30
    rater_case(root, "b", [half, half, none])    # soft mean 1/3, Dice (1 + 0 + 0)/3
    rater_case(root, "c", [np.zeros((6, 5))] * 2, shape=(6, 5), channels=3)
    report = check_dataset(root)
    # mixed channel counts are a problem (a model takes one count), named case by case
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith("c: image has 3 channel(s), expected 1 (")
    assert report.problems[0].endswith("c.png); convert the images to one channel count (e.g. all grey or all RGB)")
    assert report.splits == {"all": 3}
    (task,) = report.tasks
    assert (task.task, task.labelled, task.raters_min, task.raters_max, task.rater_sets) == ("task01", 3, 2, 3, 2)
    np.testing.assert_allclose(task.foreground, [0.75, 1 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(task.pairwise_dice, [2 / 3, 1 / 3, 1.0])
    assert report.sizes == {(4, 5): 2, (6, 5): 1} and report.channels == {1: 2, 3: 1}
    text = format_report(report)
    assert "cases: 3\n" in text
    assert "  task01: 3 labelled cases, raters 2-3, 2 rater sets" in text
    assert "    mean pairwise rater Dice: 0.667 ± 0.272 (min 0.333, max 1.000)" in text
    assert "image sizes: 4x5 (2), 6x5 (1)" in text and "channels: 1 (2 cases), 3 (1 cases)" in text
    assert text.endswith("result: 1 problem(s), 1 warning(s)")
    assert text.splitlines()[0].startswith("problem: c: image has 3 channel(s)")
    assert text.splitlines()[1].startswith("warning: task01: rater sets vary between cases")


def test_problems_are_one_line_each_first(tmp_path):
    root = tmp_path / "d"
    rater_case(root, "a", [np.ones((4, 5)), np.ones((4, 4))])
    rater_case(root, "b", [np.ones((4, 5))])
    (root / "raters" / "b" / "r0.png").write_bytes(b"junk")
    report = check_dataset(root)
    assert not report.ok and len(report.problems) == 2
    lines = format_report(report).splitlines()
    assert lines[0].startswith("problem: ") and "a/r1.png: a task01 rater 'r1': expected mask shape (4, 5)" in lines[0]
    assert lines[1].startswith("problem: b: ") and "cannot read as PNG" in lines[1]
    assert lines[2].startswith("warning: task01: rater sets vary between cases")
    assert lines[-1] == "result: 2 problem(s), 1 warning(s)"


def test_agreement_data_have_no_rater_dice(tmp_path):
    root = tmp_path / "agr"
    png(root / "images" / "c.png", np.zeros((2, 2), np.uint8))
    png(root / "agreement" / "c.png", np.array([[0, 255], [128, 128]], np.uint8))
    report = check_dataset(root, n_raters=2)
    assert report.tasks[0].pairwise_dice == () and report.tasks[0].foreground == (0.5,)
    assert "mean pairwise rater Dice: n/a (no individual rater masks)" in format_report(report)


def test_dataset_folders_expands_release_roots(tmp_path):
    import nibabel as nib

    for name in ("b-set", "a-set"):
        case = tmp_path / "release" / name / "Training" / "case01"
        case.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros((3, 3), np.float32), np.eye(4)), str(case / "image.nii.gz"))
    release = tmp_path / "release"
    assert dataset_folders(release) == [release / "a-set", release / "b-set"]
    assert dataset_folders(release / "a-set") == [release / "a-set"]
    assert dataset_folders(release, layout="raters") == [release]
