"""Prediction files: source geometry round trips, std maps, masks, ensembles, layouts, errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from _runs import make_run  # tests/_runs.py
from softseg.data import io
from softseg.cli import main
from softseg.errors import SoftsegError
from softseg.inference.arrays import predict_images
from softseg.inference.runs import load_run
from softseg.inference.inputs import load_input
from softseg.inference.outputs import std_map, threshold_label
from softseg.inference.predict import predict_folder
from softseg.data.cases import CaseQuery
from softseg.inference.outputs import PredictOutputs
from softseg.inference import RunOptions

TASKS = ("task01", "task02")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder of two seeds (1 channel, two tasks) and a 4-channel single run."""
    root = tmp_path_factory.mktemp("runs")
    make_run(root / "seeds" / "seed0", seed=0)
    make_run(root / "seeds" / "seed1", seed=1)
    make_run(root / "rgba" / "seed0", in_channels=4, tasks=("task01",), seed=2)
    return root


def nifti_affine() -> np.ndarray:
    affine = np.diag([0.8, 1.2, 3.0, 1.0])
    affine[:3, 3] = [-12.5, 40.0, 7.0]
    return affine


def write_nifti(path: Path, data: np.ndarray, affine=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(data, nifti_affine() if affine is None else affine)
    image.header["descrip"] = b"softseg test"
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=2)
    nib.save(image, str(path))


def qubiq_testing(root: Path, shapes=((40, 56), (33, 47))) -> Path:
    """An unlabelled QUBIQ dataset: ``root/Testing/caseNN/image.nii.gz`` (int16 images)."""
    rng = np.random.default_rng(0)
    for i, shape in enumerate(shapes):
        data = (rng.random(shape) * 1000).astype(np.int16)
        write_nifti(root / "Testing" / f"case{i + 1:02d}" / "image.nii.gz", data)
    return root


def same_header(a, b) -> list[str]:
    """Header fields that differ, data type fields aside (a probability map is float32)."""
    skip = {"datatype", "bitpix", "scl_slope", "scl_inter", "vox_offset", "cal_max", "cal_min"}
    differ = []
    for key in a.keys():
        if key in skip:
            continue
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                differ.append(key)
        elif not np.array_equal(x, y):
            differ.append(key)
    return differ


def test_nifti_round_trip_keeps_affine_header_and_grid(runs, tmp_path):
    data = qubiq_testing(tmp_path / "brain-growth")
    out = tmp_path / "out"
    predict_folder([runs / "seeds" / "seed0"], data, out, options=RunOptions(progress=False), outputs=PredictOutputs(std=True, masks=(0.5,)))
    dataset = load_input(data)
    loaded = load_run(runs / "seeds" / "seed0")
    expected = predict_images([loaded], [c.image for c in dataset.cases])
    for case, want in zip(dataset.cases, expected):
        source = nib.load(str(case.image_path))
        for index, task in enumerate(TASKS):
            path = out / case.case_id / f"{task}.nii.gz"
            written = nib.load(str(path))
            assert written.get_data_dtype() == np.float32
            np.testing.assert_array_equal(written.affine, source.affine)
            assert same_header(written.header, source.header) == []
            assert written.shape == source.shape
            prob = np.asarray(written.dataobj)
            np.testing.assert_array_equal(prob, want[index])  # every pixel, no crop/pad shift
            assert 0.0 <= prob.min() and prob.max() <= 1.0 and prob.std() > 0.01
            std = np.asarray(nib.load(str(out / case.case_id / f"{task}_std.nii.gz")).dataobj)
            np.testing.assert_allclose(std, np.sqrt(prob * (1 - prob)), atol=1e-6)
            mask = nib.load(str(out / case.case_id / f"{task}_mask-0.50.nii.gz"))
            assert mask.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(np.asarray(mask.dataobj), prob >= np.float32(0.5))
            np.testing.assert_array_equal(mask.affine, source.affine)
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["cases"] == ["case01", "case02"] and summary["tasks"] == list(TASKS)
    assert summary["runs"] == [str((runs / "seeds" / "seed0").resolve())]
    assert summary["mask_thresholds"] == {"task01": [0.5], "task02": [0.5]}


