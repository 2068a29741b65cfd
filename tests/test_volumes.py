"""Volumes trained and predicted slice-wise with the paper's 2D network: slices along the
through-plane axis, each volume z-scored whole, predictions stacked back in the source
geometry (shape, affine, header)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from softseg.cli import main
from softseg.data.datasets import load_dataset
from softseg.data.labels import soft_label
from softseg.data.synthetic3d import DATASET, write_demo_volumes
from softseg.errors import SoftsegError
from softseg.inference.arrays import predict_images
from softseg.inference.runs import load_run
from softseg.training.batches import prepare, through_plane_axis
from softseg.model.config import TrainConfig
from softseg.model.preprocess import normalize, predict_logits, resize_input, stack_slices, volume_slices
from softseg.training.train import train

SHAPE = (24, 20, 8)
TINY = TrainConfig(epochs=1, batch_size=4, aug_copies=1, crop_size=32, encoder_weights="none",
                   precision="fp32", device="cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = write_demo_volumes(tmp_path_factory.mktemp("vol"), seed=4, shape=SHAPE, n_train=3, n_val=1, n_test=1)
    return root / DATASET


@pytest.fixture(scope="module")
def run(volumes, tmp_path_factory):
    dataset = load_dataset(volumes)
    ids = [c.case_id for c in dataset.cases]
    return train(TINY, dataset, tmp_path_factory.mktemp("runs") / "seed0", ids[:3], ids[3:4], progress=False)


def test_slices_round_trip_and_axis_of_largest_spacing(volumes):
    x = torch.arange(2 * 4 * 5 * 3, dtype=torch.float32).reshape(2, 4, 5, 3)
    for axis in (0, 1, 2):
        slices = volume_slices(x, axis)
        assert len(slices) == x.shape[axis + 1] and slices[1].shape[0] == 2
        assert torch.equal(stack_slices(slices, axis), x)
    assert torch.equal(volume_slices(x, 2)[1], x[..., 1]) and torch.equal(volume_slices(x, 0)[2], x[:, 2])
    dataset = load_dataset(volumes)
    assert through_plane_axis(dataset.cases) == 2  # 0.8 x 0.8 x 2.5 mm


def test_every_slice_is_a_sample_of_the_whole_volume_normalised(volumes):
    dataset = load_dataset(volumes)
    cases = [c for c in dataset.cases if c.split == "Training"]
    config = TINY.replace(tasks=("task01",), slice_axis=2)
    data = prepare(cases, config)
    assert len(data.images) == 3 * SHAPE[2]
    assert data.case_ids[:2] == ("case01:0", "case01:1")
    whole = normalize(cases[0].image)  # z-scored as a volume, not slice by slice
    soft = torch.from_numpy(soft_label(cases[0], "task01"))
    for k in range(SHAPE[2]):
        torch.testing.assert_close(data.images[k], whole[..., k])
        torch.testing.assert_close(data.labels[k][0], soft[..., k])
    val = prepare(cases[:1], config, validation=True)  # validation keeps the volume
    assert val.images[0].shape == (1, *SHAPE) and val.source_labels[0].shape == (1, *SHAPE)


def test_training_on_volumes_records_the_axis_and_steps_over_slices(run):
    config = json.loads((run / "config.json").read_text())
    assert config["slice_axis"] == 2
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 2 and history[1].split(",")[3] != ""  # a validation QUBIQ score


def test_prediction_is_the_model_slice_by_slice(run, volumes):
    dataset = load_dataset(volumes)
    case = dataset.cases[0]
    loaded = load_run(run, checkpoint="last", device="cpu")
    (prob,) = predict_images([loaded], [case.image])
    assert prob.shape == (1, *SHAPE) and prob.dtype == np.float32
    whole = normalize(case.image)
    for k in (0, 3):
        x = resize_input(whole[..., k], loaded.config)
        expected = torch.sigmoid(predict_logits(loaded.model, x, "fp32", torch.device("cpu")))
        np.testing.assert_allclose(prob[..., k], expected.numpy(), atol=1e-5)


def test_predict_writes_volumes_in_the_source_geometry(run, volumes, tmp_path):
    out = tmp_path / "preds"
    assert main(["predict", str(run), str(volumes), "--out", str(out), "--split", "Testing", "--std",
                 "--device", "cpu", "--no-progress"]) == 0
    source = nib.load(volumes / "Testing" / "case05" / "image.nii.gz")
    for name in ("task01.nii.gz", "task01_std.nii.gz"):
        written = nib.load(out / "case05" / name)
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
        assert written.header["sform_code"] == source.header["sform_code"]
        assert written.header.get_zooms() == pytest.approx(source.header.get_zooms())
    p = nib.load(out / "case05" / "task01.nii.gz").get_fdata()
    assert 0 <= p.min() and p.max() <= 1


def test_a_run_trained_on_images_refuses_volumes(tmp_path, volumes):
    from tests.test_train import make_dataset

    images = make_dataset(3, size=32)
    ids = [c.case_id for c in images.cases]
    run = train(TINY.replace(epochs=1), images, tmp_path / "r", ids[:2], ids[2:], progress=False)
    loaded = load_run(run, checkpoint="last", device="cpu")
    with pytest.raises(SoftsegError, match=r"image 0: a volume \(1, 24, 20, 8\).*trained on 2D images"):
        predict_images([loaded], [load_dataset(volumes).cases[0].image])


def test_qubiq_submission_layout_for_volumes(run, volumes, tmp_path):
    out = tmp_path / "submission"
    assert main(["predict", str(run), str(volumes / "Validation"), "--out", str(out), "--qubiq",
                 "--device", "cpu", "--no-progress"]) == 0
    written = nib.load(out / DATASET / "case04" / "task01.nii.gz")
    source = nib.load(volumes / "Validation" / "case04" / "image.nii.gz")
    assert written.shape == source.shape and written.get_data_dtype() == np.float32
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert sorted(p.name for p in out.iterdir()) == [DATASET, f"predictions-{DATASET}-task01.json"]
