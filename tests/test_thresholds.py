"""Operating-threshold picker: hand-computed cases and a brute-force search as the oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from softseg.errors import SoftsegError
from softseg.evaluation.metrics import FINE_THRESHOLDS
from softseg.inference.thresholds import OperatingPoint, format_tradeoff, pick_threshold, pooled_counts, tradeoff
from softseg.inference.run_files import read_threshold_file, write_threshold_file
from softseg.inference import RunOptions


def brute_force_counts(probs, refs, thresholds):
    """Pixel by pixel, threshold by threshold: no sorting, no vectorisation."""
    rows = []
    for t in thresholds:
        tp = fp = fn = 0
        for prob, ref in zip(probs, refs):
            for p, r in zip(np.ravel(prob).tolist(), np.ravel(ref).tolist()):
                predicted = p >= t
                tp += predicted and r
                fp += predicted and not r
                fn += (not predicted) and r
        rows.append((tp, fp, fn))
    return np.array(rows).T


def brute_force_pick(probs, refs, thresholds, criterion, target):
    """Enumerate every threshold with plain Python and pick by the documented rule."""
    best = None  # (score, threshold)
    for t in thresholds:
        tp, fp, fn = brute_force_counts(probs, refs, [t])[:, 0]
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
        if criterion == "target_recall":
            ok, score = recall >= target, precision
        elif criterion == "target_precision":
            ok, score = precision is not None and precision >= target, recall
        else:
            ok, score = True, f1
        if not ok:
            continue
        score = -1.0 if score is None else score
        if best is None or score >= best[0]:  # >= : ties move to the later, higher threshold
            best = (score, t)
    return None if best is None else best[1]


def test_hand_computed_counts_and_measures():
    # one case, 6 pixels; reference = first three
    prob = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.05])
    ref = np.array([True, True, True, False, False, False])
    table = tradeoff([prob], [ref], np.array([0.1, 0.5, 0.6, 0.8, 0.95]))
    # t=0.1: predicted {0.9,0.6,0.2,0.7,0.1} -> tp 3, fp 2, fn 0
    # t=0.5: {0.9,0.6,0.7} -> tp 2, fp 1, fn 1 ; t=0.6 same (0.6 >= 0.6)
    # t=0.8: {0.9} -> tp 1 fp 0 fn 2 ; t=0.95: nothing -> precision undefined
    np.testing.assert_array_equal(table.tp, [3, 2, 2, 1, 0])
    np.testing.assert_array_equal(table.fp, [2, 1, 1, 0, 0])
    np.testing.assert_array_equal(table.fn, [0, 1, 1, 2, 3])
    np.testing.assert_allclose(table.precision[:4], [3 / 5, 2 / 3, 2 / 3, 1.0])
    assert np.isnan(table.precision[4])
    np.testing.assert_allclose(table.recall, [1.0, 2 / 3, 2 / 3, 1 / 3, 0.0])
    np.testing.assert_allclose(table.f1, [6 / 8, 4 / 6, 4 / 6, 2 / 4, 0.0])


def test_counts_are_pooled_over_cases_not_averaged():
    big = (np.full(100, 0.9), np.ones(100, bool))  # all found
    small = (np.array([0.1, 0.2]), np.array([True, True]))  # none found at 0.5
    tp, fp, fn = pooled_counts([big[0], small[0]], [big[1], small[1]], np.array([0.5]))
    assert (tp[0], fp[0], fn[0]) == (100, 0, 2)
    table = tradeoff([big[0], small[0]], [big[1], small[1]], np.array([0.5]))
    assert table.recall[0] == pytest.approx(100 / 102)  # a case average would give 0.5


def test_exact_hundredths_tie():
    # a rater fraction 3/10 must count as >= 0.3 (np.linspace would say 0.30000000000000004)
    table = tradeoff([np.array([3 / 10])], [np.array([True])])
    index = int(np.flatnonzero(np.isclose(FINE_THRESHOLDS, 0.3))[0])
    assert FINE_THRESHOLDS[index] == 0.3
    assert table.tp[index] == 1 and table.tp[index + 1] == 0


def test_float32_maps_compare_at_their_own_precision():
    # float32 0.7 is 0.69999999; like metrics.py it still counts as >= 0.7
    prob = np.array([0.7, 0.69], dtype=np.float32)
    tp, _, fn = pooled_counts([prob], [np.array([True, True])], np.array([0.7]))
    assert (tp[0], fn[0]) == (1, 1)


@pytest.mark.parametrize("seed", range(6))
def test_counts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shapes = [(7, 5), (4, 9), (3, 3, 2)]
    # values on the grid and off it, to exercise exact ties
    probs = [np.round(rng.random(s), 2 if seed % 2 else 6) for s in shapes]
    refs = [rng.random(s) < 0.4 for s in shapes]
    thresholds = FINE_THRESHOLDS[::7]
    expected = brute_force_counts(probs, refs, thresholds)
    got = np.stack(pooled_counts(probs, refs, thresholds))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(
    "criterion,target",
    [("target_recall", 0.8), ("target_recall", 0.5), ("target_precision", 0.7),
     ("target_precision", 0.9), ("max_f1", None)],
)
def test_pick_matches_brute_force(seed, criterion, target):
    rng = np.random.default_rng(100 + seed)
    # a noisy but informative model: probabilities correlate with the reference
    refs = [rng.random((6, 6)) < 0.35 for _ in range(3)]
    probs = [np.clip(np.round(0.55 * r + 0.45 * rng.random(r.shape), 2), 0, 1) for r in refs]
    thresholds = FINE_THRESHOLDS[::3]
    expected = brute_force_pick(probs, refs, thresholds, criterion, target)
    table = tradeoff(probs, refs, thresholds)
    if expected is None:
        with pytest.raises(SoftsegError, match="best achievable"):
            pick_threshold(table, criterion, target)
        return
    point = pick_threshold(table, criterion, target)
    assert point.threshold == expected
    i = int(np.flatnonzero(thresholds == expected)[0])
    assert point.recall == table.recall[i] and point.f1 == table.f1[i]


def test_target_recall_hand_built():
    # reference pixels have p = 0.9, 0.7, 0.4, 0.3; background 0.8, 0.35, 0.1
    prob = np.array([0.9, 0.7, 0.4, 0.3, 0.8, 0.35, 0.1])
    ref = np.array([1, 1, 1, 1, 0, 0, 0], bool)
    table = tradeoff([prob], [ref])
    # recall >= 0.75 needs t <= 0.4; at t in (0.35, 0.4]: tp 3 fp 1 -> precision 0.75
    # at t <= 0.35 precision drops (fp 2): the best is t = 0.4 (highest of the tied 0.36..0.40)
    point = pick_threshold(table, "target_recall", 0.75)
    assert point == OperatingPoint("target_recall", 0.75, 0.4, 0.75, 0.75, 0.75)
    # precision >= 1.0 only where 0.8 is excluded: t in (0.8, 0.9] -> recall 0.25, t = 0.9
    point = pick_threshold(table, "target_precision", 1.0)
    assert (point.threshold, point.recall, point.precision) == (0.9, 0.25, 1.0)


def test_max_f1_ties_go_to_the_higher_threshold():
    prob = np.array([0.6, 0.2])
    ref = np.array([True, False])
    table = tradeoff([prob], [ref])
    # F1 = 1 for every t in (0.2, 0.6]: the picker takes 0.6
    assert pick_threshold(table, "max_f1").threshold == 0.6


def test_unreachable_recall_names_the_best_achievable():
    # two reference pixels score 0: recall never exceeds 1/3, reached up to t = 0.5
    prob = np.array([0.0, 0.0, 0.5])
    ref = np.array([True, True, True])
    table = tradeoff([prob], [ref])
    with pytest.raises(SoftsegError, match=r"best achievable is recall 0\.3333 at threshold 0\.5;"):
        pick_threshold(table, "target_recall", 0.9)


def test_max_f1_without_any_true_positive_is_an_error():
    table = tradeoff([np.array([0.0, 0.9])], [np.array([True, False])])
    with pytest.raises(SoftsegError, match="F1 is 0 at every threshold"):
        pick_threshold(table, "max_f1")


def test_unreachable_precision_is_an_error_not_a_fallback():
    # background always scores higher than foreground: precision peaks at 0.5 (all predicted)
    prob = np.array([0.2, 0.3, 0.9, 0.8])
    ref = np.array([True, True, False, False])
    table = tradeoff([prob], [ref])
    with pytest.raises(
        SoftsegError,
        match=r"no threshold in 0\.01\.\.0\.99 reaches precision 0\.6; the best achievable is "
        r"precision 0\.5000 at threshold 0\.2;",
    ):
        pick_threshold(table, "target_precision", 0.6)


@pytest.mark.parametrize(
    "criterion,target,message",
    [("target_recall", None, r"must be in \(0, 1\]"),
     ("target_precision", 1.5, r"must be in \(0, 1\], got 1\.5"),
     ("target_recall", 0.0, r"must be in \(0, 1\]"),
     ("max_f1", 0.5, "takes no target"),
     ("best", None, "unknown criterion 'best'")],
)
def test_bad_requests(criterion, target, message):
    table = tradeoff([np.array([0.5])], [np.array([True])])
    with pytest.raises(SoftsegError, match=message):
        pick_threshold(table, criterion, target)


def test_bad_inputs():
    with pytest.raises(SoftsegError, match="reference masks of all 1 cases are empty"):
        tradeoff([np.array([0.5, 0.2])], [np.array([False, False])])
    with pytest.raises(SoftsegError, match=r"map 0: prediction shape \(2,\) != reference"):
        tradeoff([np.array([0.5, 0.2])], [np.array([True])])
    with pytest.raises(SoftsegError, match="2 probability maps but 1 reference"):
        pooled_counts([np.zeros(1), np.zeros(1)], [np.ones(1, bool)])


def test_format_tradeoff_marks_the_choice():
    table = tradeoff([np.array([0.9, 0.42, 0.1])], [np.array([True, True, False])])
    text = format_tradeoff(table, chosen=0.42)
    lines = text.splitlines()
    assert lines[0].split() == ["threshold", "precision", "recall", "F1"]
    chosen = [line for line in lines if "chosen" in line]
    assert len(chosen) == 1 and chosen[0].split()[:4] == ["0.42", "1.0000", "1.0000", "1.0000"]
    # every 5th threshold is listed, and "n/a" where nothing is predicted
    assert any(line.split()[:2] == ["0.95", "n/a"] for line in lines)


def test_threshold_file_round_trip_and_refusal(tmp_path):
    assert read_threshold_file(tmp_path) is None
    payload = {"criterion": "max_f1", "tasks": {"task01": {"threshold": 0.42}}}
    path = write_threshold_file(tmp_path, payload)
    assert json.loads(path.read_text()) == payload
    assert read_threshold_file(tmp_path) == payload
    with pytest.raises(SoftsegError, match=r"already holds .*task01 0\.42.*--overwrite"):
        write_threshold_file(tmp_path, {"tasks": {"task01": {"threshold": 0.5}}})
    write_threshold_file(tmp_path, {"tasks": {"task01": {"threshold": 0.5}}}, overwrite=True)
    assert read_threshold_file(tmp_path)["tasks"]["task01"]["threshold"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["threshold.json"]  # no temp file left


def test_threshold_file_invalid(tmp_path):
    (tmp_path / "threshold.json").write_text("{not json")
    with pytest.raises(SoftsegError, match="cannot read it as JSON"):
        read_threshold_file(tmp_path)
    (tmp_path / "threshold.json").write_text(json.dumps({"tasks": {"task01": {"threshold": 2}}}))
    with pytest.raises(SoftsegError, match=r"expected .*value in \(0, 1\]"):
        read_threshold_file(tmp_path)


# ----------------------------------------------------------------------------- on a run


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

def rater_dataset(root, n_cases=3, shape=(32, 40), n_raters=3, seed=0):
    """``images/<case>.png`` + ``raters/<case>/<rater>.png``: nested discs per rater."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for c in range(n_cases):
        case = f"c{c + 1}"
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(root / "images" / f"{case}.png")
        (root / "raters" / case).mkdir(parents=True)
        for r in range(n_raters):
            radius = 6 + 3 * r + c
            disc = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 <= radius**2
            Image.fromarray(disc.astype(np.uint8) * 255).save(root / "raters" / case / f"r{r}.png")
    return root


