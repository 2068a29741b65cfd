"""model.modes and model.heads: each decided once from the configuration; a mode's whole-image
path keeps every pixel on its grid; validation and prediction both take it."""

import numpy as np
import pytest
import torch

from softseg.errors import SoftsegError
from softseg.model import modes
from softseg.model.config import TrainConfig
from softseg.model.heads import HEADS, SigmoidTasks, SoftmaxClasses, head_of
from softseg.model.modes import MODES, Image2D, Slices2D, Volume3D, mode_of

CPU = torch.device("cpu")


def test_mode_and_head_are_decided_from_the_configuration():
    assert isinstance(mode_of(TrainConfig()), Image2D)
    assert isinstance(mode_of(TrainConfig(slice_axis=2)), Slices2D)
    assert isinstance(mode_of(TrainConfig(dims="3d", slice_axis=2)), Volume3D)
    assert isinstance(head_of(TrainConfig(tasks=("a", "b"))), SigmoidTasks)
    assert isinstance(head_of(TrainConfig(tasks=("cup",), classes=("bg", "cup"))), SoftmaxClasses)
    # exactly one of the registered ones claims each configuration
    for config in (TrainConfig(), TrainConfig(slice_axis=0), TrainConfig(dims="3d", slice_axis=1)):
        assert sum(cls.claims(config) for cls in MODES.values()) == 1
    for config in (TrainConfig(), TrainConfig(classes=("bg", "x"))):
        assert sum(cls.claims(config) for cls in HEADS.values()) == 1


def test_heads_name_their_channels_and_where_the_tasks_sit():
    binary = TrainConfig(tasks=("t1", "t2"))
    multi = TrainConfig(tasks=("disc", "cup"), classes=("background", "disc", "cup"))
    assert head_of(binary).outputs(binary) == ("t1", "t2")
    assert head_of(multi).outputs(multi) == ("background", "disc", "cup")
    channels = np.arange(3)
    assert list(channels[head_of(binary).task_channels()]) == [0, 1, 2]
    assert list(channels[head_of(multi).task_channels()]) == [1, 2]


def test_head_probabilities_and_temperatures():
    logits = torch.tensor([[[[0.0]], [[2.0]], [[-1.0]]]])  # (1, 3, 1, 1)
    sigmoid, softmax = SigmoidTasks(), SoftmaxClasses()
    torch.testing.assert_close(sigmoid.probabilities(logits), torch.sigmoid(logits))
    prob = softmax.probabilities(logits)
    torch.testing.assert_close(prob.sum(1), torch.ones(1, 1, 1))
    torch.testing.assert_close(prob[0, :, 0, 0], torch.softmax(torch.tensor([0.0, 2.0, -1.0]), 0))
    # one T per task for sigmoids; the one shared T of a softmax (each class records it)
    assert sigmoid.temperature_divisor((2.0, 4.0), 2, "cpu").shape == (2, 1, 1)
    torch.testing.assert_close(softmax.temperature_divisor((3.0, 3.0), 3, "cpu"), torch.full((1, 1, 1, 1), 3.0))


def test_a_softmax_random_rater_draw_is_one_raters_whole_class_map():
    config = TrainConfig(tasks=("a", "b"), classes=("bg", "a", "b"))
    head = head_of(config)
    rater0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # (C, pixels) one-hot
    rater1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    flat = [torch.cat([rater0, rater1])]
    draws = {tuple(head.draw_rater(flat, torch.Generator().manual_seed(s)).flatten().tolist()) for s in range(20)}
    assert draws == {tuple(rater0.flatten().tolist()), tuple(rater1.flatten().tolist())}


def _double(batch: torch.Tensor) -> torch.Tensor:
    """A stand-in for a network: 2x the first channel, as one output channel."""
    return 2 * batch[:, :1]


