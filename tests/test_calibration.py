"""Temperature scaling: the fit on a known optimum, the run files, prediction applying T, errors,
and the command line from training to predictions."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import expit

from _runs import make_run  # tests/_runs.py
from softseg.cli import main
from softseg.errors import SoftsegError
from softseg.inference.arrays import predict_images, predict_source_logits
from softseg.inference.calibration import calibrate, format_calibration
from softseg.model.temperature import fit_temperature, soft_cross_entropy
from softseg.inference.runs import load_run
from softseg.inference.run_files import read_temperature_file, write_temperature_file
from softseg.model.preprocess import normalize, pad_to_multiple
from softseg.data.cases import CaseQuery
from softseg.inference import RunOptions

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def rater_dataset(root: Path, n_cases=3, shape=(32, 40), n_raters=3, seed=0, signal=False) -> Path:
    """``images/<case>.png`` + ``raters/<case>/<rater>.png``: nested discs, one per rater.
    Images are noise, or with ``signal`` half the raters' fraction and half noise."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for c in range(n_cases):
        case = f"c{c + 1}"
        (root / "raters" / case).mkdir(parents=True)
        discs = [(yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 <= (6 + 3 * r + c) ** 2
                 for r in range(n_raters)]
        for r, disc in enumerate(discs):
            Image.fromarray(disc.astype(np.uint8) * 255).save(root / "raters" / case / f"r{r}.png")
        noise = rng.random(shape)
        image = 0.5 * np.mean(discs, axis=0) + 0.5 * noise if signal else noise
        Image.fromarray((image * 255).astype(np.uint8)).save(root / "images" / f"{case}.png")
    return root


def one_task_run(run_dir: Path, val=("c1", "c2"), seed=0, constant=None) -> Path:
    """A one-task run (tests/_runs.py); ``constant``: the logit it predicts everywhere."""
    run = make_run(run_dir, tasks=("task01",), seed=seed)
    (run / "split.json").write_text(json.dumps({"train": ["c3"], "val": list(val)}))
    if constant is not None:
        from softseg.model.checkpoints import load_checkpoint, save_checkpoint

        for name in ("best", "last"):
            state = load_checkpoint(run / "checkpoints" / f"{name}.pt", "cpu")
            state["model"]["segmentation_head.0.weight"].zero_()
            state["model"]["segmentation_head.0.bias"].fill_(constant)
            save_checkpoint(state, run / "checkpoints" / f"{name}.pt")
    return run


def soft_labels(data: Path, cases) -> np.ndarray:
    """The raters' fractions, straight from the PNGs, all pixels of ``cases`` in a row."""
    out = []
    for case in cases:
        votes = [np.asarray(Image.open(p)) > 0 for p in sorted((data / "raters" / case).iterdir())]
        out.append(np.mean(votes, axis=0).ravel())
    return np.concatenate(out)


def temperatures(run: Path, values: dict, checkpoint="checkpoints/last.pt", epoch=None) -> None:
    write_temperature_file(run, {"checkpoint": Path(checkpoint).stem, "checkpoint_file": checkpoint,
                                 "checkpoint_epoch": epoch,
                                 "tasks": {t: {"temperature": v} for t, v in values.items()}})


def hand_logits(run, image: np.ndarray) -> torch.Tensor:
    """The documented steps, written out: z-score, pad at the end to 32, model, crop."""
    x = normalize(image)
    h, w = x.shape[1:]
    with torch.no_grad():
        return run.model(pad_to_multiple(x)[None])[0, :, :h, :w]


# ----------------------------------------------------------------------------- the fit


def test_soft_cross_entropy_hand_values():
    assert soft_cross_entropy(np.zeros(4), np.full(4, 0.5)) == pytest.approx(np.log(2))
    # z = 2, g = 1: -log sigmoid(2) = log(1 + e^-2); at T = 2 it is -log sigmoid(1)
    assert soft_cross_entropy(np.array([2.0]), np.array([1.0])) == pytest.approx(np.log1p(np.exp(-2)))
    assert soft_cross_entropy(np.array([2.0]), np.array([1.0]), 2.0) == pytest.approx(np.log1p(np.exp(-1)))
    # g = 0.25 at z = -1: -(0.25 log s + 0.75 log(1 - s)), s = sigmoid(-1)
    s = 1 / (1 + np.e)
    assert soft_cross_entropy(np.array([-1.0]), np.array([0.25])) == pytest.approx(
        -(0.25 * np.log(s) + 0.75 * np.log(1 - s)))


@pytest.mark.parametrize("t0", [0.5, 2.0])
def test_fit_returns_the_temperature_the_labels_were_made_with(t0):
    z = np.random.default_rng(1).normal(0.0, 3.0, 20_000).astype(np.float32)
    g = expit(z.astype(np.float64) / t0)  # sigmoid(z / T0) exactly: CE is minimal at T0
    assert abs(fit_temperature(z, g) - t0) < 1e-3


def test_fit_is_the_minimum_of_a_fine_grid():
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 4.0, 5000)
    g = np.clip(expit(z / 1.7) + rng.normal(0, 0.1, z.size), 0, 1).round(1)  # noisy, in k/10
    t = fit_temperature(z, g)
    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 2001))
    best = grid[np.argmin([soft_cross_entropy(z, g, x) for x in grid])]
    assert t == pytest.approx(best, rel=2e-3)
    assert soft_cross_entropy(z, g, t) <= min(soft_cross_entropy(z, g, x) for x in (best, 1.0)) + 1e-9


