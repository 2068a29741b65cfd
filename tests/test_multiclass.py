"""Multi-class soft labels: dataset.json labels, raters' class maps -> class frequencies, the
hard-label baselines per pixel, the softmax losses, and training on the disc/cup demo set."""

from __future__ import annotations

import csv
import json

import numpy as np
import scipy.stats
import pytest
import torch
from PIL import Image

from softseg.cli import main
from softseg.data import labels as L
from softseg.data.datasets import class_names, load_dataset, scan_dataset
from softseg.data.synthetic_classes import DATASET, LABELS, write_demo_classes
from softseg.errors import DatasetError, SoftsegError
from softseg.model.heads import as_class_distribution
from softseg.training.batches import prepare, sample_targets
from softseg.model.config import TrainConfig
from softseg.model.losses import (
    dice_semimetric_loss,
    dice_semimetric_loss_classes,
    loss_function,
    soft_cross_entropy,
    soft_cross_entropy_classes,
)

CLASSES = ("background", "rim", "cup")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_set(root, maps_per_case, labels=None, image=None):
    """A rater-folder set: ``maps_per_case[case] = [(H, W) uint8 map per rater]``."""
    labels = dict(LABELS) if labels is None else labels
    for case_id, maps in maps_per_case.items():
        shape = maps[0].shape
        pixels = np.full(shape, 100, np.uint8) if image is None else image
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / f"{case_id}.png")
        folder = root / "raters" / case_id
        folder.mkdir(parents=True, exist_ok=True)
        for r, m in enumerate(maps, start=1):
            Image.fromarray(np.asarray(m, np.uint8)).save(folder / f"rater{r}.png")
    if labels:
        (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


# four raters on a 2 x 3 image: pixel by pixel the class counts are easy to read off
MAPS = [np.array([[0, 1, 2], [1, 2, 2]]), np.array([[0, 1, 2], [2, 2, 0]]),
        np.array([[0, 2, 1], [1, 2, 0]]), np.array([[1, 2, 1], [2, 2, 0]])]


# ----------------------------------------------------------------------------- dataset.json


def test_labels_are_read_in_value_order_and_bad_entries_are_refused(tmp_path):
    path = tmp_path / "dataset.json"
    assert class_names(path, {"cup": 2, "background": 0, "rim": 1}) == CLASSES
    assert class_names(path, None) == ()
    cases = [
        ({"background": 0, "rim": 1, "cup": 3}, r"values 0..2 once each .* found 0, 1, 3; remap"),
        ({"bg": 0, "rim": 1}, r'expected the background class as "background": 0'),
        ({"background": 1, "rim": 0}, r'"background": 0 .*found 1'),
        ({"background": 0, "disc": [1, 2], "cup": 2}, r"'disc': a region .*binary tasks"),
        ({"background": 0, "rim": "1"}, r"'rim': expected an integer value, found '1'"),
        ({"background": 0}, r"at least one foreground class"),
        ([0, 1], r"must map class names to values"),
    ]
    for labels, message in cases:
        with pytest.raises(SoftsegError, match=message):
            class_names(path, labels)


# ----------------------------------------------------------------------------- soft labels


def test_soft_labels_are_the_class_frequencies_exactly(tmp_path):
    root = write_set(tmp_path / "d", {"c1": MAPS, "c2": [m[::-1] for m in MAPS]})
    dataset = load_dataset(root)
    assert dataset.classes == CLASSES and dataset.tasks == ("rim", "cup")
    case = dataset.cases[0]
    np.testing.assert_array_equal(L.rater_class_maps(case, CLASSES), np.stack(MAPS))
    p = L.class_distribution(case, CLASSES)
    expected = np.stack([np.mean(np.stack(MAPS) == v, axis=0) for v in range(3)]).astype(np.float32)
    np.testing.assert_array_equal(p, expected)
    np.testing.assert_array_equal(p[:, 0, 0], np.float32([0.75, 0.25, 0.0]))  # by hand: 0, 0, 0, 1
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-7)
    np.testing.assert_array_equal(L.soft_label(case, "cup"), p[2])  # a class is a binary task


