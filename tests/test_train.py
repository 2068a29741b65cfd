"""train: loss, schedule, growing batch in the step, run folder, resume, refusal, CLI."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from softseg.training import loop as _train_loop
from softseg.training.batches import prepare, sample_batch, split_ids
from softseg.model.config import TrainConfig
from softseg.data.cases import Case, Dataset
from softseg.data.io import Geometry
from softseg.errors import DatasetError, SoftsegError
from softseg.inference.arrays import predict_images
from softseg.inference.runs import load_run
from softseg.data.labels import staple_label
from softseg.training.train import lr_at, soft_cross_entropy, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


TINY = TrainConfig(epochs=2, batch_size=4, crop_size=32, encoder_weights="none", precision="fp32")


def make_dataset(n=6, size=40, seed=0, splits=None, channels=1):
    """Discs seen by 3 raters (radius -2, 0, +2) on a noisy image; built in memory."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cases = []
    for i in range(n):
        c, r = rng.uniform(size * 0.3, size * 0.7, 2), rng.uniform(size * 0.12, size * 0.25)
        masks = np.stack([np.hypot(yy - c[0], xx - c[1]) < r + d for d in (-2, 0, 2)])
        image = np.stack([masks[1] * 1.0 + rng.normal(0, 0.3, (size, size))] * channels).astype(np.float32)
        cases.append(Case(
            f"case{i:02d}", image, (1.0, 1.0), Geometry("png", (size, size)), Path(f"case{i:02d}.png"),
            masks={"task01": masks}, raters={"task01": ("a", "b", "c")}, n_raters={"task01": 3},
            split=None if splits is None else splits[i],
        ))
    return Dataset(Path("/nonexistent/mem"), "mem", "raters", ("task01",), tuple(cases))


def ids(ds, sl):
    return [c.case_id for c in ds.cases[sl]]


def history(run):
    return list(csv.DictReader((run / "history.csv").open()))


# ---------------------------------------------------------------------------- loss, schedule


@pytest.mark.parametrize("g", [0.0, 0.2, 1 / 3, 0.5, 0.9, 1.0])
def test_soft_cross_entropy_is_minimal_at_p_equal_g(g):
    p = torch.linspace(0.001, 0.999, 999)
    logits = torch.logit(p).reshape(1, 1, 1, -1)
    target = torch.full_like(logits, g)
    per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    best = p[per_pixel.flatten().argmin()].item()
    assert best == pytest.approx(min(max(g, 0.001), 0.999), abs=1e-3)
    # the gradient wrt the logit is p - g: zero exactly at p = g
    if 0 < g < 1:
        z = torch.logit(torch.tensor([[[[g]]]], dtype=torch.float64)).requires_grad_()
        soft_cross_entropy(z, torch.tensor([[[[g]]]], dtype=torch.float64)).backward()
        assert abs(z.grad.item()) < 1e-6


def test_soft_dice_would_not_be_minimal_at_g():
    # why the paper uses cross-entropy: soft Dice against g = 0.5 is minimised at p = 1
    p = torch.linspace(0.001, 0.999, 999)
    dice_loss = 1 - 2 * p * 0.5 / (p + 0.5)
    assert p[dice_loss.argmin()].item() > 0.99


def test_soft_cross_entropy_hand_value_and_fp32_under_bf16():
    logits = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)
    target = torch.tensor([0.0, 0.25, 0.5, 1.0]).reshape(1, 1, 2, 2)
    loss = soft_cross_entropy(logits, target)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(np.log(2), abs=1e-6)


def test_cosine_schedule_endpoints():
    total = 150 * 5
    assert lr_at(0, total, 1e-2, 1e-4) == pytest.approx(1e-2)
    assert lr_at(total - 1, total, 1e-2, 1e-4) == pytest.approx(1e-4)
    assert lr_at((total - 1) / 2, total, 1e-2, 1e-4) == pytest.approx((1e-2 + 1e-4) / 2)
    values = [lr_at(s, total, 1e-2, 1e-4) for s in range(total)]
    assert all(a >= b for a, b in zip(values, values[1:]))