def test_fit_errors():
    with pytest.raises(SoftsegError, match="one non-empty shape"):
        fit_temperature(np.zeros(3), np.zeros(4))
    with pytest.raises(SoftsegError, match="one non-empty shape"):
        fit_temperature(np.zeros(0), np.zeros(0))
    with pytest.raises(SoftsegError, match=r"soft labels in \[0, 1\]"):
        fit_temperature(np.zeros(3), np.full(3, 1.5))


# ----------------------------------------------------------------------------- on a run


def test_calibrate_on_a_constant_model_hand_computed(tmp_path):
    """A model predicting logit b everywhere: CE(T) = softplus(b / T) - mean(g) b / T is
    minimal where sigmoid(b / T) = mean(g), so T = b / logit(mean g)."""
    data = rater_dataset(tmp_path / "data")
    b = -3.0
    run = one_task_run(tmp_path / "run", constant=b)
    results = calibrate(run, data, options=RunOptions(progress=False))
    path = run / "temperature.json"
    assert list(results) == [path]
    stored = read_temperature_file(run)
    assert stored == json.loads(json.dumps(results[path]))  # what was returned is what is on disk
    assert stored["cases"] == ["c1", "c2"] and stored["cases_from"].startswith("the run's validation ids")
    assert stored["checkpoint"] == "last" and stored["checkpoint_file"] == "checkpoints/last.pt"
    g = soft_labels(data, ["c1", "c2"])
    mean_g = g.mean()
    entry = stored["tasks"]["task01"]
    assert entry["n_pixels"] == g.size == 2 * 32 * 40
    assert entry["temperature"] == pytest.approx(b / np.log(mean_g / (1 - mean_g)), rel=1e-5)
    assert entry["soft_ce_before"] == pytest.approx(np.log1p(np.exp(b)) - mean_g * b, rel=1e-6)
    assert entry["soft_ce_after"] < entry["soft_ce_before"]  # the fit lowers the CE it fits
    # one bin holds every pixel: ECE = |p - mean g|, and after the fit p = mean g
    assert entry["ece_before"] == pytest.approx(abs(expit(b) - mean_g), rel=1e-5)
    assert entry["ece_after"] == pytest.approx(0.0, abs=1e-5)
    # load_run attaches it; the table names the run, the task and T
    assert load_run(run).temperature == (entry["temperature"],)
    assert f"{entry['temperature']:.4f}" in format_calibration(results)
    with pytest.raises(SoftsegError, match=r"temperature.json already holds fitted temperatures; pass --overwrite"):
        calibrate(run, data, options=RunOptions(progress=False))
    again = calibrate(run, data, overwrite=True, options=RunOptions(progress=False), query=CaseQuery(case_ids=("c3",)))
    assert again[path]["cases"] == ["c3"] and again[path]["cases_from"] == "--cases"
    mean_g = soft_labels(data, ["c3"]).mean()
    assert again[path]["tasks"]["task01"]["temperature"] == pytest.approx(b / np.log(mean_g / (1 - mean_g)), rel=1e-5)