def test_channels_last_nifti_input(runs, tmp_path):
    # (x, y, 4) like QUBIQ brain-tumor: one map per task of shape (x, y), same affine
    rng = np.random.default_rng(1)
    image = rng.random((36, 44, 4)).astype(np.float32)
    write_nifti(tmp_path / "tumor" / "Testing" / "case01" / "image.nii.gz", image)
    out = tmp_path / "out"
    predict_folder([runs / "rgba"], tmp_path / "tumor", out, options=RunOptions(progress=False))
    written = nib.load(str(out / "case01" / "task01.nii.gz"))
    assert written.shape == (36, 44)
    source = nib.load(str(tmp_path / "tumor" / "Testing" / "case01" / "image.nii.gz"))
    np.testing.assert_array_equal(written.affine, source.affine)
    np.testing.assert_allclose(written.affine, nifti_affine(), atol=1e-6)
    np.testing.assert_array_equal(written.header.get_zooms()[:2], source.header.get_zooms()[:2])
    expected = predict_images([load_run(runs / "rgba" / "seed0")], [np.moveaxis(image, -1, 0)])
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected[0][0])


def test_png_input_gives_png_output_of_the_same_size(runs, tmp_path):
    rng = np.random.default_rng(2)
    images = tmp_path / "cells" / "images"
    images.mkdir(parents=True)
    Image.fromarray((rng.random((50, 70)) * 255).astype(np.uint8)).save(images / "a1.png")
    Image.fromarray((rng.random((45, 33)) * 255).astype(np.uint8)).save(images / "b2.png")
    out = tmp_path / "out"
    predict_folder([runs / "seeds"], tmp_path / "cells", out, options=RunOptions(progress=False), outputs=PredictOutputs(std=True, masks=(0.3, 0.7)))
    for name, size in (("a1", (70, 50)), ("b2", (33, 45))):
        with Image.open(out / name / "task02.png") as prob_png:
            assert prob_png.size == size and prob_png.mode.startswith("I;16")
            prob = np.array(prob_png).astype(np.float64) / 65535
        with Image.open(out / name / "task02_mask-0.30.png") as mask_png:
            assert mask_png.size == size and mask_png.mode == "L"
            mask = np.array(mask_png)
        assert set(np.unique(mask)) <= {0, 255}
        # masks come from the float map; the PNG holds it to 1/65535
        agree = (mask == 255) == (prob >= 0.3)
        assert agree[np.abs(prob - 0.3) > 1e-4].all()
        std, _ = io.read_probability(out / name / "task02_std.png")
        np.testing.assert_allclose(std, np.sqrt(prob * (1 - prob)), atol=2e-3)


def test_several_runs_average_single_run_predictions(runs, tmp_path):
    data = qubiq_testing(tmp_path / "data", shapes=((32, 40),))
    for name, given in (("a", [runs / "seeds" / "seed0"]), ("b", [runs / "seeds" / "seed1"]),
                        ("both", [runs / "seeds"]), ("listed", [runs / "seeds" / "seed0",
                                                                 runs / "seeds" / "seed1"])):
        predict_folder(given, data, tmp_path / name, options=RunOptions(progress=False))

    def read(name):
        return np.asarray(nib.load(str(tmp_path / name / "case01" / "task01.nii.gz")).dataobj)

    assert not np.allclose(read("a"), read("b"))
    np.testing.assert_allclose(read("both"), (read("a") + read("b")) / 2, atol=1e-6)
    np.testing.assert_array_equal(read("listed"), read("both"))


def test_qubiq_submission_layout(runs, tmp_path):
    data = qubiq_testing(tmp_path / "kidney")
    out = tmp_path / "submission"
    predict_folder([runs / "seeds"], data, out, options=RunOptions(progress=False), outputs=PredictOutputs(qubiq=True))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "kidney/case01/task01.nii.gz", "kidney/case01/task02.nii.gz",
        "kidney/case02/task01.nii.gz", "kidney/case02/task02.nii.gz",
        "predictions-kidney-task01-task02.json",
    ]
    before = (out / "kidney" / "case01" / "task01.nii.gz").read_bytes()
    with pytest.raises(SoftsegError, match=r"case01/task01.nii.gz: already exists \(4 of the "
                       r"submission files would be replaced\)"):
        predict_folder([runs / "seeds"], data, out, options=RunOptions(progress=False), outputs=PredictOutputs(qubiq=True))
    assert (out / "kidney" / "case01" / "task01.nii.gz").read_bytes() == before


