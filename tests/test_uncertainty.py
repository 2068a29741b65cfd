"""Uncertainty maps: entropy, mutual information and expected entropy (nats) by hand, their
decomposition, the files `softseg predict --uncertainty` writes (2 seeds, 1 seed, multi-class,
NIfTI and PNG), the refusal with --qubiq, and the report showing them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.stats
from PIL import Image

from _runs import make_run  # tests/_runs.py
from softseg.cli import main
from softseg.data import io
from softseg.data.synthetic_classes import write_demo_classes
from softseg.errors import SoftsegError
from softseg.inference import RunOptions
from softseg.inference.arrays import predict_ensemble, predict_images
from softseg.inference.inputs import load_input
from softseg.inference.outputs import PredictOutputs
from softseg.inference.predict import predict_folder
from softseg.inference.runs import load_run
from softseg.inference.uncertainty import (entropy, expected_entropy, max_entropy, mutual_information,
                                           uncertainty_maps)
from softseg.report.examples import load_examples
from softseg.report.inputs import read_evaluation

LN2, LN3 = math.log(2), math.log(3)
TASKS = ("task01", "task02")
CLASSES = ("background", "rim", "cup")
KINDS = ("entropy", "mi", "expected_entropy")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def h(p: float) -> float:
    """The Bernoulli entropy by hand, in nats."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


# ----------------------------------------------------------------------------- the math


def test_bernoulli_entropy_by_hand():
    p = np.array([[0.0, 0.5, 1.0], [0.25, 0.9, 1.0000001]], dtype=np.float32)
    with np.errstate(all="raise"):  # 0 ln 0 = 0 without a warning
        got = entropy(p)
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, [[0.0, LN2, 0.0], [h(0.25), h(0.9), 0.0]], atol=1e-7)
    assert not np.signbit(got).any()  # a certain pixel is +0, not -0
    assert entropy(np.float32(0.5)) == np.float32(LN2)  # the maximum, ln 2


def test_mutual_information_and_expected_entropy_by_hand():
    # two models that are each certain but contradict each other: all epistemic
    opposite = np.array([[0.0], [1.0]])
    np.testing.assert_allclose(mutual_information(opposite), [LN2], atol=1e-7)
    np.testing.assert_allclose(expected_entropy(opposite), [0.0], atol=0)
    # identical models: no disagreement, all aleatoric
    same = np.full((3, 2), 0.3)
    np.testing.assert_array_equal(mutual_information(same), [0.0, 0.0])
    np.testing.assert_allclose(expected_entropy(same), [h(0.3)] * 2, atol=1e-7)
    # 0.2 and 0.6: mean 0.4
    pair = np.array([[0.2], [0.6]])
    np.testing.assert_allclose(expected_entropy(pair), [(h(0.2) + h(0.6)) / 2], atol=1e-7)
    np.testing.assert_allclose(mutual_information(pair), [h(0.4) - (h(0.2) + h(0.6)) / 2], atol=1e-7)
    # one model: the mutual information is 0 and only the entropy is written
    maps = uncertainty_maps(np.array([[0.5, 0.1]]))
    assert list(maps) == ["entropy"]
    np.testing.assert_allclose(maps["entropy"], [LN2, h(0.1)], atol=1e-7)
    np.testing.assert_array_equal(mutual_information(np.array([[0.5, 0.1]])), [0.0, 0.0])
    maps = uncertainty_maps(opposite)
    assert list(maps) == list(KINDS)
    np.testing.assert_allclose([maps[k][0] for k in KINDS], [LN2, LN2, 0.0], atol=1e-7)


