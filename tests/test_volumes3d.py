"""The 3D mode: the DynUNet planned in nnU-Net's way, 3D patches and augmentation,
sliding-window prediction, --spacing, and volumes in and out of the CLI."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softseg.cli import main
from softseg.data.datasets import load_dataset
from softseg.data.labels import soft_label
from softseg.data.synthetic3d import DATASET, write_demo_volumes
from softseg.errors import SoftsegError
from softseg.inference.arrays import predict_images
from softseg.model.modes import Volume3D, in_plane_axes
from softseg.inference.runs import load_run
from softseg.training.augment3d import (
    augmented_patches,
    foreground_voxels,
    random_patches,
    sampling_grid_3d,
)
from softseg.training.batches import prepare
from softseg.model.config import TrainConfig, resolve_config
from softseg.model.network3d import check_patch, create_model_3d, divisor, plan_network, plan_patch
from softseg.model.preprocess import normalize, predict_logits_volume
from softseg.training.train import train

SHAPE = (24, 20, 8)
SPACING = (0.8, 0.8, 2.5)  # the demo volumes' voxels
TINY = TrainConfig(dims="3d", epochs=1, batch_size=2, aug_copies=1, patch_size=(16, 16, 8), base_filters=4,
                   encoder_weights="none", precision="fp32", device="cpu")
CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = write_demo_volumes(tmp_path_factory.mktemp("vol3d"), seed=5, shape=SHAPE, n_train=3, n_val=1, n_test=1)
    return root / DATASET


@pytest.fixture(scope="module")
def run(volumes, tmp_path_factory):
    dataset = load_dataset(volumes)
    ids = [c.case_id for c in dataset.cases]
    return train(TINY, dataset, tmp_path_factory.mktemp("runs3d") / "seed0", ids[:3], ids[3:4], progress=False)


# ------------------------------------------------------------------------------- planning


def test_network_plan_downsamples_in_plane_first_on_anisotropic_voxels():
    # by hand: 0.8 < 2.5 / 2, so level 1 is in-plane only; then the spacing is (1.6, 1.6, 2.5)
    # and every axis halves while it has >= 8 voxels: z stops at 5, x and y at 4
    kernels, strides = plan_network((64, 64, 20), SPACING)
    assert strides == [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert kernels == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert divisor(strides) == [16, 16, 4]
    _, isotropic = plan_network((128, 128, 128), (1.0, 1.0, 1.0))
    assert len(isotropic) == 6 and isotropic[-1] == [2, 2, 2]  # at most 5 downsamplings


def test_patch_plan_fits_the_budget_and_the_divisor():
    assert plan_patch([(64, 64, 20)] * 3, SPACING) == (64, 64, 20)  # fits: the median shape
    patch = plan_patch([(512, 512, 100), (512, 512, 90), (400, 400, 80)], SPACING)
    assert math.prod(patch) <= 96 * 96 * 32
    _, strides = plan_network(patch, SPACING)
    assert all(n % d == 0 for n, d in zip(patch, divisor(strides)))
    with pytest.raises(SoftsegError, match=r"expected multiples of \(16, 16, 4\).*--patch-size 64 64 20"):
        check_patch((64, 64, 21), SPACING)
    with pytest.raises(SoftsegError, match=r"patch_size \(8, 8, 8\): too small .* downsample at least twice"):
        check_patch((8, 8, 8), (1.0, 1.0, 1.0))


def test_3d_defaults_sit_under_the_command_line():
    config = resolve_config(overrides={"dims": "3d"})
    assert (config.batch_size, config.lr, config.lr_min) == (2, 1e-3, 1e-5)
    assert resolve_config(overrides={"dims": "3d", "batch_size": 4}).batch_size == 4
    assert resolve_config().batch_size == 8  # 2D keeps the paper's
    with pytest.raises(SoftsegError, match="patch_size: expected three voxel counts"):
        resolve_config(overrides={"dims": "3d", "patch_size": [16, 16]})


# ------------------------------------------------------------------ patches and augmentation


class _Settings:
    translate, rotate, zoom, hflip, vflip = 0.0, 0.0, 0.0, 0.0, 0.0
    slice_axis, voxel_spacing = 2, SPACING

    def __init__(self, **changes):
        self.__dict__.update(changes)


def _ramp(shape=(20, 18, 10)):
    grids = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    return torch.stack(grids) / max(shape)  # (3, X, Y, Z): each voxel's coordinates, in [0, 1)


def test_random_patches_stay_inside_and_oversample_the_foreground():
    image = _ramp()
    label = torch.zeros(1, 20, 18, 10)
    label[0, 17, 2, 9] = 0.5  # one labelled voxel, in a corner
    gen = torch.Generator().manual_seed(0)
    fg = [foreground_voxels(label)]
    hits = 0
    for _ in range(300):
        x, y = random_patches([image], [label], (8, 8, 4), gen, fg)
        corner = (x[0, :, 0, 0, 0] * 20).round().long()  # the ramp gives the window's corner
        assert x.shape == (1, 3, 8, 8, 4) and all(0 <= c <= s - p for c, s, p in zip(corner, (20, 18, 10), (8, 8, 4)))
        torch.testing.assert_close(x[0], image[:, corner[0]:corner[0] + 8, corner[1]:corner[1] + 8, corner[2]:corner[2] + 4])
        hits += int(y.max() > 0)
    # a third of the patches is forced onto the voxel; uniform ones find it with p = 1/40
    assert 0.25 < hits / 300 < 0.45


def test_without_warp_a_copy_is_an_exact_window_and_flips_act_in_plane():
    image = _ramp()
    gen = torch.Generator().manual_seed(1)
    x, y = augmented_patches([image], [image[:1].clamp(0, 1)], (8, 8, 4), _Settings(), gen)
    corner = (x[0, :, 0, 0, 0] * 20).round().long()
    window = image[:, corner[0]:corner[0] + 8, corner[1]:corner[1] + 8, corner[2]:corner[2] + 4]
    torch.testing.assert_close(x[0], window, atol=1e-5, rtol=0)
    torch.testing.assert_close(y[0], x[0, :1])  # image and label share the grid
    for axis in (0, 1, 2):
        first, second = in_plane_axes(axis)
        x, _ = augmented_patches([image], [image[:1]], (8, 8, 4), _Settings(vflip=1.0, hflip=1.0, slice_axis=axis),
                                 torch.Generator().manual_seed(1))
        through = x[0, axis]  # the through-plane coordinate is not flipped ...
        assert torch.all(through.diff(dim=axis) > 0)
        assert torch.all(x[0, first].diff(dim=first) < 0) and torch.all(x[0, second].diff(dim=second) < 0)


def test_rotation_is_about_the_through_plane_axis_in_millimetres():
    # 90 degrees with voxels 1 x 2 mm in-plane: an output step of one voxel along axis 1
    # (2 mm) lands 2 voxels along axis 0 (1 mm each) in the source, by hand
    grid = sampling_grid_3d((40, 40, 10), (5, 5, 3), (10.0, 10.0, 2.0), (0.0, 0.0, 0.0), math.pi / 2, 1.0,
                            axis=2, spacing=(1.0, 2.0, 3.0))
    source = torch.stack([(grid[..., 2 - a] + 1) * n / 2 - 0.5 for a, n in enumerate((40, 40, 10))], dim=-1)
    centre = torch.tensor([12.0, 12.0, 3.0])
    torch.testing.assert_close(source[2, 3, 1] - centre, torch.tensor([2.0, 0.0, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(source[3, 2, 1] - centre, torch.tensor([0.0, -0.5, 0.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(source[2, 2, 2] - centre, torch.tensor([0.0, 0.0, 1.0]), atol=1e-4, rtol=0)


def test_augmented_labels_stay_soft_aligned_and_without_constant_blocks():
    label = torch.zeros(1, 20, 18, 10)
    label[0, 5:15, 4:14, 2:8] = 0.5
    label[0, 8:12, 7:11, 3:7] = 1.0
    image = torch.cat([label, _ramp()])  # channel 0 is the label itself
    settings = _Settings(translate=0.2, rotate=15.0, zoom=0.1, hflip=0.5, vflip=0.5)
    x, y = augmented_patches([image] * 8, [label] * 8, (12, 12, 6), settings, torch.Generator().manual_seed(2))
    assert y.min() >= 0 and y.max() <= 1
    torch.testing.assert_close(x[:, :1], y)  # aligned: the same grid for image and label
    assert not torch.equal(y[0], y[1])  # copies are independent
    assert (y > 0).float().mean() > 0 and ((y > 0) & (y < 1)).any()  # soft values survive
    ramp = x[:, 1:]  # reflection: no 3x3x3 block of one value in the coordinates ramp
    blocks = F.avg_pool3d(ramp.reshape(-1, 1, 12, 12, 6).square(), 3, 1) - F.avg_pool3d(ramp.reshape(-1, 1, 12, 12, 6), 3, 1).square()
    assert blocks.min() > 1e-7


def test_3d_tta_flips_the_in_plane_axes():
    config = TrainConfig(dims="3d", slice_axis=0)
    mode = Volume3D()
    assert mode.flip_dims(config, (-1,)) == (4,) and mode.flip_dims(config, (-2,)) == (3,)
    assert mode.flip_dims(config.replace(slice_axis=2), (-2, -1)) == (2, 3)


# --------------------------------------------------------------------- sliding windows


def test_one_window_is_the_model_and_small_volumes_come_back_whole():
    torch.manual_seed(0)
    model = create_model_3d(1, 1, (16, 16, 8), SPACING, base_filters=4).eval()
    x = torch.randn(1, 16, 16, 8)
    with torch.no_grad():
        direct = model(x[None])[0]
    torch.testing.assert_close(predict_logits_volume(model, x, (16, 16, 8), "fp32", CPU), direct, atol=1e-5, rtol=1e-5)
    assert predict_logits_volume(model, torch.randn(1, 10, 30, 5), (16, 16, 8), "fp32", CPU).shape == (1, 10, 30, 5)


# ---------------------------------------------------------------------- training and CLI


def test_3d_training_data_are_whole_volumes_with_soft_labels(volumes):
    cases = [c for c in load_dataset(volumes).cases if c.split == "Training"]
    data = prepare(cases, TINY.replace(tasks=("task01",), slice_axis=2))
    assert len(data.images) == 3 and data.images[0].shape == (1, *SHAPE)
    torch.testing.assert_close(data.images[0], normalize(cases[0].image))
    torch.testing.assert_close(data.labels[0][0], torch.from_numpy(soft_label(cases[0], "task01")))
    assert torch.equal(data.foreground[0], torch.nonzero(data.labels[0][0] > 0))


def test_3d_run_records_its_plan_and_predicts_by_sliding_windows(run, volumes):
    config = json.loads((run / "config.json").read_text())
    assert (config["dims"], config["patch_size"], config["voxel_spacing"], config["slice_axis"]) == \
        ("3d", [16, 16, 8], pytest.approx(list(SPACING)), 2)
    case = load_dataset(volumes).cases[0]
    loaded = load_run(run, checkpoint="last", device="cpu")
    (prob,) = predict_images([loaded], [case.image])
    logits = predict_logits_volume(loaded.model, normalize(case.image), (16, 16, 8), "fp32", CPU)
    assert prob.shape == (1, *SHAPE)
    np.testing.assert_allclose(prob, torch.sigmoid(logits).numpy(), atol=1e-6)
    (flipped,) = predict_images([loaded], [case.image], tta="flip")
    assert flipped.shape == prob.shape and not np.allclose(flipped, prob)


def test_3d_resume_ends_where_an_uninterrupted_run_does(volumes, tmp_path, monkeypatch):
    import softseg.training.train as train_module

    dataset = load_dataset(volumes)
    ids = [c.case_id for c in dataset.cases]
    two = TINY.replace(epochs=2)
    whole = train(two, dataset, tmp_path / "whole", ids[:3], ids[3:4], progress=False)
    real_epoch, calls = train_module.train_epoch, []

    def stop_in_epoch_two(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(two, dataset, tmp_path / "part", ids[:3], ids[3:4], progress=False)
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    part = train(two, dataset, tmp_path / "part", ids[:3], ids[3:4], resume=True, progress=False)
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-6, msg=key)


def test_predict_cli_writes_the_source_geometry(run, volumes, tmp_path):
    out = tmp_path / "preds"
    assert main(["predict", str(run), str(volumes), "--out", str(out), "--split", "Testing", "--std",
                 "--device", "cpu", "--no-progress"]) == 0
    source = nib.load(volumes / "Testing" / "case05" / "image.nii.gz")
    for name in ("task01.nii.gz", "task01_std.nii.gz"):
        written = nib.load(out / "case05" / name)
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
        assert (written.header["sform_code"], written.header["qform_code"]) == \
            (source.header["sform_code"], source.header["qform_code"])
        assert written.header.get_xyzt_units() == source.header.get_xyzt_units()


def test_3d_on_2d_data_and_a_patch_larger_than_a_volume_are_refused(run, volumes, tmp_path, capsys):
    from softseg.data.synthetic import write_demo_dataset

    flat = write_demo_dataset(tmp_path / "flat", seed=0, size=32, n_train=2, n_val=1, n_test=1)
    out = tmp_path / "out2d"
    assert main(["train", str(flat / "demo-shapes"), "--out", str(out), "--dims", "3d",
                 "--device", "cpu", "--no-progress"]) == 2
    assert "dims 3d trains on volumes" in capsys.readouterr().err and not out.exists()
    out = tmp_path / "big"
    assert main(["train", str(volumes), "--out", str(out), "--dims", "3d", "--patch-size", "32", "32", "8",
                 "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "larger than 3 training volume(s)" in err and "case01 (24, 20, 8)" in err and not out.exists()
    with pytest.raises(SoftsegError, match="run is a 3D model"):
        predict_images([load_run(run, checkpoint="last", device="cpu")], [np.zeros((1, 8, 8))])
    assert main(["export", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "export supports 2D runs" in capsys.readouterr().err and not (tmp_path / "m.onnx").exists()


def test_a_4d_time_series_image_is_refused_by_check_and_train(tmp_path, capsys):
    data = write_demo_volumes(tmp_path / "d", seed=5, shape=SHAPE, n_train=2, n_val=1, n_test=0) / DATASET
    image = data / "Training" / "case01" / "image.nii.gz"
    source = nib.load(image)
    frames = np.repeat(np.asarray(source.dataobj)[..., None], 6, axis=-1)
    nib.save(nib.Nifti1Image(frames, source.affine), image)
    assert main(["check", str(data)]) == 2
    assert "(6 frames: a time series?)" in "".join(capsys.readouterr())
    out = tmp_path / "run"
    assert main(["train", str(data), "--out", str(out), "--dims", "3d", "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{image}: expected a 2D or 3D image" in err and "(6 frames: a time series?)" in err
    assert not out.exists()


# --------------------------------------------------------------------------- --spacing


def test_resampling_keeps_values_and_places():
    from softseg.model.preprocess import resample, resampled_shape

    assert resampled_shape((24, 20, 8), SPACING, (1.6, 1.6, 2.5)) == (12, 10, 8)
    constant = torch.full((2, 24, 20, 8), 0.7)
    torch.testing.assert_close(resample(constant, (12, 10, 8)), torch.full((2, 12, 10, 8), 0.7))
    ramp = _ramp((24, 20, 8))[:1]  # linear along axis 0: halving the grid keeps each centre's value
    halved = resample(ramp, (12, 20, 8))
    centres = (torch.arange(12) * 2 + 0.5) / 24  # the new voxels' centres, in the ramp's units
    torch.testing.assert_close(halved[0, :, 3, 3], centres, atol=1e-6, rtol=0)


def test_3d_with_spacing_trains_on_the_resampled_grid_and_predicts_the_source_grid(volumes, tmp_path):
    dataset = load_dataset(volumes)
    ids = [c.case_id for c in dataset.cases]
    config = TINY.replace(spacing=(1.0, 1.0, 2.5))
    data = prepare([dataset.cases[0]], config.replace(tasks=("task01",), slice_axis=2))
    assert data.images[0].shape == (1, 19, 16, 8) and data.labels[0].shape == (1, 19, 16, 8)
    assert 0 <= data.labels[0].min() and data.labels[0].max() <= 1
    run = train(config, dataset, tmp_path / "r", ids[:3], ids[3:4], progress=False)
    saved = json.loads((run / "config.json").read_text())
    assert saved["voxel_spacing"] == pytest.approx([1.0, 1.0, 2.5]) and saved["spacing"] == pytest.approx([1.0, 1.0, 2.5])
    loaded = load_run(run, checkpoint="last", device="cpu")
    case = dataset.cases[4]
    (prob,) = predict_images([loaded], [case.image], spacings=[case.spacing])
    assert prob.shape == (1, *SHAPE)
    with pytest.raises(SoftsegError, match=r"resamples images to \(1.0, 1.0, 2.5\) mm; pass each"):
        predict_images([loaded], [case.image])
    out = tmp_path / "preds"
    assert main(["predict", str(run), str(volumes), "--out", str(out), "--split", "Testing", "--device", "cpu",
                 "--no-progress"]) == 0
    assert nib.load(out / "case05" / "task01.nii.gz").shape == SHAPE


def test_2d_mode_with_spacing_and_bad_spacings(volumes, tmp_path, capsys):
    dataset = load_dataset(volumes)
    ids = [c.case_id for c in dataset.cases]
    config = TrainConfig(epochs=1, batch_size=4, aug_copies=1, crop_size=32, encoder_weights="none", precision="fp32",
                         device="cpu", spacing=(0.4, 0.4, 2.5))
    run = train(config, dataset, tmp_path / "r2d", ids[:3], ids[3:4], progress=False)
    case = dataset.cases[4]
    (prob,) = predict_images([load_run(run, checkpoint="last", device="cpu")], [case.image], spacings=[case.spacing])
    assert prob.shape == (1, *SHAPE)  # slices of 48 x 40 predicted, stacked, resampled back
    out = tmp_path / "bad"
    assert main(["train", str(volumes), "--out", str(out), "--spacing", "1", "1", "--device", "cpu", "--no-progress"]) == 2
    assert "spacing (1.0, 1.0) has 2 value(s), but the cases have 3 spatial axes" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SoftsegError, match="spacing and resize: give one of them"):
        resolve_config(overrides={"spacing": [1, 1], "resize": 64})