def test_majority_is_the_mode_with_ties_to_the_lower_class():
    from softseg.data.cases import Case
    from softseg.data.io import Geometry

    maps = np.stack([np.array([[1, 2, 0]]), np.array([[2, 2, 0]]), np.array([[1, 0, 1]]), np.array([[2, 1, 1]])])
    case = Case("c", np.zeros((1, 1, 3), np.float32), (1.0, 1.0), Geometry("png", (1, 3)), None,
                masks={"rim": maps == 1, "cup": maps == 2}, n_raters={"rim": 4, "cup": 4})
    # pixel 0: rim 2 vs cup 2 -> rim (the lower); pixel 1: cup 2, bg 1, rim 1 -> cup; pixel 2: bg 2 vs rim 2 -> bg
    np.testing.assert_array_equal(L.majority_classes(case, CLASSES).argmax(0), [[1, 2, 0]])
    assert L.majority_classes(case, CLASSES).sum(0).tolist() == [[1, 1, 1]]


def test_staple_equals_simpleitk_and_a_random_rater_keeps_one_rater_for_every_class(tmp_path):
    import SimpleITK as sitk

    root = write_demo_classes(tmp_path / "demo", seed=1, size=32, n_cases=2)
    dataset = load_dataset(root)
    case = dataset.cases[0]
    maps = L.rater_class_maps(case, CLASSES)
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    direct = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m) for m in maps]))
    got = L.staple_classes(case, CLASSES).argmax(0)
    decided = direct != 255
    np.testing.assert_array_equal(got[decided], direct[decided])
    np.testing.assert_array_equal(got[~decided], L.majority_classes(case, CLASSES).argmax(0)[~decided])
    drawn = L.random_rater_classes(case, CLASSES, np.random.default_rng(0))
    assert any((drawn.argmax(0) == m).all() for m in maps)


def test_staple_pixels_left_undecided_take_the_majority_vote(tmp_path):
    import SimpleITK as sitk

    # two raters who disagree symmetrically (1 <-> 2): STAPLE cannot prefer either of them there
    a, b = np.array([[0, 1, 2, 1], [0, 2, 1, 0]]), np.array([[0, 2, 1, 1], [0, 1, 2, 0]])
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetLabelForUndecidedPixels(255)
    direct = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in (a, b)]))
    np.testing.assert_array_equal(direct == 255, a != b)  # the disagreements are undecided
    case = load_dataset(write_set(tmp_path / "d", {"c1": [a, b]})).cases[0]
    got = L.staple_classes(case, CLASSES)
    assert got.shape == (3, 2, 4) and got.dtype == np.float32 and (got.sum(0) == 1).all()
    # agreed pixels keep the raters' class; a 1-vs-2 tie goes to the lower class, as majority does
    np.testing.assert_array_equal(got.argmax(0), [[0, 1, 1, 1], [0, 1, 1, 0]])
    np.testing.assert_array_equal(got, L.majority_classes(case, CLASSES))


# ----------------------------------------------------------------------------- bad input


def test_a_value_outside_the_labels_is_a_problem_naming_file_value_and_count(tmp_path, capsys):
    bad = [m.copy() for m in MAPS]
    bad[1][0, 0] = 7
    root = write_set(tmp_path / "d", {"c1": bad, "c2": MAPS})
    assert main(["check", str(root)]) == 2
    out = capsys.readouterr().out
    assert "rater2.png: expected a class map with the values 0..2" in out and "found 7 (1 pixels)" in out
    assert main(["labels", str(root), str(tmp_path / "out")]) == 2 and not (tmp_path / "out").exists()