def test_the_fit_uses_logits_resized_back_to_the_source_grid():
    """A run trained with a resize: the logits of the 24x24 model grid are resized back to
    each 37x45 image (the logits, not probabilities), and T is the minimum of a brute-force
    search over those logits, computed here by hand, against the PNGs' soft labels."""
    import tempfile

    import torch.nn.functional as F

    from softseg.data.datasets import load_dataset
    from softseg.inference.calibration import fit_run
    from softseg.inference.runs import LoadedRun
    from softseg.model.config import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        data = rater_dataset(Path(tmp) / "data", shape=(37, 45), signal=True)
        cases = load_dataset(data).select(case_ids=["c1", "c2"]).cases
        head = torch.nn.Conv2d(1, 1, 1)  # logit = 3 x - 2 of the z-scored image
        with torch.no_grad():
            head.weight.fill_(3.0)
            head.bias.fill_(-2.0)
        config = TrainConfig(tasks=("task01",), in_channels=1, resize=24, precision="fp32")
        run = LoadedRun(Path(tmp), head.eval(), config, ("task01",), Path(tmp) / "last.pt", torch.device("cpu"))
        entry = fit_run(run, cases, batch_size=1, progress=False)["task01"]
        z = []
        for case in ("c1", "c2"):
            x = torch.from_numpy(np.asarray(Image.open(data / "images" / f"{case}.png"), dtype=np.float64))
            x = ((x - x.mean()) / x.std(unbiased=False)).float()[None, None]
            small = F.interpolate(x, size=(24, 24), mode="bilinear", antialias=True)
            with torch.no_grad():
                back = F.interpolate(3.0 * small - 2.0, size=(37, 45), mode="bilinear")
            z.append(back.numpy().ravel())
        z, g = np.concatenate(z), soft_labels(data, ["c1", "c2"])
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = grid[np.argmin([soft_cross_entropy(z, g, t) for t in grid])]
    assert 0.1 < best < 10  # an interior optimum: the logits follow the labels
    assert entry["temperature"] == pytest.approx(best, rel=2e-3)
    assert entry["soft_ce_before"] == pytest.approx(soft_cross_entropy(z, g), rel=1e-4)
    assert entry["soft_ce_after"] == pytest.approx(soft_cross_entropy(z, g, entry["temperature"]), rel=1e-4)
    assert entry["n_pixels"] == 2 * 37 * 45 and not entry["at_bound"]


def test_each_seed_is_fitted_on_its_own_validation_cases(tmp_path):
    data = rater_dataset(tmp_path / "data")
    one_task_run(tmp_path / "seeds" / "seed0", val=("c1",), seed=0)
    one_task_run(tmp_path / "seeds" / "seed1", val=("c2", "c3"), seed=1)
    results = calibrate(tmp_path / "seeds", data, options=RunOptions(progress=False))
    assert [p.parent.name for p in results] == ["seed0", "seed1"]
    assert [payload["cases"] for payload in results.values()] == [["c1"], ["c2", "c3"]]
    alone = calibrate(tmp_path / "seeds" / "seed1", data, overwrite=True, options=RunOptions(progress=False))
    (payload,) = alone.values()
    assert payload["tasks"] == results[tmp_path / "seeds" / "seed1" / "temperature.json"]["tasks"]


def test_prediction_divides_the_logits_by_t(tmp_path):
    run = make_run(tmp_path / "run", tasks=("task01", "task02"))
    temperatures(run, {"task01": 2.5, "task02": 0.4})
    image = np.random.default_rng(3).random((1, 37, 45)).astype(np.float32)
    loaded = load_run(run)
    assert loaded.temperature == (2.5, 0.4)
    z = hand_logits(loaded, image).numpy().astype(np.float64)
    (prob,) = predict_images([loaded], [image])
    np.testing.assert_allclose(prob[0], expit(z[0] / 2.5), atol=1e-6)
    np.testing.assert_allclose(prob[1], expit(z[1] / 0.4), atol=1e-6)
    (plain,) = predict_images([load_run(run, temperature="off")], [image])
    np.testing.assert_allclose(plain, expit(z), atol=1e-6)
    assert np.abs(plain - prob).max() > 0.05  # the test can tell them apart
    # the logits calibration fits are the ones prediction turns into probabilities
    (logits,) = predict_source_logits(load_run(run, temperature="off"), [image])
    np.testing.assert_allclose(logits, z, atol=1e-5)


