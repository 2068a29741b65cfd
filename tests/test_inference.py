"""inference: normalise, resize, pad to 32, model, sigmoid, crop and un-resize back."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softseg.model.config import TrainConfig
from softseg.errors import SoftsegError
from softseg.inference import arrays as inference
from softseg.inference.arrays import predict_images
from softseg.model.network import create_model
from softseg.inference.runs import LoadedRun


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def _run(seed=0, in_channels=1, tasks=("task01", "task02"), resize=None, precision="fp32"):
    torch.manual_seed(seed)
    model = create_model(in_channels, len(tasks)).eval()
    config = TrainConfig(tasks=tasks, in_channels=in_channels, resize=resize, precision=precision)
    return LoadedRun(Path(f"run{seed}"), model, config, tasks, Path("best.pt"), torch.device("cpu"))


def _by_hand(run, image):
    """The documented steps, written out: z-score, pad at the end to 32, sigmoid, crop."""
    x = torch.from_numpy(image).double()
    x = ((x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True, unbiased=False)).float()
    h, w = x.shape[1:]
    if run.config.resize:
        x = F.interpolate(x[None], size=(run.config.resize,) * 2, mode="bilinear", antialias=True)[0]
    ph, pw = -x.shape[1] % 32, -x.shape[2] % 32
    x = F.pad(x, (0, pw, 0, ph))
    with torch.no_grad():
        p = torch.sigmoid(run.model(x[None]))[0]
    p = p[:, : x.shape[1] - ph, : x.shape[2] - pw]
    if run.config.resize:
        p = F.interpolate(p[None], size=(h, w), mode="bilinear")[0]
    return p.numpy()


@pytest.fixture(scope="module")
def runs():
    return [_run(0), _run(1)]


def test_odd_sized_image_is_predicted_on_its_own_grid(runs):
    image = np.random.default_rng(0).normal(50, 10, (1, 45, 70)).astype(np.float32)
    (prob,) = predict_images(runs[:1], [image])
    assert prob.shape == (2, 45, 70) and prob.dtype == np.float32
    assert prob.min() >= 0 and prob.max() <= 1
    np.testing.assert_allclose(prob, _by_hand(runs[0], image), atol=1e-5)


def test_zscore_makes_prediction_independent_of_intensity_scale(runs):
    image = np.random.default_rng(1).random((1, 32, 40)).astype(np.float32)
    a, b = predict_images(runs[:1], [image, image * 7.0 + 100.0])
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_runs_are_averaged(runs):
    image = np.random.default_rng(2).random((1, 33, 33)).astype(np.float32)
    (both,) = predict_images(runs, [image])
    (p0,) = predict_images(runs[:1], [image])
    (p1,) = predict_images(runs[1:], [image])
    np.testing.assert_allclose(both, (p0 + p1) / 2, atol=1e-6)
    assert not np.allclose(p0, p1)


def test_resize_is_applied_and_undone():
    run = _run(2, resize=64)
    image = np.random.default_rng(3).random((1, 90, 120)).astype(np.float32)
    (prob,) = predict_images([run], [image])
    assert prob.shape == (2, 90, 120)
    np.testing.assert_allclose(prob, _by_hand(run, image), atol=1e-5)


def test_bf16_close_to_fp32():
    fp32, bf16 = _run(3, precision="fp32"), _run(3, precision="bf16")
    image = np.random.default_rng(4).random((1, 64, 64)).astype(np.float32)
    (a,), (b,) = predict_images([fp32], [image]), predict_images([bf16], [image])
    assert np.abs(a - b).max() < 0.05


def test_errors(runs):
    with pytest.raises(SoftsegError, match="no trained run given"):
        predict_images([], [np.zeros((1, 32, 32), np.float32)])
    with pytest.raises(SoftsegError, match=r"image 0: a volume \(1, 8, 32, 32\) \(channels first\), but the "
                                           r"run was trained on 2D images"):
        predict_images(runs[:1], [np.zeros((1, 8, 32, 32), np.float32)])
    with pytest.raises(SoftsegError, match=r"image 0: expected a 2D image \(C, H, W\) or a volume \(C, X, Y, Z\), "
                                           r"found shape \(1, 32\)"):
        predict_images(runs[:1], [np.zeros((1, 32), np.float32)])
    with pytest.raises(SoftsegError, match=r"image 1: expected 1 channel\(s\) as in training, found 3"):
        predict_images(runs[:1], [np.zeros((1, 32, 32), np.float32), np.zeros((3, 32, 32), np.float32)])
    other = _run(4, tasks=("task01",))
    with pytest.raises(SoftsegError, match="differ from.*only runs trained on the same tasks"):
        predict_images([runs[0], other], [np.zeros((1, 32, 32), np.float32)])


def test_batched_images_of_mixed_shapes_equal_one_at_a_time(runs):
    rng = np.random.default_rng(5)
    images = [rng.random((1, 40, 50)).astype(np.float32), rng.random((1, 64, 64)).astype(np.float32),
              rng.random((1, 40, 50)).astype(np.float32)]
    together = predict_images(runs, images)
    assert [p.shape for p in together] == [(2, 40, 50), (2, 64, 64), (2, 40, 50)]
    for image, prob in zip(images, together):
        (alone,) = predict_images(runs, [image])
        np.testing.assert_allclose(prob, alone, atol=1e-5)
    assert not np.allclose(together[0], together[2])  # each image keeps its own map


def test_passes_hold_same_shaped_images_up_to_the_pixel_bound(monkeypatch):
    from softseg.model import modes

    prepared = [torch.zeros(1, 64, 64), torch.zeros(1, 40, 50), torch.zeros(1, 64, 64),
                torch.zeros(1, 64, 64), torch.zeros(1, 64, 64)]
    # 40x50 pads to 64x64 too, but it is its own shape group
    monkeypatch.setattr(modes, "CPU_BATCH_PIXELS", 2 * 64 * 64 + 1)
    cpu = torch.device("cpu")
    assert modes._passes(prepared, cpu) == [[0, 2], [3, 4], [1]]
    monkeypatch.setattr(modes, "CPU_BATCH_PIXELS", 100)  # less than one image: one each
    assert modes._passes(prepared, cpu) == [[0], [2], [3], [4], [1]]
    # a GPU takes a group in one pass up to its own, larger bound (a CT volume's slices do not)
    assert modes._passes(prepared, torch.device("cuda")) == [[0, 2, 3, 4], [1]]
    monkeypatch.setattr(modes, "GPU_BATCH_PIXELS", 3 * 64 * 64)
    assert modes._passes(prepared, torch.device("cuda")) == [[0, 2, 3], [4], [1]]


# ----------------------------------------------------------------------------- flip TTA


def _conv_run(kernel, hflip=0.5, vflip=0.5, temperature=None):
    """A one-layer "model": a 3x3 convolution with zero padding (flip-equivariant exactly when
    the kernel is symmetric under the flip), two tasks (the kernel and its negative + 1)."""
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    with torch.no_grad():
        k = torch.as_tensor(kernel, dtype=torch.float32)
        conv.weight.copy_(torch.stack([k, -k])[:, None])
        conv.bias.copy_(torch.tensor([0.0, 1.0]))
    config = TrainConfig(tasks=("task01", "task02"), in_channels=1, precision="fp32", hflip=hflip, vflip=vflip)
    return LoadedRun(Path("conv"), conv.eval(), config, ("task01", "task02"), Path("last.pt"),
                     torch.device("cpu"), temperature)


def _flipped_by_hand(run, image, flips, temperature=(1.0, 1.0)):
    """Mean over ``flips`` of sigmoid(unflip(model(pad(flip(z-scored image)))) / T), cropped."""
    x = torch.from_numpy(image).double()
    x = ((x - x.mean()) / x.std(unbiased=False)).float()
    h, w = x.shape[1:]
    t = torch.tensor(temperature)[:, None, None]
    total = 0
    for dims in flips:
        y = x.flip(dims) if dims else x
        y = F.pad(y, (0, -w % 32, 0, -h % 32))
        with torch.no_grad():
            z = run.model(y[None])[0, :, :h, :w]
        z = z.flip(dims) if dims else z
        total = total + torch.sigmoid(z / t)
    return (total / len(flips)).numpy()


def test_tta_views_follow_the_training_flips():
    def views(hflip, vflip):
        return inference.tta_flips(TrainConfig(hflip=hflip, vflip=vflip), "flip")

    assert views(0.5, 0.5) == ((), (-1,), (-2,), (-2, -1))
    assert views(0.5, 0.0) == ((), (-1,))
    assert views(0.0, 0.3) == ((), (-2,))
    assert views(0.0, 0.0) == ((),)
    assert inference.tta_flips(TrainConfig(), "none") == ((),)
    with pytest.raises(SoftsegError, match=r"tta 'rotate': expected one of none, flip"):
        inference.tta_flips(TrainConfig(), "rotate")


def test_tta_of_a_flip_equivariant_model_changes_nothing():
    symmetric = [[1.0, 2.0, 1.0], [2.0, -3.0, 2.0], [1.0, 2.0, 1.0]]
    run = _conv_run(symmetric)
    image = np.random.default_rng(7).random((1, 37, 45)).astype(np.float32)  # odd: padding is one-sided
    (plain,) = predict_images([run], [image])
    (tta,) = predict_images([run], [image], tta="flip")
    assert tta.shape == plain.shape == (2, 37, 45)
    np.testing.assert_allclose(tta, plain, atol=1e-6)


@pytest.mark.parametrize("hflip, vflip, flips", [
    (0.5, 0.5, [(), (-1,), (-2,), (-2, -1)]),
    (0.5, 0.0, [(), (-1,)]),
    (0.0, 0.5, [(), (-2,)]),
])
def test_tta_of_an_asymmetric_model_is_the_hand_average_of_the_unflipped_views(hflip, vflip, flips):
    asymmetric = [[3.0, 0.0, -1.0], [2.0, 1.0, 0.0], [0.0, -2.0, 0.5]]
    temperature = (2.0, 0.5)  # applied to each view's logits, before the average
    run = _conv_run(asymmetric, hflip, vflip, temperature)
    image = np.random.default_rng(8).random((1, 37, 45)).astype(np.float32)
    (tta,) = predict_images([run], [image], tta="flip")
    np.testing.assert_allclose(tta, _flipped_by_hand(run, image, flips, temperature), atol=1e-6)
    (plain,) = predict_images([run], [image])
    np.testing.assert_allclose(plain, _flipped_by_hand(run, image, [()], temperature), atol=1e-6)
    assert np.abs(tta - plain).max() > 1e-2  # the views differ: the test can fail
