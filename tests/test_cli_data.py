"""The data commands end to end on tiny generated data: demo-data -> check -> labels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from softseg.cli import main
from softseg.data.datasets import load_dataset
from softseg.data.labels import soft_label


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "demo"
    assert main(["demo-data", str(out), "--size", "32", "--cases", "3", "1", "1", "--seed", "5"]) == 0
    return out


@pytest.mark.parametrize("command", ["check", "labels", "demo-data"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: softseg " + command in capsys.readouterr().out


def test_demo_then_check_clean(demo, capsys):
    capsys.readouterr()
    assert main(["check", str(demo / "demo-shapes")]) == 0
    out = capsys.readouterr().out
    assert "cases: 5 (Training 3, Validation 1, Testing 1)" in out
    assert "task01: 4 labelled cases, raters 4-5, 2 rater sets" in out
    assert "result: ok, 2 warning(s)" in out
    # the release root: both datasets, one after the other
    assert main(["check", str(demo)]) == 0
    out = capsys.readouterr().out
    assert out.count("result: ok") == 2 and "demo-multichannel (qubiq layout)" in out
    assert main(["check", str(demo / "demo-shapes"), "--strict"]) == 2
    assert "problem: case03 task01: 4 raters where most cases have 5" in capsys.readouterr().out


def test_demo_data_refuses_non_empty_out(demo, capsys):
    assert main(["demo-data", str(demo)]) == 2
    assert "output folder is not empty (an earlier demo-data run?); choose another OUT or pass --overwrite" \
        in capsys.readouterr().err


def test_check_reports_problems_and_exits_2(tmp_path, capsys):
    root = tmp_path / "cells"
    (root / "raters" / "a").mkdir(parents=True)
    (root / "images").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.full((4, 4), 3, np.uint8)).save(root / "raters" / "a" / "r1.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "images" / "b.png")
    assert main(["check", str(root)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("problem: a: ") and "r1.png: expected a binary mask" in out[0]
    assert out[1].startswith("problem: ") and "b.png: b: expected rater masks in" in out[1]
    assert out[-1] == "result: 2 problem(s), 0 warning(s)"


def test_check_names_each_case_whose_channel_count_differs(tmp_path, capsys):
    root = tmp_path / "cells"
    for case, image in (("a", np.zeros((4, 4), np.uint8)), ("b", np.zeros((4, 4), np.uint8)),
                        ("c", np.zeros((4, 4, 3), np.uint8))):
        (root / "raters" / case).mkdir(parents=True, exist_ok=True)
        (root / "images").mkdir(exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{case}.png")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "raters" / case / "r1.png")
    assert main(["check", str(root)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("problem: ")] == [
        f"problem: c: image has 3 channel(s), expected 1 ({root / 'images' / 'c.png'})"
        f"; convert the images to one channel count (e.g. all grey or all RGB)"]
    assert out[-1] == "result: 1 problem(s), 0 warning(s)"


def test_check_of_a_missing_folder_is_a_user_error(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope")]) == 2
    assert "softseg check: error: " in capsys.readouterr().err


def test_labels_writes_soft_labels_in_source_geometry(demo, tmp_path, capsys):
    out = tmp_path / "labels"
    assert main(["labels", str(demo / "demo-multichannel"), str(out), "--variance", "--tasks", "task02"]) == 0
    assert "wrote 8 files for 5 cases" in capsys.readouterr().out
    data = load_dataset(demo / "demo-multichannel")
    case = data.cases[0]
    written = nib.load(str(out / case.case_id / "task02.nii.gz"))
    assert written.shape == (32, 32)  # one map, the channel axis of the (32, 32, 4) source dropped
    np.testing.assert_array_equal(written.affine, case.geometry.affine)
    np.testing.assert_array_equal(written.get_fdata(dtype=np.float32), soft_label(case, "task02"))
    assert (out / case.case_id / "task02_variance.nii.gz").is_file()
    assert not (out / "case05").exists()  # Testing case: no label
    assert main(["labels", str(demo / "demo-multichannel"), str(out)]) == 2
    assert "output folder is not empty" in capsys.readouterr().err
    assert main(["labels", str(demo / "demo-multichannel"), str(out), "--overwrite"]) == 0


def test_labels_refuses_a_dataset_with_problems(tmp_path, capsys):
    root = tmp_path / "agr"
    (root / "images").mkdir(parents=True)
    (root / "agreement").mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(root / "images" / "c.png")
    Image.fromarray(np.array([[0, 255], [100, 0]], np.uint8)).save(root / "agreement" / "c.png")
    assert main(["labels", str(root), str(tmp_path / "out"), "--n-raters", "2"]) == 2
    err = capsys.readouterr().err
    assert "dataset has problems" in err and "expected agreement values k/2" in err
    assert main(["labels", str(root), str(tmp_path / "out"), "--n-raters", "255"]) == 0
    p = np.array(Image.open(tmp_path / "out" / "c" / "task01.png"))
    np.testing.assert_array_equal(p, np.round(np.array([[0, 1], [100 / 255, 0]]) * 65535))