def test_slices_mode_is_the_image_mode_applied_slice_by_slice():
    volume = torch.randn(1, 5, 12, 7)
    config = TrainConfig(slice_axis=0)
    (out,) = Slices2D().outputs(_double, [volume], config, CPU, clamp01=False)
    assert out.shape == (1, 5, 12, 7)
    for k in range(5):
        (alone,) = Image2D().outputs(_double, [volume[:, k]], TrainConfig(), CPU, clamp01=False)
        torch.testing.assert_close(out[:, k], alone)
    # a 2D image through a slices run is one slice
    (flat,) = Slices2D().outputs(_double, [volume[:, 0]], config, CPU, clamp01=False)
    torch.testing.assert_close(flat, 2 * volume[:1, 0])


def test_outputs_come_back_on_each_inputs_grid_with_a_resize():
    config = TrainConfig(resize=32)
    images = [torch.rand(1, 48, 40), torch.rand(1, 20, 64), torch.rand(1, 48, 40)]
    seen = []

    def forward(batch):
        seen.append(tuple(batch.shape))
        return _double(batch)

    out = Image2D().outputs(forward, images, config, CPU, clamp01=True)
    assert [tuple(o.shape) for o in out] == [(1, 48, 40), (1, 20, 64), (1, 48, 40)]
    assert sorted(seen) == [(3, 1, 32, 32)]  # resized to the run's grid: one pass for all three
    assert all(float(o.max()) <= 1.0 for o in out)  # clamp01 for probabilities


def test_volume_mode_runs_one_volume_a_pass_and_flips_in_plane():
    config = TrainConfig(dims="3d", slice_axis=2, patch_size=(8, 8, 4))
    volumes = [torch.randn(1, 6, 5, 4), torch.randn(1, 3, 3, 3)]
    seen = []

    def forward(batch):
        seen.append(tuple(batch.shape))
        return _double(batch)

    out = Volume3D().outputs(forward, volumes, config, CPU, clamp01=False)
    assert seen == [(1, 1, 6, 5, 4), (1, 1, 3, 3, 3)]
    torch.testing.assert_close(out[0], 2 * volumes[0])
    assert Volume3D().flip_dims(config, (-1,)) == (3,) and Volume3D().flip_dims(config, (-2,)) == (2,)
    assert Image2D().flip_dims(TrainConfig(), (-2, -1)) == (-2, -1)


def test_each_mode_refuses_what_it_does_not_predict():
    config = TrainConfig(in_channels=1)
    with pytest.raises(SoftsegError, match=r"image 0: a volume \(1, 4, 4, 4\).*trained on 2D images"):
        Image2D().check_image(0, np.zeros((1, 4, 4, 4)), config)
    with pytest.raises(SoftsegError, match=r"image 3: shape \(1, 4, 4\).*3D model"):
        Volume3D().check_image(3, np.zeros((1, 4, 4)), config.replace(dims="3d"))
    with pytest.raises(SoftsegError, match=r"expected 1 channel\(s\) as in training, found 2"):
        Slices2D().check_image(0, np.zeros((2, 4, 4, 4)), config.replace(slice_axis=0))
    with pytest.raises(SoftsegError, match="sliding windows"):
        Volume3D().check_export("RUN")
    Image2D().check_export("RUN")  # one padded forward pass: exportable


def test_validation_and_prediction_take_the_one_whole_image_path(tmp_path, monkeypatch):
    from softseg.inference.arrays import predict_images
    from softseg.inference.runs import load_run
    from softseg.training.train import train
    from test_train import TINY, ids, make_dataset

    calls = []
    original = modes._Planar.outputs

    def spy(self, forward, inputs, config, device, *, clamp01):
        calls.append(clamp01)
        return original(self, forward, inputs, config, device, clamp01=clamp01)

    monkeypatch.setattr(modes._Planar, "outputs", spy)
    ds = make_dataset(4, size=32)
    run = train(TINY.replace(epochs=1), ds, tmp_path / "r", ids(ds, slice(0, 3)), ids(ds, slice(3, 4)),
                progress=False)
    assert calls == [False]  # validation: the run's logits over the held-out image
    predict_images([load_run(run)], [ds.cases[3].image])
    assert calls == [False, True]  # prediction: its probabilities