def make_run(run_dir, *, constant=None, seed=0, val=("c1", "c2")):
    """A one-task run; ``constant`` = the probability it predicts everywhere (else spread)."""
    import torch

    from softseg.model.config import TrainConfig, save_config, to_dict
    from softseg.model.modes import model_from_config
    from softseg.model.checkpoints import save_checkpoint

    config = TrainConfig(tasks=("task01",), in_channels=1, encoder_weights="none",
                         precision="fp32", seed=seed)
    torch.manual_seed(seed)
    model = model_from_config(config)
    head = model.segmentation_head[0]
    with torch.no_grad():
        if constant is None:
            head.weight.mul_(20.0)
        else:
            head.weight.zero_()
            head.bias.fill_(float(np.log(constant / (1 - constant))))
    (run_dir / "checkpoints").mkdir(parents=True)
    save_config(config, run_dir / "config.json")
    for name in ("best", "last"):
        save_checkpoint({"model": model.state_dict(), "config": to_dict(config)},
                        run_dir / "checkpoints" / f"{name}.pt")
    (run_dir / "split.json").write_text(json.dumps({"train": ["c3"], "val": list(val)}))
    return run_dir


def reference_fraction(data, cases, level):
    """Pooled share of pixels whose rater fraction is >= level, straight from the PNGs."""
    from PIL import Image

    hits = total = 0
    for case in cases:
        raters = sorted((data / "raters" / case).iterdir())
        votes = sum(np.array(Image.open(p)) > 0 for p in raters)
        hits += int((votes / len(raters) >= level).sum())
        total += votes.size
    return hits / total


