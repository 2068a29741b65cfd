"""Rater-folder and agreement-map layouts, each from files written here."""

from __future__ import annotations

import json
import logging
import re
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from softseg.data.check import check_dataset
from softseg.data.datasets import load_dataset, scan_dataset
from softseg.errors import DatasetError, SoftsegError


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def square(shape, lo, hi, value=255):
    mask = np.zeros(shape, np.uint8)
    mask[lo:hi, lo:hi] = value
    return mask


def rater_dataset(root, cases=("a", "b"), raters=("r1", "r2", "r3"), shape=(9, 8), task=None):
    """images/<case>.png and raters/<case>[/<task>]/<rater>.png; rater k draws square 1..3+k."""
    for n, case in enumerate(cases):
        png(root / "images" / f"{case}.png", np.full(shape, 10 * (n + 1), np.uint8))
        for k, rater in enumerate(raters):
            folder = root / "raters" / case / (task or "")
            png(folder / f"{rater}.png", square(shape, 1, 3 + k))
    return root


def test_rater_folders_single_task_png(tmp_path):
    root = rater_dataset(tmp_path / "cells")
    data = load_dataset(root)
    assert (data.layout, data.name, data.tasks) == ("raters", "cells", ("task01",))
    assert [c.case_id for c in data.cases] == ["a", "b"]
    case = data.cases[1]
    assert case.image.shape == (1, 9, 8) and (case.image == 20).all()
    assert case.raters["task01"] == ("r1", "r2", "r3") and case.n_raters == {"task01": 3}
    assert case.split is None and case.geometry.png_mode == "L"
    np.testing.assert_array_equal(case.masks["task01"][2], square((9, 8), 1, 5) > 0)
    assert load_dataset(root, tasks=("cell",)).tasks == ("cell",)
    assert set(load_dataset(root, tasks=("cell",)).cases[0].masks) == {"cell"}
    (root / "dataset.json").write_text(json.dumps({"tasks": ["nucleus"], "name": "my cells"}))
    named = load_dataset(root)
    assert (named.tasks, named.name) == (("nucleus",), "my cells")
    with pytest.raises(SoftsegError, match=r"single-task data take one task name, found 2 \(x, y\)"):
        load_dataset(root, tasks=("x", "y"))


def test_rater_folders_several_tasks(tmp_path):
    root = tmp_path / "two"
    rater_dataset(root, task="cell")
    rater_dataset(root, task="nucleus", raters=("r1", "r2", "r3"))
    data = load_dataset(root)
    assert data.tasks == ("cell", "nucleus")
    assert data.cases[0].masks["nucleus"].shape == (3, 9, 8)
    only = load_dataset(root, tasks=("nucleus",))
    assert only.tasks == ("nucleus",) and set(only.cases[0].masks) == {"nucleus"}


def test_rgb_and_16_bit_images_and_nifti(tmp_path):
    root = rater_dataset(tmp_path / "d", cases=("rgb", "deep"))
    png(root / "images" / "rgb.png", np.stack([np.full((9, 8), v, np.uint8) for v in (1, 2, 3)], -1))
    png(root / "images" / "deep.png", np.full((9, 8), 40000, np.uint16))
    nifti_root = tmp_path / "n"
    (nifti_root / "images").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((9, 8), np.float32), np.eye(4)), str(nifti_root / "images/c1.nii.gz"))
    for r in ("x", "y"):
        (nifti_root / "raters/c1").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(square((9, 8), 2, 5, 1), np.eye(4)), str(nifti_root / f"raters/c1/{r}.nii.gz"))
    scan = scan_dataset(root)
    # reading does not judge channel counts; `softseg check` reports them as a problem
    # naming the case (a tie between 1 and 3 channels goes to the smaller count)
    assert scan.warnings == ()
    assert check_dataset(root).problems == (
        f"rgb: image has 3 channel(s), expected 1 ({root / 'images' / 'rgb.png'}); "
        f"convert the images to one channel count (e.g. all grey or all RGB)",)
    deep, rgb = scan.dataset.cases  # natural order: deep, rgb
    assert rgb.image.shape == (3, 9, 8) and rgb.image[2].max() == 3
    assert deep.image.max() == 40000 and deep.geometry.bit_depth == 16
    case = load_dataset(nifti_root).cases[0]
    assert case.geometry.format == "nifti" and case.masks["task01"].sum() == 2 * 9


def test_varying_rater_sets_are_a_warning(tmp_path, caplog):
    root = rater_dataset(tmp_path / "d", cases=("a",), raters=("p1", "p2", "p3"))
    rater_dataset(root, cases=("b",), raters=("q1", "q2"))
    with caplog.at_level(logging.WARNING):
        data = load_dataset(root)
    assert [c.n_raters["task01"] for c in data.cases] == [3, 2]
    assert "task01: rater sets vary between cases (2 distinct sets, 2-3 raters)" in caplog.text
    with pytest.raises(DatasetError, match=r"rater sets vary between cases"):
        load_dataset(root, strict=True)