def test_a_temperature_of_another_checkpoint_is_an_error_with_a_way_out(tmp_path):
    run = make_run(tmp_path / "run", tasks=("task01",))
    temperatures(run, {"task01": 2.0}, checkpoint="checkpoints/best.pt")
    with pytest.raises(SoftsegError, match=r"fitted for checkpoints/best.pt, not for the checkpoint used "
                       r"now, checkpoints/last.pt; recalibrate .*--checkpoint last --overwrite.*--temperature off"):
        load_run(run)
    assert load_run(run, checkpoint="best").temperature == (2.0,)
    assert load_run(run, temperature="off").temperature is None
    # the same file after more training (another epoch) is another checkpoint too
    temperatures_at_epoch = {"checkpoint_file": "checkpoints/last.pt", "checkpoint_epoch": 3,
                             "tasks": {"task01": {"temperature": 2.0}}}
    write_temperature_file(run, temperatures_at_epoch, overwrite=True)
    with pytest.raises(SoftsegError, match=r"fitted for checkpoints/last.pt \(epoch 3\)"):
        load_run(run)
    # best.pt and last.pt saved at one epoch are the same weights: one fit serves both
    from softseg.model.checkpoints import load_checkpoint, save_checkpoint

    for name in ("best", "last"):
        state = load_checkpoint(run / "checkpoints" / f"{name}.pt", "cpu")
        save_checkpoint({**state, "epoch": 3}, run / "checkpoints" / f"{name}.pt")
    assert load_run(run).temperature == (2.0,)
    assert load_run(run, checkpoint="best").temperature == (2.0,)
    write_temperature_file(run, {**temperatures_at_epoch, "checkpoint_file": "checkpoints/best.pt",
                                 "checkpoint_epoch": 2}, overwrite=True)
    with pytest.raises(SoftsegError, match=r"fitted for checkpoints/best.pt \(epoch 2\), not for "
                       r".*last.pt \(epoch 3\)"):
        load_run(run)
    write_temperature_file(run, {**temperatures_at_epoch, "tasks": {"task02": {"temperature": 2.0}}},
                           overwrite=True)
    with pytest.raises(SoftsegError, match=r"no temperature for task\(s\) task01"):
        load_run(run)
    (run / "temperature.json").write_text(
        '{"checkpoint_file": "checkpoints/last.pt", "tasks": {"task01": {"temperature": -1}}}')
    with pytest.raises(SoftsegError, match=r"temperature.json: expected .*T > 0.*rerun `softseg calibrate`"):
        load_run(run)
    with pytest.raises(SoftsegError, match=r"temperature 'on': expected one of auto, off"):
        load_run(run, temperature="on")