def test_qubiq_submission_collects_runs_of_several_tasks(runs, tmp_path):
    # brain-tumor style: one run per task fills one submission; the split folder is given
    data = qubiq_testing(tmp_path / "brain-tumor", shapes=((32, 32),))
    rgba = np.random.default_rng(9).random((32, 32, 4)).astype(np.float32)
    write_nifti(tmp_path / "brain-tumor" / "Testing" / "case01" / "image.nii.gz", rgba)
    out = tmp_path / "submission"
    predict_folder([runs / "rgba"], data / "Testing", out, options=RunOptions(progress=False), outputs=PredictOutputs(qubiq=True))
    single = runs / "single"
    if not single.exists():
        make_run(single / "seed0", in_channels=4, tasks=("task02",), seed=4)
    predict_folder([single], data / "Testing", out, options=RunOptions(progress=False), outputs=PredictOutputs(qubiq=True))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "brain-tumor/case01/task01.nii.gz", "brain-tumor/case01/task02.nii.gz",
        "predictions-brain-tumor-task01.json", "predictions-brain-tumor-task02.json",
    ]


def test_single_file_input_and_refusal_to_overwrite(runs, tmp_path):
    image = np.random.default_rng(3).random((30, 30)).astype(np.float32)
    write_nifti(tmp_path / "scan.nii.gz", image)
    out = tmp_path / "out"
    predict_folder([runs / "seeds" / "seed1"], tmp_path / "scan.nii.gz", out, options=RunOptions(progress=False))
    first = (out / "scan" / "task01.nii.gz").read_bytes()
    with pytest.raises(SoftsegError, match=r"out: output folder is not empty .*--overwrite"):
        predict_folder([runs / "seeds" / "seed0"], tmp_path / "scan.nii.gz", out, options=RunOptions(progress=False))
    assert (out / "scan" / "task01.nii.gz").read_bytes() == first  # untouched
    predict_folder([runs / "seeds" / "seed0"], tmp_path / "scan.nii.gz", out, overwrite=True, options=RunOptions(progress=False))
    assert (out / "scan" / "task01.nii.gz").read_bytes() != first
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_stored_operating_threshold_is_applied_by_default(runs, tmp_path):
    import shutil

    run = shutil.copytree(runs / "seeds" / "seed0", tmp_path / "run")
    (run / "threshold.json").write_text(json.dumps({
        "runs": [str(run.resolve())],
        "tasks": {"task01": {"threshold": 0.37}, "task02": {"threshold": 0.62}},
    }))
    data = qubiq_testing(tmp_path / "data", shapes=((32, 32),))
    predict_folder([run], data, tmp_path / "a", options=RunOptions(progress=False), outputs=PredictOutputs(masks=(0.5,)))
    names = sorted(p.name for p in (tmp_path / "a" / "case01").iterdir())
    assert names == ["task01.nii.gz", "task01_mask-0.37.nii.gz", "task01_mask-0.50.nii.gz",
                     "task02.nii.gz", "task02_mask-0.50.nii.gz", "task02_mask-0.62.nii.gz"]
    summary = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert summary["run_threshold"]["tasks"] == {"task01": 0.37, "task02": 0.62}
    predict_folder([run], data, tmp_path / "b", options=RunOptions(progress=False), outputs=PredictOutputs(use_run_threshold=False))
    assert sorted(p.name for p in (tmp_path / "b" / "case01").iterdir()) == [
        "task01.nii.gz", "task02.nii.gz"]
    # chosen for other runs (another seed joins): not applied
    (run / "threshold.json").write_text(json.dumps({
        "runs": ["/elsewhere/seed0"], "tasks": {"task01": {"threshold": 0.37}}}))
    predict_folder([run], data, tmp_path / "c", options=RunOptions(progress=False))
    assert sorted(p.name for p in (tmp_path / "c" / "case01").iterdir()) == [
        "task01.nii.gz", "task02.nii.gz"]


def test_std_map_and_threshold_label():
    p = np.array([0.0, 0.25, 0.5, 1.0, 1.0000001], dtype=np.float32)
    np.testing.assert_allclose(std_map(p), [0.0, np.sqrt(0.1875), 0.5, 0.0, 0.0], atol=1e-7)
    assert threshold_label(0.5) == "0.50" and threshold_label(0.375) == "0.375"