def test_rater_folder_problems_all_reported(tmp_path):
    root = rater_dataset(tmp_path / "d", cases=("a", "b", "c", "d"))
    png(root / "images" / "lonely.png", np.zeros((9, 8), np.uint8))            # no raters
    png(root / "raters" / "ghost" / "r1.png", square((9, 8), 1, 3))             # no image
    (root / "raters" / "d" / "r2.png").unlink()
    (root / "raters" / "c" / "r1.png").write_bytes(b"junk")                      # unreadable
    png(root / "raters" / "b" / "r3.png", square((9, 8), 1, 3, value=7))         # non-binary
    png(root / "raters" / "a" / "r2.png", square((9, 9), 1, 3))                  # wrong shape
    png(root / "images" / "a.png", np.zeros((9, 8), np.uint8))
    (root / "images" / "notes.txt").write_text("ignored")
    scan = scan_dataset(root)
    problems = scan.problems
    expected = [
        r"a/r2.png: a task01 rater 'r2': expected mask shape \(9, 8\) \(the image's\), found \(9, 9\)",
        r"b: .*b/r3.png: expected a binary mask .* found 2 distinct values \(0, 7\)",
        r"c: .*c/r1.png: cannot read as PNG",
        r"ghost: expected an image .*images/ghost.png\|.nii.gz for the labels at .*ghost/r1.png, found none",
        r"lonely.png: lonely: expected rater masks in .*raters/lonely/, found no such folder",
    ]
    assert len(problems) == len(expected), problems
    for pattern, problem in zip(expected, problems):
        assert re.search(pattern, problem), (pattern, problem)
    assert any("notes.txt: ignored" in w for w in scan.warnings)


def test_mixed_task_folders_and_missing_task(tmp_path):
    root = rater_dataset(tmp_path / "d", cases=("a", "b"), task="cell")
    rater_dataset(root, cases=("a",), task="nucleus")
    png(root / "raters" / "b" / "stray.png", square((9, 8), 1, 3))
    (root / "raters" / "a" / "empty").mkdir()
    with pytest.raises(DatasetError) as caught:
        load_dataset(root)
    text = str(caught.value)
    assert "raters/b: expected task folders (raters/<case>/<task>/<rater>.<ext>) as in other cases, found rater files directly" in text
    assert "raters/a/empty: expected rater masks <rater>.png|.nii.gz, found none" in text
    assert "raters/b: b: expected a task folder nucleus/ like other cases, found none" in text


def agreement_dataset(root, maps, shape=(4, 5)):
    for case, value in maps.items():
        png(root / "images" / f"{case}.png", np.zeros(shape, np.uint8))
        if isinstance(value, dict):
            for task, array in value.items():
                png(root / "agreement" / case / f"{task}.png", array)
        else:
            png(root / "agreement" / f"{case}.png", value)
    return root


def test_agreement_png_means_round_v_over_255_times_a(tmp_path):
    levels = np.round(np.arange(4) / 3 * 255).astype(np.uint8)  # 0, 85, 170, 255
    array = np.resize(levels, (4, 5)).astype(np.uint8)
    root = agreement_dataset(tmp_path / "agr", {"c1": array})
    with pytest.raises(SoftsegError, match=r"agr: agreement maps need the number of raters A behind them; pass it \(--n-raters A\) or write \{\"n_raters\": A\} into .*dataset.json"):
        load_dataset(root)
    data = load_dataset(root, n_raters=3)
    case = data.cases[0]
    assert data.layout == "agreement" and case.masks == {} and case.n_raters == {"task01": 3}
    np.testing.assert_array_equal(case.agreement["task01"], (np.resize(np.arange(4), (4, 5)) / 3).astype(np.float32))
    assert case.is_labelled("task01")
    (root / "dataset.json").write_text('{"n_raters": 3}')
    assert load_dataset(root).cases[0].n_raters == {"task01": 3}


def test_agreement_off_grid_values_and_bad_counts(tmp_path):
    array = np.zeros((4, 5), np.uint8)
    array[0, 0] = 100  # 0.392: no k/3 is within half a grey level
    root = agreement_dataset(tmp_path / "agr", {"c1": array})
    with pytest.raises(DatasetError, match=r"c1.png: expected agreement values k/3 \(k = 0..3\), found 1 values that are not, e.g. 0.3922; check the number of raters"):
        load_dataset(root, n_raters=3)
    with pytest.raises(SoftsegError, match=r"expected a whole number of raters >= 1 for task task01, found 0"):
        load_dataset(root, n_raters=0)