def test_calibrate_errors_name_the_file_or_case_and_write_nothing(tmp_path):
    from softseg.data.synthetic import write_demo_dataset

    data = rater_dataset(tmp_path / "data")
    empty = one_task_run(tmp_path / "empty", val=())
    with pytest.raises(SoftsegError, match=r"empty/split.json: the run has no validation cases; pass --split "
                       r"NAME or --cases ID"):
        calibrate(empty, data, options=RunOptions(progress=False))
    (empty / "split.json").unlink()
    with pytest.raises(SoftsegError, match=r"split.json: cannot read the validation case ids"):
        calibrate(empty, data, options=RunOptions(progress=False))
    run = one_task_run(tmp_path / "run", val=("c2", "c9"))
    with pytest.raises(SoftsegError, match=r"case\(s\) c9 \(the run's validation ids \(split.json\)\) are not in"):
        calibrate(run, data, options=RunOptions(progress=False))
    with pytest.raises(SoftsegError, match=r"case\(s\) c9 \(--cases\) are not in this dataset"):
        calibrate(run, data, options=RunOptions(progress=False), query=CaseQuery(case_ids=("c1", "c9")))
    with pytest.raises(SoftsegError, match=r"no cases in split 'Validation'"):
        calibrate(run, data, options=RunOptions(progress=False), query=CaseQuery(split="Validation"))
    two = make_run(tmp_path / "two", tasks=("task01", "task02"))
    with pytest.raises(SoftsegError, match=r"no labels of task\(s\) task02 that the run .*two predicts"):
        calibrate(two, data, options=RunOptions(progress=False), query=CaseQuery(case_ids=("c1",)))
    with pytest.raises(SoftsegError, match="either --split or --cases"):
        calibrate(run, data, options=RunOptions(progress=False), query=CaseQuery(split="Validation", case_ids=("c1",)))
    qubiq = write_demo_dataset(tmp_path / "demo", size=32, n_train=1, n_val=1, n_test=1) / "demo-shapes"
    with pytest.raises(SoftsegError, match=r"2 calibration case/task\(s\) have no labels: case03 \(task01\), "
                       r"case03 \(task02\)"):
        calibrate(two, qubiq, options=RunOptions(progress=False), query=CaseQuery(case_ids=("case02", "case03")))
    assert not list(tmp_path.rglob("temperature.json"))


def test_calibrating_best_on_its_validation_cases_warns(tmp_path, caplog):
    data = rater_dataset(tmp_path / "data")
    run = one_task_run(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="softseg.inference.runs"):
        calibrate(run, data, options=RunOptions(checkpoint="best", progress=False))
    assert "calibrating on 2 of 2 case(s) with the 'best' checkpoint" in caplog.text
    assert read_temperature_file(run)["checkpoint_file"] == "checkpoints/best.pt"


# ----------------------------------------------------------------------------- command line


def test_command_line_train_calibrate_predict(tmp_path, capsys):
    from softseg.data.synthetic import write_demo_dataset

    data = write_demo_dataset(tmp_path / "demo", size=32, n_train=2, n_val=2, n_test=1) / "demo-shapes"
    runs = tmp_path / "runs"
    assert main(["train", str(data), "--out", str(runs), "--epochs", "1", "--crop-size", "32",
                 "--batch-size", "2", "--aug-copies", "1", "--encoder-weights", "none",
                 "--precision", "fp32", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(runs), str(data), "--no-progress"]) == 0
    out = capsys.readouterr().out
    stored = read_temperature_file(runs / "seed0")
    assert stored["cases"] == json.loads((runs / "seed0" / "split.json").read_text())["val"]
    assert stored["checkpoint_epoch"] == 1 and stored["checkpoint_file"] == "checkpoints/last.pt"
    t = {task: entry["temperature"] for task, entry in stored["tasks"].items()}
    assert "seed0" in out and f"{t['task01']:.4f}" in out and "stored in" in out
    assert main(["calibrate", str(runs), str(data), "--no-progress"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err

    pred = tmp_path / "pred"
    assert main(["predict", str(runs), str(data), "--split", "Testing", "--out", str(pred), "--no-progress"]) == 0
    assert "temperatures applied: seed0 task01" in capsys.readouterr().out
    record = json.loads((pred / "predictions.json").read_text())
    assert record["checkpoint"] == "last"
    assert record["temperatures"] == {str((runs / "seed0").resolve()): t}
    assert (pred / record["cases"][0] / "task01.nii.gz").is_file()
    off = tmp_path / "off"
    assert main(["predict", str(runs), str(data), "--split", "Testing", "--out", str(off),
                 "--temperature", "off", "--no-progress"]) == 0
    assert json.loads((off / "predictions.json").read_text())["temperatures"] is None
    # a stale file is refused with the way out, and nothing is written
    shutil.copy(runs / "seed0" / "checkpoints" / "best.pt", tmp_path / "other.pt")
    assert main(["predict", str(runs), str(data), "--out", str(tmp_path / "stale"),
                 "--checkpoint", str(tmp_path / "other.pt"), "--no-progress"]) == 2
    assert "--temperature off" in capsys.readouterr().err and not (tmp_path / "stale").exists()
