"""QUBIQ layout: discovery, every quirk of SPEC.md, and every problem collected in one pass;
the one channel check of data.cases."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from softseg.data.cases import Case, Dataset, channel_problems, check_channels
from softseg.data.datasets import find_qubiq_datasets, load_dataset, scan_dataset
from softseg.data.io import Geometry
from softseg.errors import DatasetError, SoftsegError

AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


def nifti(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), AFFINE), str(path))


def disk(shape, radius, centre=None):
    grid = np.indices(shape[:2])
    centre = np.array(shape[:2]) / 2 if centre is None else centre
    inside = ((grid[0] - centre[0]) ** 2 + (grid[1] - centre[1]) ** 2) <= radius**2
    return inside.astype(np.uint8)


def make_case(folder, shape=(12, 10), tasks=("task01",), raters=(1, 2, 3), channels=None,
              mask_shape=None, image=None):
    """image.nii.gz plus taskTT_segRR.nii.gz; rater r draws a disk of radius 2 + r."""
    if image is None:
        image = np.random.default_rng(len(str(folder))).normal(size=shape).astype(np.float32)
        if channels:
            image = np.stack([image * (c + 1) for c in range(channels)], -1)
    nifti(folder / "image.nii.gz", image)
    for task in tasks:
        for r in raters:
            mask = disk(shape, 1 + r + int(task[-1]))
            if mask_shape is not None:
                mask = mask.reshape(mask_shape)
            nifti(folder / f"{task}_seg{r:02d}.nii.gz", mask)


def test_splits_tasks_raters_and_unlabelled_testing_cases(tmp_path):
    root = tmp_path / "prostate"
    for n in (1, 2):
        make_case(root / "Training" / f"case{n:02d}", tasks=("task01", "task02"), raters=range(1, 7))
    make_case(root / "Training" / "case09", tasks=("task01", "task02"), raters=(1, 2, 4, 5, 6))
    make_case(root / "Validation" / "case10", tasks=("task01", "task02"), raters=range(1, 7))
    make_case(root / "Testing" / "case11", tasks=())

    scan = scan_dataset(root)
    assert scan.problems == ()
    assert [w for w in scan.warnings if "case09" in w] == [
        "case09 task01: 5 raters where most cases have 6 (missing seg03); its soft label is "
        "the mean over the 5 present",
        "case09 task02: 5 raters where most cases have 6 (missing seg03); its soft label is "
        "the mean over the 5 present",
    ]
    data = scan.dataset
    assert (data.name, data.layout, data.tasks) == ("prostate", "qubiq", ("task01", "task02"))
    assert [(c.case_id, c.split) for c in data.cases] == [
        ("case01", "Training"), ("case02", "Training"), ("case09", "Training"),
        ("case10", "Validation"), ("case11", "Testing"),
    ]
    case09 = data.cases[2]
    assert case09.masks["task02"].shape == (5, 12, 10) and case09.masks["task02"].dtype == bool
    assert case09.raters["task02"] == ("seg01", "seg02", "seg04", "seg05", "seg06")
    assert case09.n_raters == {"task01": 5, "task02": 5}
    # rater 4 of task02 drew radius 1 + 4 + 2 = 7
    np.testing.assert_array_equal(case09.masks["task02"][2], disk((12, 10), 7).astype(bool))
    testing = data.cases[-1]
    assert testing.masks == {} and not testing.is_labelled("task01")
    assert testing.image.shape == (1, 12, 10) and testing.spacing == (0.8, 0.8)
    assert [c.case_id for c in data.select(split="Validation").cases] == ["case10"]

    training = load_dataset(root, splits=("Training",), tasks=("task02",))
    assert [c.case_id for c in training.cases] == ["case01", "case02", "case09"]
    assert training.tasks == ("task02",) and set(training.cases[0].masks) == {"task02"}


def test_fewer_raters_is_a_warning_unless_strict(tmp_path, caplog):
    root = tmp_path / "d"
    make_case(root / "Training" / "case01")
    make_case(root / "Training" / "case02")
    make_case(root / "Training" / "case03", raters=(1, 2))
    with caplog.at_level(logging.WARNING):
        assert len(load_dataset(root).cases) == 3
    assert "case03 task01: 2 raters where most cases have 3 (missing seg03)" in caplog.text
    with pytest.raises(DatasetError, match=r"case03 task01: 2 raters where most cases have 3"):
        load_dataset(root, strict=True)


def test_channels_last_four_channel_images(tmp_path):
    root = tmp_path / "brain-tumor"
    make_case(root / "Training" / "case01", shape=(16, 14), channels=4, tasks=("task01", "task02", "task03"))
    make_case(root / "Testing" / "case02", shape=(16, 14), channels=4, tasks=())
    data = load_dataset(root)
    for case in data.cases:
        assert case.image.shape == (4, 16, 14) and case.spatial_shape == (16, 14)
        assert case.geometry.disk_shape == (16, 14, 4)
    assert data.cases[0].masks["task03"].shape == (3, 16, 14)
    raw = np.asanyarray(nib.load(str(root / "Training/case01/image.nii.gz")).dataobj)
    np.testing.assert_array_equal(data.cases[0].image[3], raw[..., 3])


def test_trailing_singleton_mask_axis_matches_2d_image(tmp_path):
    root = tmp_path / "prostate"
    make_case(root / "Training" / "case01", shape=(12, 10), mask_shape=(12, 10, 1))
    case = load_dataset(root).cases[0]
    assert case.masks["task01"].shape == (3, 12, 10)


def test_3d_volumes_read_as_one_channel_volumes(tmp_path):
    root = tmp_path / "pancreas"
    volume = np.random.default_rng(0).normal(size=(8, 7, 3)).astype(np.float32)
    case_dir = root / "Training" / "case01"
    nifti(case_dir / "image.nii.gz", volume)
    for r in (1, 2):
        mask = np.zeros((8, 7, 3), np.uint8)
        mask[2:5, 2:4, r] = 1
        nifti(case_dir / f"task01_seg{r:02d}.nii.gz", mask)
    case = load_dataset(root).cases[0]
    assert case.image.shape == (1, 8, 7, 3) and case.spacing == (0.8, 0.8, 3.0)
    assert case.masks["task01"].shape == (2, 8, 7, 3)


def test_case_folders_directly_and_release_roots(tmp_path):
    release = tmp_path / "training_data_v3"
    make_case(release / "kidney" / "Training" / "case01")
    make_case(release / "brain-growth" / "case01")
    (release / "notes").mkdir()
    assert find_qubiq_datasets(release) == [release / "brain-growth", release / "kidney"]
    assert find_qubiq_datasets(release / "kidney") == [release / "kidney"]
    data = load_dataset(release / "brain-growth")
    assert data.cases[0].split is None and data.cases[0].case_id == "case01"
    with pytest.raises(SoftsegError, match=r"training_data_v3: holds 2 QUBIQ dataset\(s\) .*brain-growth.*kidney.*pass one of them"):
        load_dataset(release)


def test_duplicate_case_ids_across_splits_are_renamed(tmp_path):
    root = tmp_path / "d"
    make_case(root / "Training" / "case01")
    make_case(root / "Testing" / "case01", tasks=())
    scan = scan_dataset(root)
    assert [c.case_id for c in scan.dataset.cases] == ["case01", "testing-case01"]
    assert any("case id case01 is used in another split; named testing-case01" in w for w in scan.warnings)


def test_every_problem_is_reported_in_one_pass(tmp_path):
    root = tmp_path / "bad"
    make_case(root / "Training" / "case01", tasks=("task01", "task02"))
    make_case(root / "Training" / "case02", tasks=("task01", "task02"))
    # wrong mask shape
    nifti(root / "Training/case02/task01_seg02.nii.gz", np.zeros((12, 9), np.uint8))
    # non-binary mask
    nifti(root / "Training/case02/task02_seg01.nii.gz", np.full((12, 10), 3, np.uint8))
    # masks but no image
    make_case(root / "Training" / "case03", tasks=("task01", "task02"))
    (root / "Training/case03/image.nii.gz").unlink()
    # a training case with an image and no masks
    make_case(root / "Training" / "case04", tasks=())
    # unreadable image
    make_case(root / "Training" / "case05", tasks=("task01", "task02"))
    (root / "Training/case05/image.nii.gz").write_bytes(b"\x1f\x8b broken")
    # NaN in the image
    image = np.zeros((12, 10), np.float32)
    image[0, :3] = np.nan
    make_case(root / "Training" / "case06", tasks=("task01", "task02"), image=image)
    # a task missing, and raters that are not a subset of the usual ones
    make_case(root / "Validation" / "case07", tasks=("task01",), raters=(1, 2, 7))

    with pytest.raises(DatasetError) as caught:
        load_dataset(root)
    problems = caught.value.problems
    expected = [
        r"task01_seg02.nii.gz: case02 task01 rater 'seg02': expected mask shape \(12, 10\) \(the image's\), found \(12, 9\)",
        r"case02: .*task02_seg01.nii.gz: expected a binary mask with values \{0, 1\} or \{0, 255\}, found 1 distinct values \(3\)",
        r"case03: expected an image .*case03/image.nii.gz for the labels at .*case03/task01_seg01.nii.gz, found none",
        r"case04: expected rater masks taskTT_segRR.nii.gz \(task01, task02\) in a Training case, found none",
        r"case05: .*case05/image.nii.gz: cannot read as NIfTI",
        r"case06/image.nii.gz: case06: expected finite image values, found 3 NaN/inf",
        r"case07: expected masks task02_segRR.nii.gz like other cases, found none",
        r"case07 task01: expected raters seg01, seg02, seg03 like most cases, found seg01, seg02, seg07",
    ]
    assert len(problems) == len(expected), problems
    for pattern in expected:
        assert sum(bool(re.search(pattern, p)) for p in problems) == 1, (pattern, problems)
    assert re.search(r"bad: dataset has problems; `softseg check` lists them with a summary \(8\):", str(caught.value))


def test_a_task_missing_in_a_case_matters_only_when_selected(tmp_path):
    root = tmp_path / "d"
    make_case(root / "case01", tasks=("task01", "task02"))
    make_case(root / "case02", tasks=("task01",))
    with pytest.raises(DatasetError, match=r"case02: expected masks task02_segRR.nii.gz like other cases, found none"):
        load_dataset(root)
    data = load_dataset(root, tasks=("task01",))
    assert [c.n_raters for c in data.cases] == [{"task01": 3}, {"task01": 3}]


def test_tasks_with_different_raters_inside_a_case(tmp_path):
    root = tmp_path / "d"
    make_case(root / "case01", tasks=("task01",), raters=(1, 2))
    make_case(root / "case01", tasks=("task02",), raters=(1, 2, 3))
    with pytest.raises(DatasetError, match=r"case01: tasks have different rater sets \(task01: seg01, seg02; task02: seg01, seg02, seg03\)"):
        load_dataset(root)


def test_user_errors_name_the_way_out(tmp_path):
    make_case(tmp_path / "d" / "Training" / "case01")
    with pytest.raises(SoftsegError, match=r"unknown task\(s\) task09; this dataset has task01"):
        load_dataset(tmp_path / "d", tasks=("task09",))
    with pytest.raises(SoftsegError, match=r"unknown split\(s\) Train; expected some of Training, Validation, Testing"):
        load_dataset(tmp_path / "d", splits=("Train",))
    with pytest.raises(SoftsegError, match=r"d: expected split folder\(s\) Validation, found only Training; choose among those splits"):
        load_dataset(tmp_path / "d", splits=("Training", "Validation"))
    with pytest.raises(SoftsegError, match=r"unknown layout 'nnunet'; expected one of auto, qubiq, raters, agreement"):
        load_dataset(tmp_path / "d", layout="nnunet")
    with pytest.raises(SoftsegError, match=r"missing: expected a dataset folder, found nothing"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SoftsegError, match=r"empty: no dataset layout found; looked for QUBIQ .*rater folders \(images/ and raters/\).*agreement maps"):
        load_dataset(tmp_path / "empty")
    make_case(tmp_path / "flat" / "case01")
    with pytest.raises(SoftsegError, match=r"flat: splits Training were asked for but the dataset has no Training/Validation/Testing folders"):
        load_dataset(tmp_path / "flat", splits=("Training",))
    with pytest.raises(SoftsegError, match=r"the rater-folder layout needs folders images/, raters/; found no images/, raters/"):
        load_dataset(tmp_path / "flat", layout="raters")


def test_select_keeps_order_and_fields(tmp_path):
    root = tmp_path / "d"
    for n in (1, 2, 3):
        make_case(root / "Training" / f"case{n}")
    data = load_dataset(root)
    chosen = data.select(case_ids=["case3", "case1"])
    assert isinstance(chosen, Dataset) and [c.case_id for c in chosen.cases] == ["case1", "case3"]
    assert (chosen.root, chosen.tasks, chosen.layout) == (data.root, data.tasks, data.layout)


def channel_cases(*channels):
    """One case per entry with an image of that many channels, ids c0, c1, ..."""
    return [
        Case(case_id=f"c{i}", image=np.zeros((n, 2, 2), np.float32), spacing=(1.0, 1.0),
             geometry=Geometry("png", (2, 2)), image_path=Path(f"images/c{i}.png"))
        for i, n in enumerate(channels)
    ]


def test_channel_problems_majority_ties_and_explicit_expectation():
    # the majority (1) names the odd case, with its image
    assert channel_problems(channel_cases(1, 3, 1, 1)) == [
        f"c1: image has 3 channel(s), expected 1 ({Path('images/c1.png')})"
    ]
    # a tie goes to the smaller count, whichever comes first
    assert [line[:2] for line in channel_problems(channel_cases(3, 1, 3, 1))] == ["c0", "c2"]
    assert [line[:2] for line in channel_problems(channel_cases(4, 4, 3, 3, 1))] == ["c0", "c1", "c4"]
    # an explicit count (the model's) is the expectation even against the majority
    assert channel_problems(channel_cases(1, 3, 1), expected=3) == [
        f"c0: image has 1 channel(s), expected 3 ({Path('images/c0.png')})",
        f"c2: image has 1 channel(s), expected 3 ({Path('images/c2.png')})",
    ]
    assert channel_problems(channel_cases(1, 1)) == [] and channel_problems([]) == []
    assert channel_problems(channel_cases(3, 3), expected=3) == []
    assert len(channel_problems(channel_cases(3, 3), expected=1)) == 2  # all agree, all wrong


def test_check_channels_names_the_cases_the_reason_and_the_way_out():
    check_channels(channel_cases(1, 1), 1, reason="the run r")
    with pytest.raises(SoftsegError, match=r"^2 image\(s\) have another channel count than the run r "
                       r"\(1 channel\): c0: image has 3 channel\(s\), expected 1 .*; c2: .*; "
                       r"convert the images"):
        check_channels(channel_cases(3, 1, 4), 1, reason="the run r (1 channel)")
    with pytest.raises(SoftsegError, match=r"^12 image\(s\) .*c9: [^;]*; \.\.\. \(2 more\); convert"):
        check_channels(channel_cases(*[3] * 12), 1, reason="x")
    with pytest.raises(SoftsegError, match=r"^1 image\(s\) .*c2: image has 3 channel\(s\), expected 1 "):
        check_channels(channel_cases(1, 1, 3), None, reason="most images")