# ---------------------------------------------------------------------------- data and steps


def test_step_uses_the_growing_batch_and_the_schedule(tmp_path, monkeypatch):
    seen = []
    original = _train_loop.growing_batch

    def spy(images, labels, sources, copies, settings, generator):
        out = original(images, labels, sources, copies, settings, generator)
        seen.append((tuple(images.shape), tuple(out[0].shape), tuple(out[1].shape)))
        return out

    lrs = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return original_step(self, *a, **k)

    monkeypatch.setattr(_train_loop, "growing_batch", spy)
    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    ds = make_dataset(16, size=32)
    train(TINY.replace(batch_size=8, epochs=1), ds, tmp_path / "r", ids(ds, slice(None)), [], progress=False)
    assert seen == [((8, 1, 32, 32), (32, 1, 32, 32), (32, 1, 32, 32))] * 2
    assert lrs == [pytest.approx(1e-2), pytest.approx(1e-4)]


def test_epoch_batches_keep_partial_batches_that_every_process_can_share():
    from softseg.training.loop import epoch_batches, steps_per_epoch

    assert epoch_batches(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert epoch_batches(list(range(9)), 4, world=2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert epoch_batches(list(range(3)), 8, world=2) == [[0, 1, 2]]
    assert steps_per_epoch(9, 4) == 3 and steps_per_epoch(9, 4, world=2) == 2
    # without augmented copies a process needs two cases: batch norm cannot train on one
    assert epoch_batches(list(range(9)), 4, per_process=2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert steps_per_epoch(10, 4, per_process=2) == 3


def test_training_without_augmented_copies_on_an_odd_number_of_cases(tmp_path):
    # 5 cases in batches of 4: a last batch of one case crashed batch norm with aug_copies 0
    ds = make_dataset(6, size=32)
    run = train(TINY.replace(epochs=1, aug_copies=0), ds, tmp_path / "r", ids(ds, slice(0, 5)),
                ids(ds, slice(5, 6)), progress=False)
    assert np.isfinite(float(history(run)[-1]["train_loss"]))


def test_label_modes_give_the_documented_targets():
    ds = make_dataset(2)
    cases = list(ds.cases)
    soft = prepare(cases, TINY.replace(tasks=("task01",)))
    assert set(np.unique(soft.labels[0].numpy())) <= {0.0, 1 / 3, 2 / 3, 1.0} | {np.float32(1 / 3), np.float32(2 / 3)}
    major = prepare(cases, TINY.replace(tasks=("task01",), label_mode="majority"))
    expected = (cases[0].masks["task01"].sum(0) >= 2).astype(np.float32)
    np.testing.assert_array_equal(major.labels[0][0].numpy(), expected)
    rr = prepare(cases, TINY.replace(tasks=("task01",), label_mode="random_rater"))
    gen = torch.Generator().manual_seed(0)
    drawn = set()
    for _ in range(30):
        # crop size = image size rounded down, whole masks compared
        images, labels = sample_batch(rr, [0], 32, gen)
        full = torch.from_numpy(cases[0].masks["task01"].astype(np.float32))
        matches = [r for r in range(3) if any(
            torch.equal(labels[0, 0], full[r, y:y + 32, x:x + 32]) for y in range(9) for x in range(9))]
        assert matches
        drawn.update(matches)
    assert drawn == {0, 1, 2}
    staple = prepare(cases, TINY.replace(tasks=("task01",), label_mode="staple"))
    np.testing.assert_array_equal(
        staple.labels[0][0].numpy(), staple_label(cases[0], "task01").astype(np.float32)
    )


@pytest.mark.parametrize("loss", ["ce", "dml", "ce+dml"])
def test_the_step_trains_with_the_configured_loss(tmp_path, monkeypatch, loss):
    from softseg.model import losses

    called = []
    original = losses.loss_function

    def spy(name, dml_weight=1.0, multiclass=False, batch_sum=None):
        called.append((name, dml_weight, multiclass))
        return original(name, dml_weight, multiclass, batch_sum)

    from softseg.model import heads

    monkeypatch.setattr(heads, "loss_function", spy)
    ds = make_dataset(4, size=32)
    cfg = TINY.replace(epochs=1, loss=loss, dml_weight=0.5)
    train(cfg, ds, tmp_path / "r", ids(ds, slice(0, 3)), ids(ds, slice(3, 4)), progress=False)
    assert called and set(called) == {(loss, 0.5, False)}
    rows = history(tmp_path / "r")
    assert np.isfinite(float(rows[-1]["train_loss"])) and np.isfinite(float(rows[-1]["val_loss"]))


def test_random_rater_needs_individual_masks():
    case = make_dataset(1).cases[0]
    agreement_only = Case("agr01", case.image, case.spacing, case.geometry, case.image_path,
                          agreement={"task01": case.masks["task01"].mean(0).astype(np.float32)},
                          n_raters={"task01": 3})
    with pytest.raises(SoftsegError, match="agr01: task task01 has no individual rater masks.*use 'soft'"):
        prepare([agreement_only], TINY.replace(tasks=("task01",), label_mode="random_rater"))
    soft = prepare([agreement_only], TINY.replace(tasks=("task01",)))
    np.testing.assert_allclose(soft.labels[0][0].numpy(), case.masks["task01"].mean(0), atol=1e-6)


def test_resize_applies_to_image_and_label_alike():
    ds = make_dataset(1, size=64)
    config = TINY.replace(tasks=("task01",), resize=32)
    data = prepare(list(ds.cases), config)
    assert data.images[0].shape == (1, 32, 32) and data.labels[0].shape == (1, 32, 32)
    assert 0 <= data.labels[0].min() and data.labels[0].max() <= 1
    # validation keeps the whole image: the run's mode resizes it as prediction does
    held = prepare(list(ds.cases), config, validation=True)
    assert held.images[0].shape == (1, 64, 64) and held.source_labels[0].shape == (1, 64, 64)


def test_split_ids_official_random_and_reproducible():
    ds = make_dataset(6, splits=["Training"] * 4 + ["Validation"] * 2)
    assert split_ids(ds, 0.2, 0) == (ids(ds, slice(0, 4)), ids(ds, slice(4, 6)))
    plain = make_dataset(10)
    train, val = split_ids(plain, 0.2, 0)
    assert len(val) == 2 and sorted(train + val) == ids(plain, slice(None))
    assert split_ids(plain, 0.2, 0) == (train, val) and split_ids(plain, 0.2, 1) != (train, val)
    assert split_ids(plain, 0.0, 0) == (ids(plain, slice(None)), [])
    with pytest.raises(SoftsegError, match="need at least 2"):
        split_ids(make_dataset(1), 0.2, 0)


# ---------------------------------------------------------------------------- run folder


def test_run_folder_holds_everything_and_loads_for_prediction(tmp_path):
    ds = make_dataset(6)
    run = train(TINY, ds, tmp_path / "seed0", ids(ds, slice(0, 4)), ids(ds, slice(4, 6)), progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config["tasks"] == ["task01"] and config["in_channels"] == 1 and config["precision"] == "fp32"
    split = json.loads((run / "split.json").read_text())
    assert split["train"] == ids(ds, slice(0, 4)) and split["val"] == ids(ds, slice(4, 6))
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["processes"] == 1
    rows = history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0 <= float(r["val_qubiq"]) <= 1 and float(r["val_loss"]) > 0 for r in rows)
    assert float(rows[-1]["lr"]) == pytest.approx(1e-4)
    best_epoch = max(rows, key=lambda r: float(r["val_qubiq"]))["epoch"]
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=False)["epoch"] == int(best_epoch)
    assert not [p for p in run.rglob("*") if "tmp" in p.name]
    loaded = load_run(run)
    (prob,) = predict_images([loaded], [ds.cases[4].image])
    assert prob.shape == (1, 40, 40) and 0 <= prob.min() and prob.max() <= 1


def test_refuses_an_existing_run_and_overwrites_only_when_asked(tmp_path):
    ds = make_dataset(4)
    cfg = TINY.replace(epochs=1)
    run = train(cfg, ds, tmp_path / "seed0", ids(ds, slice(0, 3)), ids(ds, slice(3, 4)), progress=False)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(SoftsegError, match=r"seed0: output folder is not empty \(an earlier training run\?\); choose another --out or pass --overwrite.*or pass --resume"):
        train(cfg, ds, run, ids(ds, slice(0, 3)), ids(ds, slice(3, 4)), progress=False)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    train(cfg.replace(seed=5), ds, run, ids(ds, slice(0, 3)), ids(ds, slice(3, 4)), overwrite=True, progress=False)
    assert json.loads((run / "config.json").read_text())["seed"] == 5
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(SoftsegError, match="not a softseg run folder.*refusing to delete"):
        train(cfg, ds, other, ids(ds, slice(0, 3)), [], overwrite=True, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_resume_continues_to_the_same_result(tmp_path, monkeypatch):
    ds = make_dataset(6, size=32)
    cfg = TINY.replace(epochs=3, batch_size=2, aug_copies=1)
    args = (ids(ds, slice(0, 4)), ids(ds, slice(4, 6)))
    straight = train(cfg, ds, tmp_path / "straight", *args, progress=False)

    calls = {"n": 0}
    real_epoch = _train_loop.train_epoch

    def stop_after_two(*a, **k):
        if calls["n"] == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during epoch 2
        calls["n"] += 1
        return real_epoch(*a, **k)

    import softseg.training.train as train_module

    monkeypatch.setattr(train_module, "train_epoch", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, ds, tmp_path / "stopped", *args, progress=False)
    assert len(history(tmp_path / "stopped")) == 1
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    resumed = train(cfg, ds, tmp_path / "stopped", *args, resume=True, progress=False)

    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=False)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    for ra, rb in zip(history(straight), history(resumed)):
        for col in ("epoch", "train_loss", "val_loss", "val_qubiq", "lr"):
            assert float(ra[col]) == pytest.approx(float(rb[col]), rel=1e-5), col
    assert len(history(resumed)) == 3
    # resuming a finished run does nothing
    train(cfg, ds, resumed, *args, resume=True, progress=False)
    assert len(history(resumed)) == 3


# ---------------------------------------------------------------------------- errors


def test_images_and_volumes_are_not_mixed(tmp_path):
    ds = make_dataset(3)
    volume = ds.cases[1]
    bad = Case("vol07", np.zeros((1, 8, 40, 40), np.float32), (1.0, 1.0, 1.0), volume.geometry,
               volume.image_path, masks={"task01": np.zeros((2, 8, 40, 40), bool)},
               raters={"task01": ("a", "b")}, n_raters={"task01": 2})
    ds3 = Dataset(ds.root, ds.name, ds.layout, ds.tasks, ds.cases + (bad,))
    with pytest.raises(DatasetError, match=r"training cases mix 2D images and volumes \(1 volume\(s\), e.g. vol07\)"):
        train(TINY, ds3, tmp_path / "r", ["case00", "vol07"], [], progress=False)
    assert not (tmp_path / "r").exists()


def test_data_errors_are_reported_together(tmp_path):
    ds = make_dataset(3)
    unlabelled = Case("case09", ds.cases[0].image, (1.0, 1.0), ds.cases[0].geometry, Path("x.png"))
    ds2 = Dataset(ds.root, ds.name, ds.layout, ds.tasks, ds.cases + (unlabelled,))
    with pytest.raises(DatasetError, match=r"\(2\)[\s\S]*nope: no such case[\s\S]*case09: no label for task"):
        train(TINY, ds2, tmp_path / "r", ["case00", "nope", "case09"], [], progress=False)
    with pytest.raises(SoftsegError, match="task\\(s\\) task02 not in this dataset"):
        train(TINY.replace(tasks=("task02",)), ds, tmp_path / "r", ["case00"], [], progress=False)
    with pytest.raises(SoftsegError, match="crop_size: expected a positive multiple of 32"):
        train(TINY.replace(crop_size=40), ds, tmp_path / "r", ["case00"], [], progress=False)
    with pytest.raises(SoftsegError, match=r"0 training case\(s\) for 1 process"):
        train(TINY, ds, tmp_path / "r", [], ["case00"], progress=False)


# ---------------------------------------------------------------------------- command line


def test_cli_trains_qubiq_layout_with_seeds_and_refuses_reuse(tmp_path, capsys):
    from softseg.cli import main
    from softseg.data.synthetic import write_demo_dataset

    write_demo_dataset(tmp_path / "data", size=40, n_train=3, n_val=1, n_test=1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("crop_size: 32\nbatch_size: 2\naug_copies: 1\nprecision: fp32\n")
    argv = ["train", str(tmp_path / "data" / "demo-shapes"), "--out", str(tmp_path / "run"),
            "--config", str(cfg), "--epochs", "1", "--seeds", "0", "1", "--encoder-weights", "none",
            "--tasks", "task01", "--no-progress", "--resize", "32", "--set", "rotate=5", "hflip=0.25", "vflip=0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "seed0: 1 epochs" in out and "seed1: 1 epochs" in out and "val QUBIQ" in out
    for seed in (0, 1):
        split = json.loads((tmp_path / "run" / f"seed{seed}" / "split.json").read_text())
        assert split["layout"] == "qubiq" and split["train"] == ["case01", "case02", "case03"]
        assert split["val"] == ["case04"]
        saved = json.loads((tmp_path / "run" / f"seed{seed}" / "config.json").read_text())
        assert (saved["seed"], saved["resize"], saved["rotate"], saved["hflip"]) == (seed, 32, 5.0, 0.25)
        assert saved["crop_size"] == 32 and saved["aug_copies"] == 1  # from the config file
        assert saved["vflip"] == 0.0  # --set also works for settings that have their own option
    assert main(argv) == 2
    assert "output folder is not empty (an earlier training run?)" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert main(argv[:2] + ["--out", str(tmp_path / "x"), "--crop-size", "40"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(argv[:2] + ["--out", str(tmp_path / "x"), "--set", "rotation=3"]) == 2
    assert "unknown setting(s) rotation" in capsys.readouterr().err
    assert main(argv[:2] + ["--out", str(tmp_path / "x"), "--set", "rotate"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_keep_freed_memory_lets_large_blocks_be_reused_without_page_faults():
    # A fresh process: filling a freed 64 MiB block again faults every page back in with
    # glibc's defaults (the block is mmapped and returned on free); after the call, once
    # the heap has settled (a few blocks), none.
    script = (
        "import resource, torch\n"
        "from softseg.model.runtime import keep_freed_memory\n"
        "def faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    block = torch.ones(8 << 20, dtype=torch.float64)  # 64 MiB, every page written\n"
        "    del block\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "default = [faults() for _ in range(10)][-1]\n"
        "assert keep_freed_memory()\n"
        "print(default, [faults() for _ in range(10)][-1])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         check=True).stdout
    default, kept = map(int, out.split())
    assert default > 10000 and kept < 100  # 16384 pages of 4 KiB


def test_training_leaves_the_callers_random_state_alone_and_is_reproducible(tmp_path):
    import random

    ds = make_dataset(4)
    cfg = TINY.replace(epochs=1)
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    states = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    runs = [train(cfg, ds, tmp_path / f"seed{i}", ids(ds, slice(0, 3)), ids(ds, slice(3, 4)),
                      progress=False) for i in range(2)]
    assert torch.equal(torch.random.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    first, second = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