def test_binary_masks_under_labels_and_class_maps_without_them_are_refused(tmp_path):
    binary = [np.where(m > 0, 255, 0) for m in MAPS]
    scan = scan_dataset(write_set(tmp_path / "a", {"c1": binary}))
    assert any("it looks like a binary 0/255 mask" in p for p in scan.problems)
    ones = [np.where(m > 0, 1, 0) for m in MAPS]
    scan = scan_dataset(write_set(tmp_path / "b", {"c1": ones}))
    assert any("class 'cup' (value 2 in dataset.json's labels) is drawn in no rater's map" in p
               and "are these binary masks?" in p for p in scan.problems)
    with pytest.raises(DatasetError) as error:
        load_dataset(write_set(tmp_path / "c", {"c1": MAPS}, labels={}))
    assert "expected a binary mask" in str(error.value) and "declare their classes in dataset.json" in str(error.value)


def test_labels_need_one_class_map_per_rater_and_rater_masks(tmp_path):
    root = write_set(tmp_path / "d", {"c1": MAPS})
    for task in ("a", "b"):
        folder = root / "raters" / "c1" / task
        folder.mkdir()
        Image.fromarray(MAPS[0].astype(np.uint8)).save(folder / "r1.png")
    for f in (root / "raters" / "c1").glob("*.png"):
        f.unlink()
    with pytest.raises(SoftsegError, match=r"labels make each rater's file one class map, but the layout has 2 tasks"):
        load_dataset(root)
    agreement = tmp_path / "agr"
    (agreement / "images").mkdir(parents=True)
    (agreement / "agreement").mkdir()
    (agreement / "dataset.json").write_text(json.dumps({"labels": LABELS, "n_raters": 2}))
    with pytest.raises(SoftsegError, match="agreement-map layout holds one map per task"):
        load_dataset(agreement)


def test_demo_data_writes_the_disc_cup_set(tmp_path):
    assert main(["demo-data", str(tmp_path / "d"), "--classes", "--size", "32", "--cases", "2", "1", "1"]) == 0
    dataset = load_dataset(tmp_path / "d" / DATASET)
    assert dataset.classes == CLASSES and len(dataset.cases) == 4 and dataset.cases[0].image.shape == (3, 32, 32)
    cup, rim = dataset.cases[0].masks["cup"], dataset.cases[0].masks["rim"]
    assert cup.shape == (4, 32, 32) and cup.any() and rim.any() and not (cup & rim).any()


def test_labels_command_writes_one_file_per_class(tmp_path):
    root = write_set(tmp_path / "d", {"c1": MAPS})
    assert main(["labels", str(root), str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out" / "c1").iterdir())
    assert written == ["background.png", "cup.png", "rim.png"]
    cup = np.asarray(Image.open(tmp_path / "out" / "c1" / "cup.png")) / 65535
    np.testing.assert_allclose(cup, np.mean(np.stack(MAPS) == 2, axis=0), atol=1e-5)


# ----------------------------------------------------------------------------- losses


def test_softmax_losses_are_minimal_at_the_class_distribution_and_match_monai():
    from monai.losses import DiceLoss

    g = torch.tensor([0.5, 0.25, 0.25]).reshape(1, 3, 1, 1).expand(1, 3, 4, 4)
    best = soft_cross_entropy_classes(torch.log(g), g)
    for other in ([0.6, 0.2, 0.2], [0.4, 0.3, 0.3], [1 / 3, 1 / 3, 1 / 3]):
        q = torch.tensor(other).reshape(1, 3, 1, 1).expand(1, 3, 4, 4)
        assert soft_cross_entropy_classes(torch.log(q), g) > best
    assert float(dice_semimetric_loss_classes(torch.log(g), g)) == pytest.approx(0.0, abs=1e-6)
    # with two classes the softmax CE is the binary one of the logit difference
    z = torch.randn(2, 1, 5, 5)
    soft = torch.rand(2, 1, 5, 5)
    two = torch.cat([torch.zeros_like(z), z], 1)
    assert float(soft_cross_entropy_classes(two, torch.cat([1 - soft, soft], 1))) == \
        pytest.approx(float(soft_cross_entropy(z, soft)), rel=1e-5)
    # hard targets: the Dice semimetric loss is MONAI's soft Dice over the foreground classes
    logits = torch.randn(2, 3, 8, 8)
    hard = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 8, 8)), 3).permute(0, 3, 1, 2).float()
    monai = DiceLoss(softmax=True, include_background=False, batch=True)(logits, hard)
    assert float(dice_semimetric_loss_classes(logits, hard)) == pytest.approx(float(monai), rel=1e-5)
    assert loss_function("ce", multiclass=True) is soft_cross_entropy_classes
    assert loss_function("dml") is dice_semimetric_loss