def test_choose_thresholds_on_a_constant_model_hand_computed(tmp_path):
    from softseg.inference.thresholds import choose_threshold

    data = rater_dataset(tmp_path / "data")
    run = make_run(tmp_path / "run", constant=0.555)  # predicted for t <= 0.55, never above
    payload, tables = choose_threshold(run, data, criterion="max_f1", options=RunOptions(progress=False))
    f = reference_fraction(data, ["c1", "c2"], 2 / 3)  # majority of 3 = at least 2 raters
    point = payload["tasks"]["task01"]
    assert point["threshold"] == 0.55  # F1 = 2f/(1+f) tied over 0.01..0.55: the higher one
    assert point["precision"] == pytest.approx(f) and point["recall"] == 1.0
    assert point["f1"] == pytest.approx(2 * f / (1 + f))
    assert payload["cases"] == ["c1", "c2"] and payload["runs"] == [str(run.resolve())]
    table = tables["task01"]
    assert np.isnan(table.precision[55:]).all() and (table.recall[55:] == 0).all()
    # a lower reference level widens the reference: one rater of three is enough
    payload, _ = choose_threshold(run, data, criterion="target_recall", target=0.9, reference_level=0.3, options=RunOptions(progress=False))
    assert payload["tasks"]["task01"]["precision"] == pytest.approx(
        reference_fraction(data, ["c1", "c2"], 1 / 3))
    with pytest.raises(SoftsegError, match=rf"task01: no threshold .* reaches precision 0\.99; "
                       rf"the best achievable is precision {f:.4f} at threshold 0\.55"):
        choose_threshold(run, data, criterion="target_precision", target=0.99, options=RunOptions(progress=False))