def test_entropy_is_mutual_information_plus_expected_entropy_on_random_maps():
    rng = np.random.default_rng(7)
    per_model = rng.random((5, 2, 16, 16)).astype(np.float32) ** 3  # many near 0, some near 1
    per_model[0, 0, 0, :4] = [0.0, 1.0, 0.0, 1.0]
    maps = uncertainty_maps(per_model)
    np.testing.assert_allclose(maps["entropy"], entropy(per_model.mean(axis=0, dtype=np.float64)), atol=1e-6)
    np.testing.assert_allclose(maps["entropy"], maps["mi"] + maps["expected_entropy"], atol=1e-6)
    np.testing.assert_array_equal(maps["mi"], mutual_information(per_model))
    np.testing.assert_array_equal(maps["expected_entropy"], expected_entropy(per_model))
    assert maps["mi"].min() >= 0 and maps["mi"].max() > 0.05
    assert all(m.max() <= np.float32(LN2) and m.shape == (2, 16, 16) for m in maps.values())
    # the categorical form: five models' softmax maps over four classes
    logits = rng.normal(size=(5, 4, 8, 8)) * 3
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    maps = uncertainty_maps(softmax, categorical=True)
    assert maps["entropy"].shape == (8, 8)
    np.testing.assert_allclose(maps["entropy"], maps["mi"] + maps["expected_entropy"], atol=1e-6)
    assert maps["mi"].min() >= 0 and maps["entropy"].max() <= np.float32(math.log(4))


def test_categorical_entropy_by_hand_and_against_scipy():
    p = np.array([[1 / 3, 1.0, 0.5, 0.7], [1 / 3, 0.0, 0.5, 0.2], [1 / 3, 0.0, 0.0, 0.1]])
    np.testing.assert_allclose(entropy(p, categorical=True), [LN3, 0.0, LN2, scipy.stats.entropy([0.7, 0.2, 0.1])],
                               atol=1e-7)
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.ones(5), size=30).T  # (5 classes, 30 pixels)
    np.testing.assert_allclose(entropy(q, categorical=True), scipy.stats.entropy(q, axis=0), atol=1e-6)
    # two models certain of different classes: MI ln 2, expected entropy 0
    models = np.array([[[1.0], [0.0], [0.0]], [[0.0], [0.0], [1.0]]])
    np.testing.assert_allclose(mutual_information(models, categorical=True), [LN2], atol=1e-7)
    np.testing.assert_allclose(expected_entropy(models, categorical=True), [0.0], atol=0)
    # two classes are the Bernoulli case
    b = rng.random(50)
    np.testing.assert_allclose(entropy(np.stack([1 - b, b]), categorical=True), entropy(b), atol=1e-6)
    assert max_entropy(2) == LN2 and max_entropy(3) == LN3
    with pytest.raises(SoftsegError, match=r"expected classes on axis 0 \(at least 2\)"):
        entropy(np.array([0.5]), categorical=True)
    with pytest.raises(SoftsegError, match=r"expected \(M, \.\.\.\) with M >= 1"):
        mutual_information(np.zeros((0, 3)))


def test_maps_of_values_up_to_ln_k_round_trip_through_png_and_nifti(tmp_path):
    Image.fromarray(np.zeros((1, 3), np.uint8)).save(tmp_path / "src.png")
    png = io.read_image(tmp_path / "src.png")[2]
    nib.save(nib.Nifti1Image(np.zeros((1, 3), np.int16), np.eye(4)), str(tmp_path / "src.nii.gz"))
    nifti = io.read_image(tmp_path / "src.nii.gz")[2]
    values = np.array([[0.0, LN3 / 4, LN3]], dtype=np.float32)  # ln 3 > 1: no probability
    io.write_map(tmp_path / "e.png", values, png, upper=LN3)
    raw = np.asarray(Image.open(tmp_path / "e.png"))
    np.testing.assert_array_equal(raw, [[0, 16384, 65535]])  # value / ln 3, nothing clipped
    np.testing.assert_allclose(io.read_map(tmp_path / "e.png", upper=LN3)[0], values, atol=LN3 / 65535)
    io.write_map(tmp_path / "e.nii.gz", values, nifti, upper=LN3)
    np.testing.assert_array_equal(io.read_map(tmp_path / "e.nii.gz", upper=LN3)[0], values)  # nats as stored
    assert float(nib.load(str(tmp_path / "e.nii.gz")).header["cal_max"]) == pytest.approx(LN3)
    with pytest.raises(SoftsegError, match=r"expected probabilities in \[0, 1\], found values in \[0, 1.09861\]"):
        io.read_probability(tmp_path / "e.nii.gz")
    with pytest.raises(SoftsegError, match=r"expected map values in \[0, 0.693147\], found \[0, 1.09861\]"):
        io.write_map(tmp_path / "f.png", values, png, upper=LN2)
    # float32(ln 2) lies above ln 2 and is the top value, not an error
    io.write_map(tmp_path / "g.png", np.full((1, 3), LN2, np.float32), png, upper=LN2)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), [[65535] * 3])