def test_class_targets_are_renormalised_and_padding_becomes_background():
    labels = torch.tensor([[0.5, 0.25, 0.26], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 2, 1)
    out = as_class_distribution(labels)
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0, :, 1, 0].numpy(), [1, 0, 0])
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), np.array([0.5, 0.25, 0.26]) / 1.01, rtol=1e-6)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def disc_cup(tmp_path_factory):
    return load_dataset(write_demo_classes(tmp_path_factory.mktemp("mc"), seed=0, size=48, n_cases=4))


def test_training_targets_are_class_distributions_for_every_label_mode(disc_cup):
    config = TrainConfig(tasks=disc_cup.tasks, classes=disc_cup.classes, in_channels=3)
    for mode in ("soft", "majority", "staple", "random_rater"):
        data = prepare(disc_cup.cases[:2], config.replace(label_mode=mode))
        _, targets = sample_targets(data, [0, 1], torch.Generator().manual_seed(0))
        for target in targets:
            assert target.shape == (3, 48, 48)
            np.testing.assert_allclose(target.sum(0).numpy(), 1.0, atol=1e-6)
            values = set(np.unique(target.numpy()).tolist())
            assert values <= {0.0, 1.0} if mode != "soft" else values <= {0.0, 0.25, 0.5, 0.75, 1.0}


def test_a_multiclass_run_has_a_softmax_head_over_the_classes(disc_cup, tmp_path):
    from softseg.inference.runs import load_run
    from softseg.training.train import train

    ids = [c.case_id for c in disc_cup.cases]
    config = TrainConfig(epochs=1, batch_size=2, aug_copies=1, crop_size=32, encoder_weights="none",
                         precision="fp32", device="cpu")
    run = train(config, disc_cup, tmp_path / "seed0", ids[:3], ids[3:], progress=False)
    saved = json.loads((run / "config.json").read_text())
    assert saved["classes"] == list(CLASSES) and saved["tasks"] == ["rim", "cup"] and saved["loss"] == "ce+dml"
    loaded = load_run(run, device="cpu")
    out = loaded.model(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 3, 32, 32)
    with pytest.raises(SoftsegError, match="trains all its classes together"):
        train(config.replace(tasks=("cup",)), disc_cup, tmp_path / "other", ids[:3], ids[3:], progress=False)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def mc_run(disc_cup, tmp_path_factory):
    from softseg.training.train import train

    ids = [c.case_id for c in disc_cup.cases]
    config = TrainConfig(epochs=2, batch_size=2, aug_copies=1, crop_size=32, encoder_weights="none",
                         precision="fp32", device="cpu")
    return train(config, disc_cup, tmp_path_factory.mktemp("mcrun") / "seed0", ids[:3], ids[3:], progress=False)


def test_predict_writes_class_maps_summing_to_one_and_a_label_map(mc_run, disc_cup, tmp_path):
    out = tmp_path / "pred"
    assert main(["predict", str(mc_run), str(disc_cup.root), "--out", str(out), "--std", "--masks", "0.5",
                 "--device", "cpu", "--no-progress"]) == 0
    case = disc_cup.cases[0]
    files = sorted(p.name for p in (out / case.case_id).iterdir())
    assert files == ["background.png", "background_std.png", "cup.png", "cup_mask-0.50.png", "cup_std.png",
                     "label-map.png", "rim.png", "rim_mask-0.50.png", "rim_std.png"]
    maps = np.stack([np.asarray(Image.open(out / case.case_id / f"{c}.png"), np.float64) / 65535 for c in CLASSES])
    np.testing.assert_allclose(maps.sum(0), 1.0, atol=2e-5)  # 16-bit rounding of three maps
    label_map = np.asarray(Image.open(out / case.case_id / "label-map.png"))
    np.testing.assert_array_equal(label_map, maps.argmax(0))

    from softseg.inference.arrays import predict_images
    from softseg.inference.runs import load_run

    probs = predict_images([load_run(mc_run, device="cpu")], [case.image for case in disc_cup.cases])
    for p in probs:
        assert p.shape == (3, 48, 48)
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)