def test_choose_thresholds_matches_brute_force_on_predictions(tmp_path):
    from softseg.data.datasets import load_dataset
    from softseg.inference.arrays import predict_images
    from softseg.data.labels import soft_label
    from softseg.inference.runs import load_run
    from softseg.inference.thresholds import choose_threshold

    data = rater_dataset(tmp_path / "data", seed=4)
    run = make_run(tmp_path / "run", seed=3, val=("c2", "c3"))
    payload, _ = choose_threshold(run, data, criterion="target_recall", target=0.6, options=RunOptions(progress=False))
    cases = load_dataset(data).select(case_ids=["c2", "c3"]).cases
    probs = [p[0] for p in predict_images([load_run(run)], [c.image for c in cases])]
    refs = [soft_label(c, "task01") >= 0.5 for c in cases]
    expected = brute_force_pick(probs, refs, FINE_THRESHOLDS, "target_recall", 0.6)
    assert payload["tasks"]["task01"]["threshold"] == expected


def test_choose_thresholds_errors(tmp_path):
    from softseg.inference.thresholds import choose_threshold

    data = rater_dataset(tmp_path / "data")
    run = make_run(tmp_path / "run", constant=0.5, val=("c1", "c9"))
    with pytest.raises(SoftsegError, match=r"validation cases c9 are not in this dataset"):
        choose_threshold(run, data, criterion="max_f1", options=RunOptions(progress=False))
    empty = make_run(tmp_path / "empty", constant=0.5, val=())
    with pytest.raises(SoftsegError, match=r"the run has no validation cases; pass --split"):
        choose_threshold(empty, data, criterion="max_f1", options=RunOptions(progress=False))
    with pytest.raises(SoftsegError, match=r"--reference-level must be in \(0, 1\], got 0"):
        choose_threshold(run, data, criterion="max_f1", reference_level=0, options=RunOptions(progress=False))