# ----------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two binary seeds (two tasks), two of one task (for rater-folder data) and two
    multi-class seeds (background, rim, cup; RGB)."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        make_run(root / "seeds" / f"seed{seed}", seed=seed)
        make_run(root / "one" / f"seed{seed}", tasks=("task01",), seed=seed)
        make_run(root / "classes" / f"seed{seed}", in_channels=3, tasks=CLASSES[1:], classes=CLASSES, seed=seed)
    return root


def nifti_images(root: Path, shapes=((40, 56), (33, 47))) -> Path:
    """An unlabelled QUBIQ dataset: ``root/Testing/caseNN/image.nii.gz``."""
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 1.2, 3.0, 1.0])
    for i, shape in enumerate(shapes):
        path = root / "Testing" / f"case{i + 1:02d}" / "image.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image((rng.random(shape) * 1000).astype(np.int16), affine), str(path))
    return root


def per_seed_maps(seeds: list[Path], images: list[np.ndarray]) -> list[np.ndarray]:
    """(M, T, *spatial) per image: each seed's predict_images map, stacked."""
    single = [predict_images([load_run(seed)], images) for seed in seeds]
    return [np.stack([maps[i] for maps in single]) for i in range(len(images))]


def test_predict_ensemble_returns_each_runs_map_and_their_mean(runs):
    rng = np.random.default_rng(1)
    images = [rng.random((1, 40, 36)).astype(np.float32), rng.random((1, 33, 47)).astype(np.float32)]
    seeds = [runs / "seeds" / "seed0", runs / "seeds" / "seed1"]
    loaded = [load_run(seed) for seed in seeds]
    means, per_run = predict_ensemble(loaded, images)
    for mean, each, alone, expected in zip(means, per_run, predict_images(loaded, images),
                                           per_seed_maps(seeds, images)):
        np.testing.assert_array_equal(mean, alone)  # the ensemble's map, exactly predict_images'
        np.testing.assert_array_equal(each, expected)  # run m's map, exactly predict_images([run m])'s
        np.testing.assert_allclose(each.mean(axis=0), mean, atol=1e-7)
        assert each.shape == (2, *mean.shape) and not np.allclose(each[0], each[1], atol=1e-3)


def test_predict_uncertainty_of_two_seeds_writes_entropy_mi_and_expected_entropy(runs, tmp_path, capsys):
    data = nifti_images(tmp_path / "brain-growth")
    out = tmp_path / "out"
    assert main(["predict", str(runs / "seeds"), str(data), "--out", str(out), "--uncertainty",
                 "--no-progress"]) == 0
    assert "uncertainty maps (nats, 2 model(s)): entropy, mi, expected_entropy" in capsys.readouterr().out
    cases = load_input(data).cases
    seeds = [runs / "seeds" / "seed0", runs / "seeds" / "seed1"]
    for case, each in zip(cases, per_seed_maps(seeds, [c.image for c in cases])):
        assert sorted(p.name for p in (out / case.case_id).iterdir()) == sorted(
            f"{t}{k}.nii.gz" for t in TASKS for k in ("", "_entropy", "_mi", "_expected_entropy"))
        for index, task in enumerate(TASKS):
            written = {kind: nib.load(str(out / case.case_id / f"{task}_{kind}.nii.gz")) for kind in KINDS}
            got = {kind: np.asarray(image.dataobj) for kind, image in written.items()}
            assert all(image.get_data_dtype() == np.float32 for image in written.values())
            np.testing.assert_array_equal(written["mi"].affine, nib.load(str(case.image_path)).affine)
            # the functions applied to each seed's predict_images map
            np.testing.assert_allclose(got["entropy"], entropy(each[:, index].mean(axis=0)), atol=1e-6)
            np.testing.assert_allclose(got["mi"], mutual_information(each[:, index]), atol=1e-6)
            np.testing.assert_allclose(got["expected_entropy"], expected_entropy(each[:, index]), atol=1e-6)
            np.testing.assert_allclose(got["entropy"], got["mi"] + got["expected_entropy"], atol=1e-6)
            # the entropy is that of the probability map written
            prob = np.asarray(nib.load(str(out / case.case_id / f"{task}.nii.gz")).dataobj)
            np.testing.assert_allclose(got["entropy"], entropy(prob), atol=1e-5)
            assert got["mi"].max() > 1e-3 and got["expected_entropy"].max() > 0.1  # two different seeds
    record = json.loads((out / "predictions.json").read_text())
    written = record["uncertainty"]
    assert written["unit"] == "nats" and written["models"] == 2 and written["maps"] == list(KINDS)
    assert written["max_nats"] == {"task01": LN2, "task02": LN2} and written["entropy"] == "Bernoulli, per task"
    assert "entropy = mi + expected_entropy" in written["decomposition"]
    assert "case01/task01_mi.nii.gz" in record["files"]