def test_per_class_evaluation_is_the_binary_metrics_of_each_class(mc_run, disc_cup, tmp_path):
    import csv

    from softseg.evaluation import metrics

    out, ev = tmp_path / "pred", tmp_path / "eval"
    assert main(["predict", str(mc_run), str(disc_cup.root), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert main(["evaluate", str(out), str(disc_cup.root), "--out", str(ev), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(ev / "cases.csv", newline="")))
    assert {r["task"] for r in rows} == {"rim", "cup"}
    case = disc_cup.cases[1]
    for task in ("rim", "cup"):
        row = next(r for r in rows if r["case"] == case.case_id and r["task"] == task)
        prob = np.asarray(Image.open(out / case.case_id / f"{task}.png"), np.float64) / 65535
        soft = L.soft_label(case, task)
        assert float(row["qubiq"]) == pytest.approx(metrics.qubiq_score(prob.astype(np.float32), soft), abs=1e-6)


def test_calibrate_fits_one_temperature_for_the_softmax(mc_run, disc_cup):
    from softseg.model.temperature import class_cross_entropy, fit_temperature_classes

    # labels made as softmax(z / T0) give T0 back
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (3, 4000))
    g = np.exp(z / 2.5) / np.exp(z / 2.5).sum(0)
    assert fit_temperature_classes(z, g) == pytest.approx(2.5, rel=1e-4)
    assert class_cross_entropy(z, g, 2.5) < class_cross_entropy(z, g, 2.0)
    assert main(["calibrate", str(mc_run), str(disc_cup.root), "--device", "cpu", "--no-progress"]) == 0
    stored = json.loads((mc_run / "temperature.json").read_text())
    temperatures = {entry["temperature"] for entry in stored["tasks"].values()}
    assert set(stored["tasks"]) == {"rim", "cup"} and len(temperatures) == 1
    assert "softmax(logits / T)" in stored["method"]
    (mc_run / "temperature.json").unlink()


def test_onnx_export_has_softmax_outputs_matching_pytorch(mc_run, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from softseg.inference.runs import load_run

    assert main(["export", str(mc_run), "--onnx", str(tmp_path / "m.onnx")]) == 0
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["classes"] == list(CLASSES) and sidecar["output"]["shape"][1] == 3
    x = np.random.default_rng(1).normal(size=(1, 3, 32, 32)).astype(np.float32)
    got = onnxruntime.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": x})[0]
    model = load_run(mc_run, device="cpu").model.float()
    expected = torch.softmax(model(torch.from_numpy(x)), 1).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- calibration over all classes


def test_class_calibration_is_the_mean_class_ece_and_the_summed_brier():
    from monai.metrics import CalibrationErrorMetric

    from softseg.evaluation import metrics

    # by hand: 2 classes, 4 pixels; class 1 p = .15 .15 .85 .85 against g = 0 .5 1 1
    p1 = np.array([0.15, 0.15, 0.85, 0.85], np.float32)
    g1 = np.array([0.0, 0.5, 1.0, 1.0], np.float32)
    result = metrics.class_calibration(np.stack([1 - p1, p1]), np.stack([1 - g1, g1]))
    # class 1: bin 1 |.15 - .25| * 2/4 + bin 8 |.85 - 1| * 2/4 = .125; class 0 the same gaps
    assert result["ece_by_class"] == pytest.approx([0.125, 0.125])
    assert result["classwise_ece"] == pytest.approx(0.125)
    # Brier: per pixel 2 (p1 - g1)^2 = 2 * (.0225 + .1225 + .0225 + .0225) / 4
    assert result["brier"] == pytest.approx(2 * 0.19 / 4)

    # MONAI's ECE per class channel (bins of width 1/10, no value on an edge) as the oracle
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, (3, 30, 20))
    probs = (np.exp(z) / np.exp(z).sum(0)).astype(np.float32)
    target = (rng.multinomial(4, [0.5, 0.3, 0.2], (30, 20)).transpose(2, 0, 1) / 4).astype(np.float32)
    assert not np.any(probs * 10 == np.round(probs * 10))  # MONAI and softseg differ only on edges
    result = metrics.class_calibration(probs, target)
    monai = CalibrationErrorMetric(num_bins=10, include_background=True, metric_reduction="none")
    per_class = monai(torch.from_numpy(probs)[None], torch.from_numpy(target)[None])[0].numpy()
    np.testing.assert_allclose(result["ece_by_class"], per_class, atol=1e-6)
    assert result["classwise_ece"] == pytest.approx(per_class.mean(), abs=1e-6)
    assert result["brier"] == pytest.approx(((probs - target) ** 2).sum(0).mean(), rel=1e-6)
    with pytest.raises(SoftsegError, match="classes sum to 1"):
        metrics.class_calibration(probs * 0.9, target)


def test_evaluation_and_report_add_the_calibration_over_all_classes(mc_run, disc_cup, tmp_path, capsys, monkeypatch):
    import collections
    import csv

    from softseg.data import io
    from softseg.evaluation import metrics

    out, ev = tmp_path / "pred", tmp_path / "eval"
    assert main(["predict", str(mc_run), str(disc_cup.root), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    reads, read = collections.Counter(), io.read_probability
    monkeypatch.setattr(io, "read_probability", lambda path: reads.update([path.name]) or read(path))
    assert main(["evaluate", str(out), str(disc_cup.root), "--out", str(ev), "--no-progress"]) == 0
    monkeypatch.undo()
    assert reads == {f"{c}.png": len(disc_cup.cases) for c in CLASSES}  # each class map read once
    summary = json.loads((ev / "summary.json").read_text())
    rows = {r["case"]: r for r in csv.DictReader(open(ev / "classes.csv", newline=""))}
    direct = []
    for case in disc_cup.cases:
        probs = np.stack([np.asarray(Image.open(out / case.case_id / f"{c}.png"), np.float64) / 65535 for c in CLASSES])
        direct.append(metrics.class_calibration(probs, L.class_distribution(case, CLASSES)))
        assert float(rows[case.case_id]["classwise_ece"]) == pytest.approx(direct[-1]["classwise_ece"], abs=1e-9)
        assert float(rows[case.case_id]["ece_cup"]) == pytest.approx(direct[-1]["ece_by_class"][2], abs=1e-9)
    classes = summary["classes"]
    assert classes["classes"] == list(CLASSES) and classes["n_cases"] == 4
    assert classes["classwise_ece"]["mean"] == pytest.approx(np.mean([d["classwise_ece"] for d in direct]))
    assert classes["brier"]["mean"] == pytest.approx(np.mean([d["brier"] for d in direct]))
    assert classes["classwise_ece_pooled"] == pytest.approx(np.mean(list(classes["ece_by_class_pooled"].values())))
    assert "## Calibration over all classes" in (ev / "tables.md").read_text()

    report = tmp_path / "report.html"
    assert main(["report", str(ev), "--out", str(report)]) == 0
    page = report.read_text()
    assert 'id="class-rim"' in page and 'id="class-cup"' in page and "multi-class Brier" in page

    # every class map is needed: without the background's, nothing is written
    (out / disc_cup.cases[0].case_id / "background.png").unlink()
    capsys.readouterr()
    assert main(["evaluate", str(out), str(disc_cup.root), "--out", str(tmp_path / "eval2"), "--no-progress"]) == 2
    assert "missing class map(s) background.png" in capsys.readouterr().err
    assert not (tmp_path / "eval2").exists()


def test_seed_ensembles_average_the_softmax_maps(mc_run, disc_cup, tmp_path):
    import shutil

    from softseg.inference.arrays import predict_images
    from softseg.inference.runs import load_run
    from softseg.training.train import train

    shutil.copytree(mc_run, tmp_path / "ens" / "seed0")
    ids = [c.case_id for c in disc_cup.cases]
    config = TrainConfig(epochs=1, batch_size=2, aug_copies=1, crop_size=32, encoder_weights="none",
                         precision="fp32", device="cpu", seed=1)
    train(config, disc_cup, tmp_path / "ens" / "seed1", ids[:3], ids[3:], progress=False)
    runs = [load_run(tmp_path / "ens" / f"seed{s}", device="cpu") for s in (0, 1)]
    images = [c.image for c in disc_cup.cases[:2]]
    single = [predict_images([run], images) for run in runs]
    both = predict_images(runs, images)
    for i, p in enumerate(both):
        np.testing.assert_allclose(p, (single[0][i] + single[1][i]) / 2, atol=1e-6)
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
        assert not np.allclose(single[0][i], single[1][i], atol=1e-3)  # two different models
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "ens"), str(disc_cup.root), "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    cup = np.asarray(Image.open(out / disc_cup.cases[0].case_id / "cup.png"), np.float64) / 65535
    np.testing.assert_allclose(cup, both[0][2], atol=1 / 65535)


def test_compare_trains_majority_vote_per_pixel_and_tests_per_class(disc_cup, tmp_path):
    split = tmp_path / "split.csv"
    ids = [c.case_id for c in disc_cup.cases]
    split.write_text("case,split\n" + "".join(f"{c},{'Training' if i < 2 else 'Validation'}\n"
                                               for i, c in enumerate(ids)))
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("batch_size: 2\naug_copies: 0\nprecision: fp32\n")
    out = tmp_path / "cmp"
    assert main(["compare", str(disc_cup.root), "--out", str(out), "--split-csv", str(split),
                 "--methods", "soft:ce", "majority:ce", "--seeds", "0", "--epochs", "1", "--crop-size", "32",
                 "--encoder-weights", "none", "--config", str(tiny), "--no-progress"]) == 0
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    methods = ("soft:ce", "majority:ce")
    assert [(r["task"], r["method"]) for r in rows] == [(t, m) for t in ("cup", "rim", "all classes") for m in methods]
    config = json.loads((out / "majority-ce" / "seed0" / "run" / "config.json").read_text())
    assert config["label_mode"] == "majority" and config["classes"] == list(CLASSES)
    summary = json.loads((out / "majority-ce" / "seed0" / "eval" / "summary.json").read_text())
    assert sorted(summary["cases"]) == sorted(ids[2:]) and summary["classes"]["classes"] == list(CLASSES)

    # the calibration over all classes is compared too: values from each evaluation's classes.csv
    def per_case(method):
        with open(out / method.replace(":", "-") / "seed0" / "eval" / "classes.csv") as f:
            table = {r["case"]: r for r in csv.DictReader(f)}
        return {key: np.array([float(table[c][column]) for c in sorted(table)])
                for key, column in (("classwise_ece", "classwise_ece"), ("multiclass_brier", "brier"))}

    values = {m: per_case(m) for m in methods}
    overall = {r["method"]: r for r in rows if r["task"] == "all classes"}
    for m in methods:
        assert overall[m]["classwise_ece_mean"] == pytest.approx(values[m]["classwise_ece"].mean(), abs=1e-12)
        assert overall[m]["multiclass_brier_mean"] == pytest.approx(values[m]["multiclass_brier"].mean(), abs=1e-12)
        assert overall[m]["multiclass_brier_std"] == 0 and "below_diversity" not in overall[m]  # one seed
    with open(out / "statistics.csv") as f:
        stats = [r for r in csv.DictReader(f) if r["task"] == "all classes"]
    assert [(r["metric"], r["method"], r["reference"]) for r in stats] == [
        ("classwise_ece", "majority:ce", "soft:ce"), ("multiclass_brier", "majority:ce", "soft:ce")]
    for r in stats:
        d = values["majority:ce"][r["metric"]] - values["soft:ce"][r["metric"]]
        assert int(r["n_pairs"]) == len(ids) - 2 and float(r["mean_difference"]) == pytest.approx(d.mean(), abs=1e-12)
        assert float(r["p_value"]) == pytest.approx(scipy.stats.wilcoxon(d).pvalue) and r["higher_is_better"] == "False"
    markdown = (out / "comparison.md").read_text()
    assert "## all classes (softmax against the class distribution" in markdown and "Class-wise ECE" in markdown
    with open(out / "per_fold.csv") as f:
        folds = [r for r in csv.DictReader(f) if r["task"] == "all classes"]
    assert len(folds) == 2 and all(r["classwise_ece"] and r["multiclass_brier"] and not r["qubiq"] for r in folds)
    assert (out / "paired-all_classes.png").is_file()


def test_the_3d_mode_trains_and_predicts_multiclass_volumes(tmp_path):
    import nibabel as nib

    from softseg.training.train import train

    shape, affine = (24, 20, 8), np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 30.0)
    rng = np.random.default_rng(0)
    xx, yy, zz = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    root = tmp_path / "vols"
    for case in range(4):
        centre = np.array([12, 10, 4]) + rng.integers(-2, 3, 3)
        r = np.sqrt(((xx - centre[0]) * 0.8) ** 2 + ((yy - centre[1]) * 0.8) ** 2 + ((zz - centre[2]) * 2.5) ** 2)
        maps = [np.where(r < 2.5 + d, 2, np.where(r < 5.5 + d, 1, 0)).astype(np.uint8) for d in (0.0, 0.4, 0.8)]
        image = (100 * (maps[1] > 0) + 60 * (maps[1] > 1) + rng.normal(0, 10, shape)).astype(np.float32)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "raters" / f"c{case}").mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"c{case}.nii.gz")
        for k, m in enumerate(maps):
            nib.save(nib.Nifti1Image(m, affine), root / "raters" / f"c{case}" / f"rater{k}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "rim": 1, "cup": 2}}))

    dataset = load_dataset(root)
    assert dataset.classes == CLASSES and dataset.cases[0].spatial_shape == shape
    counts = np.stack([np.asarray(nib.load(root / "raters" / "c0" / f"rater{k}.nii.gz").dataobj) for k in range(3)])
    np.testing.assert_array_equal(L.class_distribution(dataset.cases[0], CLASSES),
                                  np.stack([(counts == v).sum(0) / 3 for v in range(3)]).astype(np.float32))
    config = TrainConfig(dims="3d", epochs=1, batch_size=2, aug_copies=1, patch_size=(16, 16, 8), base_filters=4,
                         encoder_weights="none", precision="fp32", device="cpu")
    ids = [c.case_id for c in dataset.cases]
    run = train(config, dataset, tmp_path / "run" / "seed0", ids[:3], ids[3:], progress=False)
    saved = json.loads((run / "config.json").read_text())
    assert saved["dims"] == "3d" and saved["classes"] == list(CLASSES)

    out = tmp_path / "pred"
    assert main(["predict", str(run), str(root), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    maps = np.stack([np.asarray(nib.load(out / "c3" / f"{c}.nii.gz").dataobj, np.float64) for c in CLASSES])
    assert maps.shape == (3, *shape)
    np.testing.assert_allclose(maps.sum(0), 1.0, atol=1e-5)
    label_map = nib.load(out / "c3" / "label-map.nii.gz")
    np.testing.assert_array_equal(np.asarray(label_map.dataobj), maps.argmax(0))
    np.testing.assert_allclose(label_map.affine, affine)
    assert main(["evaluate", str(out), str(root), "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert set(summary["tasks"]) == {"rim", "cup"} and "hd95_mm" in summary["tasks"]["cup"]["table2"]
    assert summary["classes"]["n_cases"] == 4