def test_agreement_float_nifti_snapped_and_several_tasks(tmp_path):
    root = tmp_path / "agr"
    (root / "agreement" / "c1").mkdir(parents=True)
    (root / "images").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((3, 4), np.float32), np.eye(4)), str(root / "images/c1.nii.gz"))
    near = np.array([[0, 0.2, 0.4, 0.6], [0.8, 1.0, 0.2000004, 0.4], [0, 0, 0, 0]], np.float32)
    nib.save(nib.Nifti1Image(near, np.eye(4)), str(root / "agreement/c1/liver.nii.gz"))
    nib.save(nib.Nifti1Image(near / 2, np.eye(4)), str(root / "agreement/c1/tumour.nii.gz"))
    data = load_dataset(root, n_raters={"liver": 5, "tumour": 10})
    assert data.tasks == ("liver", "tumour")
    case = data.cases[0]
    np.testing.assert_array_equal(case.agreement["liver"], (np.round(near * 5) / 5).astype(np.float32))
    assert case.agreement["liver"][1, 2] == np.float32(0.2)
    assert case.n_raters == {"liver": 5, "tumour": 10}
    nib.save(nib.Nifti1Image(np.clip(near + 0.01, 0, 1), np.eye(4)), str(root / "agreement/c1/liver.nii.gz"))
    with pytest.raises(DatasetError, match=r"liver.nii.gz: expected agreement values k/5"):
        load_dataset(root, n_raters={"liver": 5, "tumour": 10})
    with pytest.raises(SoftsegError, match=r"expected a whole number of raters >= 1 for task tumour, found None"):
        load_dataset(root, n_raters={"liver": 5})


def test_agreement_problems(tmp_path):
    full = np.full((4, 5), 255, np.uint8)
    root = agreement_dataset(tmp_path / "agr", {"c1": {"t1": full, "t2": full}, "c2": {"t1": full}})
    png(root / "agreement" / "c3.png", full)
    png(root / "images" / "c4.png", np.zeros((4, 5), np.uint8))
    png(root / "agreement" / "c2" / "t2.png", np.full((3, 5), 255, np.uint8))
    png(root / "images" / "c5.png", np.zeros((4, 5), np.uint8))
    (root / "agreement" / "c5").mkdir()
    scan = scan_dataset(root, n_raters=2)
    expected = [
        r"agreement/c5: c5: expected agreement maps <task>.<ext>, found none",
        r"c3.png: expected a folder agreement/c3/<task>.<ext> as for other cases, found a single map",
        r"c2/t2.png: c2 t2: expected agreement map shape \(4, 5\) \(the image's\), found \(3, 5\)",
        r"c4.png: c4: expected an agreement map in .*agreement/, found none",
    ]
    assert len(scan.problems) == len(expected), scan.problems
    for pattern in expected:
        assert any(re.search(pattern, p) for p in scan.problems), (pattern, scan.problems)


def test_dataset_json_errors(tmp_path):
    root = rater_dataset(tmp_path / "d")
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(SoftsegError, match=r"dataset.json: cannot read as JSON .*; fix or remove the file"):
        load_dataset(root)
    (root / "dataset.json").write_text("[1, 2]")
    with pytest.raises(SoftsegError, match=r"dataset.json: expected a JSON object, found list"):
        load_dataset(root)
    (root / "dataset.json").write_text('{"raters": 3}')
    with pytest.raises(SoftsegError, match=r"dataset.json: unknown key\(s\) raters; expected some of labels, layout, n_raters, name, tasks"):
        load_dataset(root)
    (root / "dataset.json").write_text('{"tasks": "cell"}')
    with pytest.raises(SoftsegError, match=r"dataset.json: \"tasks\" must be a non-empty list of names, found 'cell'"):
        load_dataset(root)
    (root / "dataset.json").write_text('{"layout": "raters"}')
    assert load_dataset(root).layout == "raters"
    with pytest.raises(SoftsegError, match=r"d: splits apply to the QUBIQ layout only, this is 'raters'"):
        load_dataset(root, splits=("Training",))


def test_two_files_for_one_case_name(tmp_path):
    root = rater_dataset(tmp_path / "d", cases=("a",))
    nib.save(nib.Nifti1Image(np.zeros((9, 8), np.float32), np.eye(4)), str(root / "images" / "a.nii.gz"))
    with pytest.raises(DatasetError, match=r"images/a.png: expected one file named a, found also a.nii.gz"):
        load_dataset(root)


def test_agreement_case_as_file_and_folder(tmp_path):
    full = np.full((4, 5), 255, np.uint8)
    root = agreement_dataset(tmp_path / "agr", {"c1": {"t1": full}})
    png(root / "agreement" / "c1.png", full)
    with pytest.raises(DatasetError, match=r"agreement/c1: expected either c1.<ext> or c1/, found both"):
        load_dataset(root, n_raters=2)
    (root / "agreement" / "c1.png").unlink()
    shutil.rmtree(root / "images")
    with pytest.raises(SoftsegError, match=r"the agreement-map layout needs folders images/, agreement/; found no images/"):
        load_dataset(root, layout="agreement", n_raters=2)
