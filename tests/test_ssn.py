"""The Stochastic Segmentation Network head (issue 21): its distribution, loss, claims, training,
prediction of samples and mean maps, and what it refuses (temperature, ONNX, --samples elsewhere)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.distributions import Bernoulli, Categorical, LowRankMultivariateNormal

from _runs import make_run  # tests/_runs.py
from softseg.cli import main
from softseg.data.datasets import load_dataset
from softseg.data.synthetic import write_demo_dataset
from softseg.errors import SoftsegError
from softseg.experiments.compare.methods import parse_methods
from softseg.inference.arrays import predict_images, predict_samples
from softseg.inference.runs import load_run
from softseg.model import ssn
from softseg.model.config import TrainConfig, resolve_config, validate
from softseg.model.heads import HEADS, SigmoidTasks, SoftmaxClasses, StochasticSegmentation, head_of
from softseg.model.modes import model_from_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

SSN = TrainConfig(tasks=("task01",), in_channels=1, head="ssn", label_mode="random_rater", loss="ce",
                  ssn_rank=2, encoder_weights="none", precision="fp32")
TINY = ["--epochs", "1", "--batch-size", "2", "--aug-copies", "1", "--crop-size", "32", "--encoder-weights",
        "none", "--precision", "fp32", "--device", "cpu", "--ssn-rank", "2", "--ssn-samples", "4",
        "--set", "ssn_eval_samples=8", "--no-progress"]


def raw_output(k: int, rank: int, shape=(3, 4), batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, ssn.channels(k, rank), *shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- the head's claims


def test_exactly_one_head_claims_each_configuration_and_the_ssn_wraps_the_datas_head():
    binary, multi = SSN.replace(tasks=("a", "b")), SSN.replace(tasks=("rim", "cup"), classes=("bg", "rim", "cup"))
    for config in (TrainConfig(), TrainConfig(classes=("bg", "x")), binary, multi):
        assert sum(cls.claims(config) for cls in HEADS.values()) == 1
    assert isinstance(head_of(TrainConfig()), SigmoidTasks)
    assert isinstance(head_of(TrainConfig(classes=("bg", "x"))), SoftmaxClasses)
    for config in (binary, multi):
        head = head_of(config)
        assert isinstance(head, StochasticSegmentation) and head.sampling
        # the maps are the data's: tasks (sigmoid) or classes (softmax); the network has mean,
        # rank-r factor and diagonal per map channel
        assert head.outputs(config) == (config.classes or config.tasks)
        assert head.channels(config) == len(head.outputs(config)) * (2 + 2)
    assert head_of(multi).task_channels() == slice(1, None) and head_of(binary).task_channels() == slice(None)
    assert head_of(TrainConfig(tasks=("a", "b"))).channels(TrainConfig(tasks=("a", "b"))) == 2
    model = model_from_config(binary).eval()  # the mode builds head.channels(config) outputs
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 8, 32, 32)


def test_ssn_defaults_its_label_mode_and_loss_and_refuses_others():
    config = resolve_config(overrides={"head": "ssn"})
    assert (config.label_mode, config.loss, config.ssn_rank, config.ssn_samples) == ("random_rater", "ce", 10, 20)
    assert resolve_config(overrides={"head": "ssn", "loss": "ce"}).head == "ssn"
    with pytest.raises(SoftsegError, match="head ssn trains on the Monte Carlo likelihood.*found 'ce\\+dml'"):
        resolve_config(overrides={"head": "ssn", "loss": "ce+dml"})
    with pytest.raises(SoftsegError, match="expected 'random_rater', found 'soft'"):
        validate(SSN.replace(label_mode="soft"))
    with pytest.raises(SoftsegError, match=r"head: expected one of \('deterministic', 'ssn'\), found 'prob'"):
        validate(TrainConfig(head="prob"))
    with pytest.raises(SoftsegError, match="ssn_rank: expected a covariance rank >= 1, found 0"):
        validate(SSN.replace(ssn_rank=0))
    with pytest.raises(SoftsegError, match="no head predicts it"):
        head_of(TrainConfig(head="prob"))


def test_compare_names_the_ssn_method_and_refuses_what_it_cannot_be():
    methods, reference = parse_methods(["soft:ce", "ssn", "ssn:ce", "ssn@tta"])
    assert [m.name for m in methods] == ["soft:ce", "ssn", "ssn@tta"] and reference.name == "soft:ce"
    ssn_method = methods[1]
    assert ssn_method.folder == "ssn" and methods[2].trained == ssn_method and methods[2].folder == "ssn@tta"
    config = ssn_method.config(TrainConfig(), seed=3)
    assert (config.head, config.label_mode, config.loss, config.seed) == ("ssn", "random_rater", "ce", 3)
    validate(config)
    assert methods[0].config(config, 0).head == "deterministic"
    with pytest.raises(SoftsegError, match="'ssn:dml': an SSN trains on .*loss 'ce' only"):
        parse_methods(["ssn:dml"])
    with pytest.raises(SoftsegError, match="'ssn@ts': an SSN has no temperature"):
        parse_methods(["ssn@ts"])


# ----------------------------------------------------------------------------- the distribution


def test_the_empirical_covariance_of_samples_is_the_low_rank_plus_diagonal():
    rank, n = 3, 200_000
    torch.manual_seed(1)
    for joint, k in ((False, 2), (True, 3)):
        dist = ssn.split(raw_output(k, rank, (2, 3), seed=2), k, rank, joint)
        eta = ssn.sample(dist, n, torch.Generator().manual_seed(3))[:, 0].reshape(n, -1)  # (n, K * 6)
        factor = dist.factor[0].permute(0, 2, 3, 1).reshape(k * 6, rank)  # rows: channel-major pixels
        if not joint:  # one Gaussian per channel: no covariance across channels
            factor = torch.block_diag(*factor.reshape(k, 6, rank).unbind(0))
        expected = factor @ factor.T + torch.diag(dist.diagonal.flatten())
        assert torch.linalg.eigvalsh(expected).min() > 0  # positive definite by construction
        centred = eta - eta.mean(0)
        empirical = centred.T @ centred / (n - 1)
        variance = torch.diag(expected)
        # the standard error of a sample covariance: sqrt((s_ii s_jj + s_ij^2) / n)
        error = ((variance[:, None] * variance[None, :] + expected**2) / n).sqrt()
        assert ((empirical - expected).abs() <= 5 * error).all(), (empirical - expected).abs().max()
        torch.testing.assert_close(eta.mean(0), dist.mean.flatten(), atol=float(5 * variance.max().sqrt() / n**0.5),
                                   rtol=0)


def test_without_covariance_the_loss_is_the_deterministic_cross_entropy():
    k, rank = 2, 3
    raw = raw_output(k, rank, (5, 6), batch=2)
    raw[:, k : k * (rank + 1)] = 0.0  # P = 0
    raw[:, k * (rank + 1):] = -40.0  # D = softplus(-40) + EPSILON: the floor, 1e-5
    mask = (torch.rand(2, k, 5, 6, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    torch.manual_seed(0)
    loss = ssn.mc_nll(raw, mask, k, rank, samples=20, joint=False)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(raw[:, :k], mask), atol=2e-4, rtol=0)
    # the softmax form: the classes' cross-entropy against a one-hot map
    raw = raw_output(3, rank, (5, 6), batch=2, seed=1)
    raw[:, 3 : 3 * (rank + 1)], raw[:, 3 * (rank + 1):] = 0.0, -40.0
    classes = mask[:, 0].long() + mask[:, 1].long()  # 0, 1, 2
    torch.manual_seed(0)
    loss = ssn.mc_nll(raw, F.one_hot(classes, 3).movedim(-1, 1).float(), 3, rank, samples=20, joint=True)
    torch.testing.assert_close(loss, F.cross_entropy(raw[:, :3], classes), atol=2e-4, rtol=0)


@pytest.mark.parametrize("joint", [False, True])
def test_the_loss_equals_a_torch_distributions_reference(joint):
    k, rank, m, (h, w) = (3 if joint else 1), 2, 7, (3, 4)
    raw = raw_output(k, rank, (h, w), seed=5).requires_grad_()
    labels = torch.randint(0, k if joint else 2, (h, w), generator=torch.Generator().manual_seed(6))
    target = F.one_hot(labels, k).movedim(-1, 0)[None].float() if joint else labels[None, None].float()
    torch.manual_seed(11)
    loss = ssn.mc_nll(raw, target, k, rank, m, joint)
    # the reference: one LowRankMultivariateNormal over all logits of the image
    dist = ssn.split(raw, k, rank, joint)
    reference = LowRankMultivariateNormal(dist.mean.flatten(), dist.factor[0].movedim(1, -1).reshape(-1, rank),
                                          dist.diagonal.flatten())
    torch.manual_seed(11)
    eta = reference.rsample((m,))  # (m, K * pixels)
    if joint:
        log_p = Categorical(logits=eta.reshape(m, k, -1).transpose(1, 2)).log_prob(labels.flatten()).sum(-1)
    else:
        log_p = Bernoulli(logits=eta).log_prob(labels.flatten().float()).sum(-1)
    expected = -(torch.logsumexp(log_p, 0) - math.log(m)) / (h * w)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    loss.backward()  # reparameterised: the factor and the diagonal learn
    grad = raw.grad[0]
    assert grad[k : k * (rank + 1)].abs().sum() > 0 and grad[k * (rank + 1):].abs().sum() > 0


def test_the_loss_is_float32_and_stable_under_bf16_autocast():
    k, rank = 1, 10
    raw = raw_output(k, rank, (64, 64), batch=2, seed=7) * 8  # confident, wide logits
    raw[:, :k] *= 6
    mask = (torch.rand(2, k, 64, 64, generator=torch.Generator().manual_seed(8)) > 0.5).float()
    torch.manual_seed(0)
    fp32 = ssn.mc_nll(raw, mask, k, rank, 20, False)
    half = raw.to(torch.bfloat16).requires_grad_()
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = ssn.mc_nll(half, mask, k, rank, 20, False)
    bf16.backward()
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16) and torch.isfinite(half.grad).all()
    assert fp32.item() > 10  # a wrong, confident prediction: large but finite
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=0)  # only the rounding of the input to bf16


def test_the_mean_map_is_the_seeded_mean_of_the_samples_whatever_the_batch():
    config = SSN.replace(tasks=("a", "b"), ssn_eval_samples=16, seed=4)
    head = head_of(config)
    raw = raw_output(2, 2, (5, 7), batch=3, seed=9)
    prob = head.probabilities(raw)
    assert prob.shape == (3, 2, 5, 7) and 0 <= prob.min() and prob.max() <= 1
    torch.testing.assert_close(head.probabilities(raw[1:2]), prob[1:2], rtol=0, atol=0)  # per image
    torch.testing.assert_close(head.probabilities(raw[1], dim=0), prob[1], rtol=0, atol=0)
    samples = head.samples(raw, 16)
    torch.testing.assert_close(samples.mean(1), prob, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(head.samples(raw, 3), samples[:, :3], rtol=0, atol=0)  # the first draws
    assert not torch.equal(samples[:, 0], samples[:, 1])
    # another seed, other draws
    assert not torch.equal(head_of(config.replace(seed=5)).probabilities(raw), prob)


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The demo release's 2-task, 5-rater set: 3 training, 1 validation, 1 testing case, 32 px."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, size=32, n_train=3, n_val=1,
                              n_test=1) / "demo-shapes"


@pytest.fixture(scope="module")
def ssn_run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("ssnrun")
    assert main(["train", str(shapes), "--out", str(out), "--head", "ssn", *TINY]) == 0
    return out / "seed0"


def test_train_head_ssn_records_its_head_and_draws_a_rater(ssn_run):
    saved = json.loads((ssn_run / "config.json").read_text())
    assert (saved["head"], saved["label_mode"], saved["loss"], saved["ssn_rank"]) == ("ssn", "random_rater", "ce", 2)
    loaded = load_run(ssn_run)
    assert loaded.model(torch.zeros(1, 1, 32, 32)).shape == (1, 2 * 4, 32, 32)


def test_a_training_step_is_deterministic_and_survives_a_resume(shapes, tmp_path, monkeypatch):
    import softseg.training.train as train_module
    from softseg.training.train import train

    dataset = load_dataset(shapes)
    config = SSN.replace(tasks=dataset.tasks, in_channels=0, epochs=2, batch_size=2, aug_copies=1, crop_size=32,
                         ssn_samples=4, ssn_eval_samples=4)
    args = (["case01", "case02", "case03"], ["case04"])
    straight = train(config, dataset, tmp_path / "straight", *args, progress=False)
    real_epoch, calls = train_module.train_epoch, []

    def stop_in_epoch_two(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        torch.randn(1000)  # the caller's global generator moves on: the steps must not care
        return real_epoch(*a, **k)

    monkeypatch.setattr(train_module, "train_epoch", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(config, dataset, tmp_path / "stopped", *args, progress=False)
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    resumed = train(config, dataset, tmp_path / "stopped", *args, resume=True, progress=False)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    rows = [(straight / "history.csv").read_text(), (resumed / "history.csv").read_text()]
    first, second = ([line.split(",")[:4] for line in r.splitlines()] for r in rows)
    assert first == second  # epoch, train loss, validation loss and QUBIQ score, digit for digit


# ----------------------------------------------------------------------------- prediction


def test_predict_writes_n_samples_and_a_mean_map(ssn_run, shapes, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(ssn_run), str(shapes), "--out", str(out), "--split", "Validation",
                 "--samples", "3", "--device", "cpu", "--no-progress"]) == 0
    assert "3 sampled mask(s) per case" in capsys.readouterr().out
    files = sorted(p.name for p in (out / "case04").iterdir())
    assert files == ["task01.nii.gz", "task01_sample-00.nii.gz", "task01_sample-01.nii.gz",
                     "task01_sample-02.nii.gz", "task02.nii.gz", "task02_sample-00.nii.gz",
                     "task02_sample-01.nii.gz", "task02_sample-02.nii.gz"]
    import nibabel as nib

    mean = np.asarray(nib.load(out / "case04" / "task01.nii.gz").dataobj)
    assert mean.dtype == np.float32 and mean.shape == (32, 32) and 0 <= mean.min() and mean.max() <= 1
    masks = [np.asarray(nib.load(out / "case04" / f"task01_sample-0{k}.nii.gz").dataobj) for k in range(3)]
    assert all(set(np.unique(m)) <= {0, 1} for m in masks)
    record = json.loads((out / "predictions.json").read_text())
    assert record["samples"]["count"] == 3 and record["samples"]["runs"][str(ssn_run.resolve())]["seed"] == 0
    # the masks are the sampled maps >= 0.5, and those are the first draws of the mean map's
    loaded = load_run(ssn_run)
    case = load_dataset(shapes).select(case_ids=["case04"]).cases[0]
    (sampled,) = predict_samples([loaded], [case.image], 8)
    (prob,) = predict_images([loaded], [case.image])
    np.testing.assert_allclose(sampled.mean(0), prob, atol=1e-5)
    np.testing.assert_array_equal(masks[1], sampled[1, 0] >= 0.5)
    # the evaluation reads the mean maps and leaves the samples aside
    assert main(["evaluate", str(out), str(shapes), "--out", str(tmp_path / "eval"), "--split", "Validation",
                 "--no-progress"]) == 0
    # with --samples it scores the run's own draws, not level sets of the mean map
    assert main(["evaluate", str(out), str(shapes), "--out", str(tmp_path / "drawn"), "--split", "Validation",
                 "--samples", "2", "--no-progress"]) == 0
    from softseg.evaluation import hypotheses
    from softseg.evaluation.result import read_result

    expected = hypotheses.sampled_scores(np.stack(masks[:2]).astype(bool), case.masks["task01"])
    row = next(r for r in csv.DictReader(open(tmp_path / "drawn" / "cases.csv")) if r["task"] == "task01")
    assert float(row["ged_2"]) == pytest.approx(expected["ged"], abs=1e-12)
    assert float(row["hmiou_2"]) == pytest.approx(expected["hmiou"], abs=1e-12)
    assert "own samples" in read_result(tmp_path / "drawn").conventions["hypotheses"]
    assert main(["evaluate", str(out), str(shapes), "--out", str(tmp_path / "more"), "--split", "Validation",
                 "--samples", "5", "--no-progress"]) == 2
    assert "rerun softseg predict with --samples 5" in capsys.readouterr().err


def test_samples_of_several_runs_take_turns(ssn_run, shapes, tmp_path):
    second = tmp_path / "seed1"
    assert main(["train", str(shapes), "--out", str(tmp_path), "--head", "ssn", "--seeds", "1", *TINY]) == 0
    runs = [load_run(ssn_run), load_run(second)]
    image = load_dataset(shapes).cases[0].image
    (mixed,) = predict_samples(runs, [image], 5)
    (own0,), (own1,) = predict_samples(runs[:1], [image], 3), predict_samples(runs[1:], [image], 2)
    np.testing.assert_allclose(mixed[0::2], own0, atol=1e-6)
    np.testing.assert_allclose(mixed[1::2], own1, atol=1e-6)


def test_predict_refuses_samples_of_mixed_heads_and_in_the_submission_layout(shapes, ssn_run, tmp_path):
    from softseg.inference.predict import check_samples

    deterministic = make_run(tmp_path / "det", tasks=("task01", "task02"))
    with pytest.raises(SoftsegError, match="det predicts one map \\(head sigmoid\\).*separate folders"):
        check_samples([load_run(ssn_run), load_run(deterministic)], 2)
    check_samples([load_run(deterministic)], 2)  # one kind: level sets of the map
    assert main(["predict", str(ssn_run), str(shapes), "--out", str(tmp_path / "q"), "--qubiq", "--samples",
                 "2"]) == 2


def test_export_and_calibrate_refuse_an_ssn_run_with_the_reason(ssn_run, shapes, tmp_path):
    from softseg.inference.calibration import calibrate
    from softseg.inference.export import export_onnx

    with pytest.raises(SoftsegError, match="mean over seeded Monte Carlo samples.*one deterministic ONNX"):
        export_onnx(ssn_run, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(SoftsegError, match="has no temperature: its probability map is the mean over sampled"):
        calibrate(ssn_run, shapes)
    assert not (ssn_run / "temperature.json").exists()


def test_a_multiclass_ssn_trains_and_samples_label_maps(tmp_path):
    from softseg.data.synthetic_classes import write_demo_classes

    data = load_dataset(write_demo_classes(tmp_path / "mc", seed=0, size=32, n_cases=4))
    assert main(["train", str(data.root), "--out", str(tmp_path / "run"), "--head", "ssn", *TINY]) == 0
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "run"), str(data.root), "--out", str(out), "--samples", "2",
                 "--no-progress"]) == 0
    case = data.cases[0].case_id
    files = sorted(p.name for p in (out / case).iterdir())
    assert "label-map_sample-00.png" in files and "label-map_sample-01.png" in files
    maps = np.stack([np.asarray(Image.open(out / case / f"{c}.png"), np.float64) / 65535 for c in data.classes])
    np.testing.assert_allclose(maps.sum(0), 1.0, atol=2e-5)  # the mean of softmaxes sums to 1
    assert set(np.unique(np.asarray(Image.open(out / case / "label-map_sample-00.png")))) <= {0, 1, 2}


def test_the_3d_mode_trains_an_ssn_on_patches_and_samples_whole_volumes(tmp_path):
    import nibabel as nib

    from softseg.data.synthetic3d import DATASET, write_demo_volumes

    root = write_demo_volumes(tmp_path / "vol", seed=5, shape=(24, 20, 8), n_train=3, n_val=1, n_test=0) / DATASET
    assert main(["train", str(root), "--out", str(tmp_path / "run"), "--head", "ssn", "--dims", "3d",
                 "--patch-size", "16", "16", "8", "--base-filters", "4", *TINY]) == 0
    saved = json.loads((tmp_path / "run" / "seed0" / "config.json").read_text())
    assert (saved["dims"], saved["head"]) == ("3d", "ssn")
    out = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "run"), str(root), "--out", str(out), "--split", "Validation",
                 "--samples", "2", "--no-progress"]) == 0
    (case,) = [p for p in out.iterdir() if p.is_dir()]
    mean = np.asarray(nib.load(case / "task01.nii.gz").dataobj)
    sample = np.asarray(nib.load(case / "task01_sample-01.nii.gz").dataobj)
    assert mean.shape == sample.shape == (24, 20, 8) and 0 <= mean.min() and mean.max() <= 1
    assert set(np.unique(sample)) <= {0, 1}