def test_threshold_command_stores_the_choice_and_predict_uses_it(tmp_path, capsys, monkeypatch):
    from softseg.cli import main

    monkeypatch.setattr("softseg.cli._COMMAND_MODULES", ("_predict",))
    data = rater_dataset(tmp_path / "data")
    run = make_run(tmp_path / "run", constant=0.555)
    assert main(["threshold", str(run), str(data), "--target-recall", "0.95"]) == 0
    out = capsys.readouterr().out
    assert "task01: threshold 0.55" in out and "<- chosen" in out
    stored = read_threshold_file(run)
    assert stored["criterion"] == "target_recall" and stored["target"] == 0.95
    assert stored["tasks"]["task01"]["threshold"] == 0.55
    assert main(["threshold", str(run), str(data), "--max-f1"]) == 2
    assert "already holds an operating threshold (task01 0.55)" in capsys.readouterr().err
    assert main(["threshold", str(run), str(data), "--target-precision", "0.99",
                 "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "task01: no threshold" in err and "best achievable is precision" in err
    assert read_threshold_file(run) == stored  # a failed request leaves the choice in place
    assert stored["run_names"] == ["."]
    moved = run.rename(tmp_path / "moved")  # runs travel between machines
    assert main(["predict", str(moved), str(data), "--out", str(tmp_path / "pred")]) == 0
    assert "masks at the run's operating threshold: task01 0.55" in capsys.readouterr().out
    mask, _ = __import__("softseg.data.io", fromlist=["read_mask"]).read_mask(
        tmp_path / "pred" / "c1" / "task01_mask-0.55.png")
    assert mask.all()  # p = 0.555 >= 0.55 everywhere


def test_folder_of_seeds_is_averaged_and_stores_its_threshold_in_the_folder(tmp_path):
    from softseg.inference.runs import resolve_runs
    from softseg.inference.thresholds import choose_threshold

    data = rater_dataset(tmp_path / "data")
    seeds = tmp_path / "seeds"
    make_run(seeds / "seed0", constant=0.50)
    make_run(seeds / "seed1", constant=0.61, seed=1)  # mean 0.555: predicted up to t = 0.55
    payload, _ = choose_threshold(seeds, data, criterion="max_f1", options=RunOptions(progress=False))
    assert payload["tasks"]["task01"]["threshold"] == 0.55
    assert payload["run_names"] == ["seed0", "seed1"]
    write_threshold_file(seeds, payload)
    assert resolve_runs([seeds]).threshold == read_threshold_file(seeds)
    # one seed alone is another model: the folder's threshold does not apply to it
    assert resolve_runs([seeds / "seed0"]).threshold is None


def test_choose_thresholds_refuses_images_of_another_channel_count(tmp_path):
    from _runs import make_run as make_rgb_run  # tests/_runs.py: any channel count
    from softseg.inference.thresholds import choose_threshold

    data = rater_dataset(tmp_path / "data")
    run = make_rgb_run(tmp_path / "rgb", in_channels=3, tasks=("task01",))
    (run / "split.json").write_text(json.dumps({"train": ["c3"], "val": ["c1", "c2"]}))
    with pytest.raises(SoftsegError, match=r"2 image\(s\) have another channel count than the run "
                       r".*rgb was trained on \(3\): c1: image has 1 channel\(s\), expected 3"):
        choose_threshold(run, data, criterion="max_f1", options=RunOptions(progress=False))


def test_the_grid_is_the_evaluations():
    import inspect

    from softseg.evaluation import metrics
    from softseg.inference import thresholds

    default = inspect.signature(thresholds.pooled_counts).parameters["thresholds"].default
    assert default is metrics.FINE_THRESHOLDS
    assert inspect.signature(thresholds.tradeoff).parameters["thresholds"].default is metrics.FINE_THRESHOLDS


def test_threshold_is_chosen_on_the_predictions_predict_makes(tmp_path, caplog):
    """The same temperatures and test-time flips as predict: the choice equals the brute-force
    pick on predict_images' maps with those options, and the file records them."""
    import logging

    from softseg.data.datasets import load_dataset
    from softseg.data.labels import soft_label
    from softseg.inference.arrays import predict_images
    from softseg.inference.predict import predict_folder
    from softseg.inference.runs import load_run
    from softseg.inference.run_files import write_temperature_file
    from softseg.inference.thresholds import choose_threshold

    data = rater_dataset(tmp_path / "data", seed=4)
    run = make_run(tmp_path / "run", seed=3, val=("c2", "c3"))
    write_temperature_file(run, {"checkpoint_file": "checkpoints/last.pt", "checkpoint_epoch": None,
                                 "tasks": {"task01": {"temperature": 3.0}}})
    payload, _ = choose_threshold(run, data, criterion="max_f1", options=RunOptions(tta="flip", progress=False))
    cases = load_dataset(data).select(case_ids=["c2", "c3"]).cases
    refs = [soft_label(c, "task01") >= 0.5 for c in cases]
    chosen = {}
    for tta, temperature in (("flip", "auto"), ("none", "auto"), ("flip", "off")):
        probs = [p[0] for p in predict_images([load_run(run, temperature=temperature)],
                                              [c.image for c in cases], tta=tta)]
        chosen[tta, temperature] = brute_force_pick(probs, refs, FINE_THRESHOLDS, "max_f1", None)
    assert payload["tasks"]["task01"]["threshold"] == chosen["flip", "auto"]
    assert len(set(chosen.values())) > 1  # the options change the choice: the test can fail
    assert payload["tta"]["mode"] == "flip" and payload["temperatures"] == {str(run.resolve()): {"task01": 3.0}}
    write_threshold_file(run, payload)
    with caplog.at_level(logging.WARNING, logger="softseg.inference.predict"):
        predict_folder([run], data, tmp_path / "same", options=RunOptions(tta="flip", progress=False))
    assert "was chosen with" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="softseg.inference.predict"):
        predict_folder([run], data, tmp_path / "other", options=RunOptions(progress=False))
    assert "was chosen with --checkpoint last, --tta flip and temperatures" in caplog.text
    assert "uses --checkpoint last, --tta none" in caplog.text


def test_a_threshold_chosen_with_best_warns_when_predict_uses_last(tmp_path, caplog):
    """A threshold.json from before the default became "last" names "best"."""
    import logging

    from softseg.inference.predict import predict_folder

    data = rater_dataset(tmp_path / "data")
    run = make_run(tmp_path / "run", constant=0.555)
    write_threshold_file(run, {"checkpoint": "best", "run_names": ["."], "tasks": {"task01": {"threshold": 0.5}}})
    with caplog.at_level(logging.WARNING, logger="softseg.inference.predict"):
        predict_folder([run], data, tmp_path / "pred", options=RunOptions(progress=False))
    assert "was chosen with --checkpoint best" in caplog.text and "uses --checkpoint last" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="softseg.inference.predict"):
        predict_folder([run], data, tmp_path / "pred2", options=RunOptions(checkpoint="best", progress=False))
    assert "was chosen with" not in caplog.text