def test_errors_name_the_problem(runs, tmp_path):
    data = qubiq_testing(tmp_path / "data", shapes=((32, 32),))
    seed = runs / "seeds" / "seed0"
    with pytest.raises(SoftsegError, match=r"nowhere: no such file or folder"):
        predict_folder([seed], tmp_path / "nowhere", tmp_path / "o1", options=RunOptions(progress=False))
    with pytest.raises(SoftsegError, match=r"mask thresholds must lie in \(0, 1\], got 1.5"):
        predict_folder([seed], data, tmp_path / "o2", options=RunOptions(progress=False), outputs=PredictOutputs(masks=(0.5, 1.5)))
    with pytest.raises(SoftsegError, match=r"--qubiq writes a submission .*drop --std"):
        predict_folder([seed], data, tmp_path / "o3", options=RunOptions(progress=False), outputs=PredictOutputs(qubiq=True, std=True))
    with pytest.raises(SoftsegError, match=r"no softseg run found; expected RUN/config.json"):
        predict_folder([tmp_path], data, tmp_path / "o4", options=RunOptions(progress=False))
    with pytest.raises(SoftsegError, match=r"1 image\(s\) have another channel count than the run .*rgba.seed0 was "
                       r"trained on \(4\): case01: image has 1 channel\(s\), expected 4"):
        predict_folder([runs / "rgba"], data, tmp_path / "o5", options=RunOptions(progress=False))
    with pytest.raises(SoftsegError, match="--batch-size must be at least 1, got 0"):
        predict_folder([seed], data, tmp_path / "o6", options=RunOptions(batch_size=0, progress=False))
    png = tmp_path / "pngs"
    png.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(png / "x.png")
    with pytest.raises(SoftsegError, match=r"--qubiq needs NIfTI images, found 1 other\(s\) \(x\)"):
        predict_folder([seed], png, tmp_path / "o7", options=RunOptions(progress=False), outputs=PredictOutputs(qubiq=True))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SoftsegError, match=r"empty: no image files found; expected NIfTI"):
        predict_folder([seed], tmp_path / "empty", tmp_path / "o8", options=RunOptions(progress=False), query=CaseQuery(layout="images"))


def test_command_line_end_to_end(runs, tmp_path, capsys, monkeypatch):
    # only this area's commands: the test must not depend on other areas' parsers
    monkeypatch.setattr("softseg.cli._COMMAND_MODULES", ("_predict",))
    data = qubiq_testing(tmp_path / "data", shapes=((32, 48),))
    out = tmp_path / "out"
    code = main(["predict", str(runs / "seeds"), str(data), "--out", str(out), "--std",
                 "--masks", "0.5", "--batch-size", "2"])
    assert code == 0
    assert "1 case(s), 6 file(s) written" in capsys.readouterr().out
    assert (out / "case01" / "task02_mask-0.50.nii.gz").is_file()
    code = main(["predict", str(runs / "seeds"), str(data), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{out}: output folder is not empty" in err and "--overwrite" in err
    # several RUN arguments before INPUT: the same average as the folder of seeds
    code = main(["predict", str(runs / "seeds" / "seed0"), str(runs / "seeds" / "seed1"),
                 str(data), "--out", str(tmp_path / "two"), "--no-progress"])
    assert code == 0
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(tmp_path / "two" / "case01" / "task01.nii.gz")).dataobj),
        np.asarray(nib.load(str(out / "case01" / "task01.nii.gz")).dataobj))


def test_trailing_singleton_axis_is_restored(runs, tmp_path):
    # QUBIQ prostate stores (960, 640, 1): the maps keep that on-disk shape
    image = np.random.default_rng(5).random((40, 36, 1)).astype(np.float32)
    write_nifti(tmp_path / "prostate" / "Testing" / "case07" / "image.nii.gz", image)
    out = tmp_path / "out"
    predict_folder([runs / "seeds" / "seed0"], tmp_path / "prostate", out, options=RunOptions(progress=False), outputs=PredictOutputs(masks=(0.5,)))
    for name in ("task01.nii.gz", "task01_mask-0.50.nii.gz"):
        written = nib.load(str(out / "case07" / name))
        assert written.shape == (40, 36, 1)
    prob, geometry = io.read_probability(out / "case07" / "task02.nii.gz")
    assert prob.shape == (40, 36) and geometry.disk_shape == (40, 36, 1)