def test_class_names_that_would_read_as_uncertainty_maps_are_refused(tmp_path):
    from softseg.data.datasets import class_names

    # evaluation skips <name>_entropy/_mi/_expected_entropy files: a class named so would vanish
    for name in ("rim_entropy", "rim_mi", "rim_expected_entropy"):
        with pytest.raises(SoftsegError, match=rf"'{name}': expected a class name .*nor ending in '_entropy'"):
            class_names(tmp_path / "dataset.json", {"background": 0, name: 1})
    assert class_names(tmp_path / "dataset.json", {"background": 0, "semi_minor": 1, "mid": 2}) == (
        "background", "semi_minor", "mid")


def test_evaluate_skips_the_uncertainty_maps(runs, tmp_path):
    data, pred = labelled_pngs(tmp_path / "data"), tmp_path / "pred"
    predict_folder([runs / "one"], data, pred, options=RunOptions(progress=False),
                   outputs=PredictOutputs(uncertainty=True))
    assert (pred / "c01" / "task01_expected_entropy.png").is_file()
    assert main(["evaluate", str(pred), str(data), "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["files"]["task01"] == {c: f"{c}/task01.png" for c in ("c01", "c02", "c03")}


def test_one_run_writes_the_entropy_alone(runs, tmp_path):
    data = nifti_images(tmp_path / "data", shapes=((32, 40),))
    out = tmp_path / "out"
    seed = runs / "seeds" / "seed1"
    predict_folder([seed], data, out, options=RunOptions(progress=False), outputs=PredictOutputs(uncertainty=True))
    assert sorted(p.name for p in (out / "case01").iterdir()) == [
        "task01.nii.gz", "task01_entropy.nii.gz", "task02.nii.gz", "task02_entropy.nii.gz"]
    (expected,) = predict_images([load_run(seed)], [load_input(data).cases[0].image])
    for index, task in enumerate(TASKS):
        got = np.asarray(nib.load(str(out / "case01" / f"{task}_entropy.nii.gz")).dataobj)
        np.testing.assert_allclose(got, entropy(expected[index]), atol=1e-7)
    written = json.loads((out / "predictions.json").read_text())["uncertainty"]
    assert written["models"] == 1 and written["maps"] == ["entropy"]
    assert "mutual information is 0 by definition" in written["decomposition"]
    # without --uncertainty the record says so
    predict_folder([seed], data, tmp_path / "plain", options=RunOptions(progress=False))
    assert json.loads((tmp_path / "plain" / "predictions.json").read_text())["uncertainty"] is None


def test_qubiq_layout_refuses_uncertainty(runs, tmp_path, capsys):
    data = nifti_images(tmp_path / "data", shapes=((32, 32),))
    with pytest.raises(SoftsegError, match=r"--qubiq writes a submission .*drop --std/--masks/--uncertainty"):
        predict_folder([runs / "seeds"], data, tmp_path / "o1", options=RunOptions(progress=False),
                       outputs=PredictOutputs(qubiq=True, uncertainty=True))
    assert main(["predict", str(runs / "seeds"), str(data), "--out", str(tmp_path / "o2"), "--qubiq",
                 "--uncertainty", "--no-progress"]) == 2
    assert "drop --std/--masks/--uncertainty" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_multiclass_runs_write_categorical_maps_over_all_classes_as_png(runs, tmp_path):
    data = write_demo_classes(tmp_path / "disc-cup", seed=0, size=40, n_cases=2)
    out = tmp_path / "out"
    predict_folder([runs / "classes"], data, out, options=RunOptions(progress=False),
                   outputs=PredictOutputs(uncertainty=True))
    cases = load_input(data).cases
    seeds = [runs / "classes" / "seed0", runs / "classes" / "seed1"]
    for case, each in zip(cases, per_seed_maps(seeds, [c.image for c in cases])):
        assert each.shape[:2] == (2, 3)
        assert sorted(p.name for p in (out / case.case_id).iterdir()) == [
            "background.png", "classes_entropy.png", "classes_expected_entropy.png", "classes_mi.png",
            "cup.png", "label-map.png", "rim.png"]
        got = {kind: io.read_map(out / case.case_id / f"classes_{kind}.png", upper=LN3)[0] for kind in KINDS}
        step = LN3 / 65535  # 16-bit PNG of value / ln 3
        np.testing.assert_allclose(got["entropy"], entropy(each.mean(axis=0), categorical=True), atol=step)
        np.testing.assert_allclose(got["mi"], mutual_information(each, categorical=True), atol=step)
        np.testing.assert_allclose(got["expected_entropy"], expected_entropy(each, categorical=True), atol=step)
        assert got["mi"].max() > 1e-3  # two different seeds
    written = json.loads((out / "predictions.json").read_text())["uncertainty"]
    assert written["max_nats"] == {"classes": LN3} and written["entropy"] == "categorical over the 3 classes"


# ----------------------------------------------------------------------------- report


def labelled_pngs(root: Path, size: int = 40) -> Path:
    """A rater-folder dataset of three grey PNG cases (3 raters, disks of growing radius)."""
    yy, xx = np.mgrid[:size, :size]
    for i, case in enumerate(("c01", "c02", "c03")):
        dist = np.hypot(yy - 16 - 3 * i, xx - 20)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray((60 + 120 * (dist < 10) + 5 * (xx % 7)).astype(np.uint8)).save(root / "images" / f"{case}.png")
        (root / "raters" / case).mkdir(parents=True)
        for r, radius in enumerate((7, 9, 11)):
            Image.fromarray(((dist < radius) * 255).astype(np.uint8)).save(root / "raters" / case / f"rater{r}.png")
    return root


@pytest.fixture(scope="module")
def evaluated(runs, tmp_path_factory):
    """Predictions of two seeds with --uncertainty, of one seed without, each evaluated."""
    root = tmp_path_factory.mktemp("report")
    data = labelled_pngs(root / "data")
    folders = {}
    for name, seeds, flag in (("two", [runs / "one"], True), ("plain", [runs / "one" / "seed0"], False)):
        pred, ev = root / f"pred-{name}", root / f"eval-{name}"
        predict_folder(seeds, data, pred, options=RunOptions(progress=False), outputs=PredictOutputs(uncertainty=flag))
        assert main(["evaluate", str(pred), str(data), "--out", str(ev), "--no-progress"]) == 0
        folders[name] = (pred, ev)
    return root, folders


def _report(ev: Path, out: Path) -> str:
    assert main(["report", str(ev), "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_report_shows_the_uncertainty_maps_beside_the_probability(evaluated):
    root, folders = evaluated
    pred, ev = folders["two"]
    page = _report(ev, root / "two.html")
    names = re.findall(r"PNG copy: (uncertainty_task01_c\d+\.png)", page)
    assert len(names) == 3 and "mutual information (how much the seeds disagree: epistemic)" in page
    assert sorted(names) == sorted(p.name for p in (root / "two_files").glob("uncertainty_*.png"))
    examples = load_examples(read_evaluation(ev), 3)
    for example in examples:
        assert sorted(example.uncertainty) == sorted(KINDS) and example.max_nats == LN2
        # on the probability's grid, cropped and oriented with it: the entropy of the shown map
        np.testing.assert_allclose(example.uncertainty["entropy"], entropy(example.prob), atol=2e-3)
        np.testing.assert_allclose(example.uncertainty["entropy"],
                                   example.uncertainty["mi"] + example.uncertainty["expected_entropy"], atol=1e-4)
        # the values read from the file (a window of it: the crop), not recomputed
        full = io.read_map(pred / example.case_id / "task01_mi.png", upper=LN2)[0]
        shown = example.uncertainty["mi"]
        rows, cols = shown.shape
        assert shown.max() > 0 and any(np.array_equal(full[i:i + rows, j:j + cols], shown)
                                       for i in range(full.shape[0] - rows + 1) for j in range(full.shape[1] - cols + 1))


def test_report_without_uncertainty_maps_renders_as_before(evaluated):
    root, folders = evaluated
    pred, ev = folders["plain"]
    page = _report(ev, root / "plain.html")
    assert "uncertainty_" not in page and "Per-pixel entropy" not in page
    assert all(e.uncertainty == {} and e.max_nats is None for e in load_examples(read_evaluation(ev), 3))
    # a record naming the maps, but the files gone for one case: that case shows none
    pred, ev = folders["two"]
    for kind in KINDS:
        (pred / "c02" / f"task01_{kind}.png").unlink()
    page = _report(ev, root / "partial.html")
    assert "uncertainty_task01_c02" not in page and len(re.findall(r"PNG copy: uncertainty_", page)) == 2
    # no record at all (older or hand-made prediction folders)
    (pred / "predictions.json").unlink()
    page = _report(ev, root / "norecord.html")
    assert "uncertainty_" not in page and 'class="viewer"' in page


def test_multiclass_evaluation_skips_and_report_shows_the_maps_over_all_classes(runs, tmp_path):
    data = write_demo_classes(tmp_path / "disc-cup", seed=0, size=40, n_cases=3)
    pred, ev = tmp_path / "pred", tmp_path / "eval"
    predict_folder([runs / "classes"], data, pred, options=RunOptions(progress=False),
                   outputs=PredictOutputs(uncertainty=True))
    assert main(["evaluate", str(pred), str(data), "--out", str(ev), "--no-progress"]) == 0
    assert set(json.loads((ev / "summary.json").read_text())["files"]) == {"rim", "cup"}
    page = _report(ev, tmp_path / "report.html")
    assert len(re.findall(r"PNG copy: uncertainty_(rim|cup)_case\d+\.png", page)) == 6  # 3 cases x 2 classes
    assert "over all classes (background included)" in page and f"ln K = {LN3:.3f}" in page
    for example in load_examples(read_evaluation(ev), 3):
        assert example.over_classes and example.max_nats == LN3 and sorted(example.uncertainty) == sorted(KINDS)


def test_volume_example_slices_orients_and_crops_the_uncertainty_maps_with_the_prediction():
    from softseg.data.cases import Case
    from softseg.data.io import Geometry
    from softseg.report.examples import _prepare

    shape = (80, 60, 5)
    masks = np.zeros((2,) + shape, bool)
    masks[:, 10:16, 4:9, 3] = True  # slice 3 holds the label: shown, turned and cropped
    masks[0, 10:12, 4:6, 1] = True
    case = Case("v1", np.zeros((1,) + shape, np.float32), (1.0,) * 3, Geometry("nifti", shape, np.eye(4), None),
                Path("v1.nii.gz"), {"task01": masks}, {"task01": ("a", "b")}, {}, {"task01": 2}, "Validation")
    soft = masks.mean(axis=0, dtype=np.float32)
    prob = soft * np.float32(0.9)
    maps = {"entropy": entropy(prob), "mi": soft * np.float32(0.25)}

    class Curves:  # an evaluation with no curves rows for this case
        curves = {"case": np.array([], str), "task": np.array([], str), "threshold": np.array([]),
                  "precision": np.array([]), "recall": np.array([]), "dice": np.array([])}

    example = _prepare(Curves, case, "task01", "best", 0.9, soft, prob, maps, LN2)
    assert "slice 3 of 5" in example.note and example.max_nats == LN2
    np.testing.assert_array_equal(example.uncertainty["entropy"], entropy(example.prob))
    np.testing.assert_array_equal(example.uncertainty["mi"], example.soft * np.float32(0.25))
    assert example.uncertainty["mi"].shape == example.prob.shape != shape[:2]
    with pytest.raises(SoftsegError, match=r"task 'task01': mi map shape \(80, 60\) != soft label shape"):
        _prepare(Curves, case, "task01", "best", 0.9, soft, prob, {"mi": soft[..., 0]}, LN2)