def test_predict_and_the_experiments_write_one_record(runs, tmp_path, capsys, monkeypatch):
    """`softseg predict` and pipeline.predict_cases go through one path: the same record
    keys, the same maps; the experiments' folder is continued (several folds), not refused."""
    import shutil

    from softseg.experiments import pipeline

    monkeypatch.setattr("softseg.cli._COMMAND_MODULES", ("_predict",))
    run = shutil.copytree(runs / "seeds" / "seed0", tmp_path / "run")
    data = qubiq_testing(tmp_path / "data")
    assert main(["predict", str(run), str(data), "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    cases = load_input(data).cases
    pipeline.predict_cases([run], cases[:1], tmp_path / "exp", progress=False)
    pipeline.predict_cases([run], cases[1:], tmp_path / "exp", progress=False)  # a second fold
    cli = json.loads((tmp_path / "cli" / "predictions.json").read_text())
    exp = json.loads((tmp_path / "exp" / "predictions.json").read_text())
    assert list(exp) == list(cli)
    for key in ("runs", "tasks", "cases", "files", "format", "layout_written", "std",
                "mask_thresholds", "run_threshold"):
        assert exp[key] == cli[key], key
    assert exp["cases"] == ["case01", "case02"] and exp["checkpoint"] == "last"
    assert exp["input"] == str((data / "Testing").resolve()) and exp["split"] == "Testing"
    assert cli["input"] == str(data.resolve()) and cli["layout"] == "qubiq"
    for name in cli["files"]:
        np.testing.assert_array_equal(io.read_probability(tmp_path / "exp" / name)[0],
                                      io.read_probability(tmp_path / "cli" / name)[0])
    # an unreadable record is named before anything is predicted
    (tmp_path / "exp" / "predictions.json").write_text("{not json")
    with pytest.raises(SoftsegError, match=r"exp/predictions.json: cannot read"):
        pipeline.predict_cases([run], cases[:1], tmp_path / "exp", progress=False)


def test_predict_to_folder_guard_offers_only_overwrite(runs, tmp_path):
    from softseg.inference.predict import write_predictions, selection_source
    from softseg.inference.runs import load_models

    data = qubiq_testing(tmp_path / "data", shapes=((32, 32),))
    cases = load_input(data).cases
    loaded = load_models([runs / "seeds" / "seed0"], device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SoftsegError, match=r"out: output folder is not empty \(an earlier prediction "
                       r"run\?\); choose another --out or pass --overwrite to replace its outputs$"):
        write_predictions(loaded, cases, out, source=selection_source(cases),
                          options=RunOptions(checkpoint="best", progress=False))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    path = write_predictions(loaded, cases, out, source=selection_source(cases),
                             options=RunOptions(checkpoint="best", progress=False), resume=True)
    assert json.loads(path.read_text())["files"] == ["case01/task01.nii.gz", "case01/task02.nii.gz"]
    assert (out / "notes.txt").read_text() == "mine"  # continuing a folder deletes nothing


def test_merge_records_adds_up_the_lists_and_keeps_the_latest_fields():
    from softseg.inference.outputs import merge_records

    earlier = {"runs": ["/r/fold0"], "tasks": ["t1"], "cases": ["a", "b"], "files": ["a/t1.png", "b/t1.png"],
               "format": ["png"], "mask_thresholds": {"t1": []}, "checkpoint": "best", "split": None,
               "input": "/d/images/a.png", "layout": "raters", "dataset": "d"}
    new = {"runs": ["/r/fold1"], "tasks": ["t1"], "cases": ["b", "c"], "files": ["b/t1.png", "c/t1.nii.gz"],
           "format": ["nifti"], "mask_thresholds": {"t1": [0.5]}, "checkpoint": "last", "split": "Testing",
           "input": "/d/images", "layout": "raters", "dataset": None}
    merged = merge_records(earlier, new)
    assert merged == {"runs": ["/r/fold0", "/r/fold1"], "tasks": ["t1"], "cases": ["a", "b", "c"],
                      "files": ["a/t1.png", "b/t1.png", "c/t1.nii.gz"], "format": ["nifti", "png"],
                      "mask_thresholds": {"t1": [0.5]}, "checkpoint": "last", "split": None,
                      "input": "/d/images", "layout": "raters", "dataset": None}
    assert merge_records(None, new) == new and merge_records(None, new) is not new


# ----------------------------------------------------------------------------- TTA, checkpoints


def test_tta_flip_keeps_the_geometry_and_is_recorded(runs, tmp_path):
    data = qubiq_testing(tmp_path / "data", shapes=((37, 45),))
    seed = runs / "seeds" / "seed0"
    predict_folder([seed], data, tmp_path / "tta", options=RunOptions(tta="flip", progress=False))
    predict_folder([seed], data, tmp_path / "plain", options=RunOptions(progress=False))
    (case,) = load_input(data).cases
    (expected,) = predict_images([load_run(seed)], [case.image], tta="flip")
    source = nib.load(str(case.image_path))
    for index, task in enumerate(TASKS):
        written = nib.load(str(tmp_path / "tta" / "case01" / f"{task}.nii.gz"))
        assert written.shape == source.shape == (37, 45)
        np.testing.assert_array_equal(written.affine, source.affine)
        np.testing.assert_array_equal(np.asarray(written.dataobj), expected[index])
    plain = np.asarray(nib.load(str(tmp_path / "plain" / "case01" / "task01.nii.gz")).dataobj)
    assert np.abs(plain - expected[0]).max() > 1e-3  # an untrained U-Net is not flip-equivariant
    record = json.loads((tmp_path / "tta" / "predictions.json").read_text())
    assert record["tta"] == {"mode": "flip", "views": {str(seed.resolve()): [
        "identity", "horizontal", "vertical", "horizontal+vertical"]}}
    assert record["temperatures"] is None
    assert json.loads((tmp_path / "plain" / "predictions.json").read_text())["tta"]["mode"] == "none"
    with pytest.raises(SoftsegError, match=r"tta 'rot90': expected one of none, flip"):
        predict_folder([seed], data, tmp_path / "bad", options=RunOptions(tta="rot90", progress=False))
    assert not (tmp_path / "bad").exists()


def test_the_default_checkpoint_is_last(tmp_path):
    import inspect
    import shutil

    from softseg.cli import build_parser
    from softseg.experiments import pipeline
    from softseg.inference import DEFAULT_CHECKPOINT
    from softseg.inference.calibration import calibrate
    from softseg.inference.export import export_onnx
    from softseg.inference.runs import load_models
    from softseg.inference.thresholds import choose_threshold

    assert DEFAULT_CHECKPOINT == "last" == pipeline.EVAL_CHECKPOINT
    for function in (load_run, load_models):
        assert inspect.signature(function).parameters["checkpoint"].default == "last", function.__name__
    # predict, threshold, export and calibrate take theirs from RunOptions
    for function in (predict_folder, choose_threshold, export_onnx, calibrate):
        assert inspect.signature(function).parameters["options"].default.checkpoint == "last", function.__name__
    parser = build_parser()
    commands = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "predict" in a.choices)
    for name in ("predict", "calibrate", "threshold", "export"):
        option = next(a for a in commands.choices[name]._actions if "--checkpoint" in a.option_strings)
        assert option.default == "last" and "'best' (chosen on the run's validation cases" in option.help, name
    # a run whose best and last checkpoints differ: predict uses last unless told
    run = make_run(tmp_path / "run", seed=0)
    make_run(tmp_path / "other", seed=1)
    shutil.copy(tmp_path / "other" / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    data = qubiq_testing(tmp_path / "data", shapes=((32, 32),))
    predict_folder([run], data, tmp_path / "pred", options=RunOptions(progress=False))
    (case,) = load_input(data).cases
    got = io.read_probability(tmp_path / "pred" / "case01" / "task01.nii.gz")[0]
    (last,) = predict_images([load_run(tmp_path / "other")], [case.image])
    (best,) = predict_images([load_run(run, checkpoint="best")], [case.image])
    np.testing.assert_array_equal(got, last[0])
    assert np.abs(got - best[0]).max() > 0.05
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())["checkpoint"] == "last"


def test_best_on_the_runs_validation_cases_warns(runs, tmp_path, caplog):
    import logging
    import shutil

    run = shutil.copytree(runs / "seeds" / "seed0", tmp_path / "run")
    (run / "split.json").write_text(json.dumps({"train": ["case09"], "val": ["case01", "case07"]}))
    data = qubiq_testing(tmp_path / "data")  # case01 and case02
    with caplog.at_level(logging.WARNING, logger="softseg.inference.runs"):
        predict_folder([run], data, tmp_path / "last", options=RunOptions(progress=False))
    assert "'best' checkpoint" not in caplog.text  # last: no warning
    with caplog.at_level(logging.WARNING, logger="softseg.inference.runs"):
        predict_folder([run], data, tmp_path / "best", options=RunOptions(checkpoint="best", progress=False))
    assert "predicting 1 of 2 case(s) with the 'best' checkpoint, which was chosen on those" in caplog.text
    caplog.clear()
    (run / "split.json").write_text(json.dumps({"train": ["case01", "case02"], "val": ["case09"]}))
    with caplog.at_level(logging.WARNING, logger="softseg.inference.runs"):
        predict_folder([run], data, tmp_path / "best2", options=RunOptions(checkpoint="best", progress=False))
    assert "'best' checkpoint" not in caplog.text  # none of them was a validation case
