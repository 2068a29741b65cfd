"""model: the paper's U-Net, its initialisation, encoder weights, checkpoints and run loading."""

import math
import os
import socket
import stat
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from softseg.model import network as model_module
from softseg.model.config import TrainConfig, save_config, to_dict
from softseg.inference.batchnorm_fold import fold_batchnorm
from softseg.errors import SoftsegError
from softseg.model.network import create_model
from softseg.model.checkpoints import load_checkpoint, save_checkpoint
from softseg.inference.runs import find_runs, load_run


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return create_model(4, 3)


def test_shapes_and_architecture(unet):
    out = unet(torch.randn(2, 4, 64, 96))
    assert out.shape == (2, 3, 64, 96)
    convs = [m for m in unet.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert sorted({c.out_channels for c in convs}, reverse=True) == [256, 128, 64, 32, 16]
    assert unet.segmentation_head[0].in_channels == 16 and unet.segmentation_head[0].out_channels == 3
    assert unet.encoder._conv_stem.in_channels == 4


def test_batchnorm_momentum_is_uniform_and_running_stats_settle(unet):
    # smp's efficientnet encoder ships momentum 0.01 (TF's 0.99 decay); we use 0.1 everywhere
    bns = [m for m in unet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) > 50 and {b.momentum for b in bns} == {0.1}
    m = create_model(1, 1, bn_momentum=0.5)
    assert {b.momentum for b in m.modules() if isinstance(b, nn.BatchNorm2d)} == {0.5}
    stem = create_model(1, 1).encoder._bn0
    with torch.no_grad():
        stem.train()
        x = torch.randn(4, 32, 8, 8) * 3 + 5
        for _ in range(40):
            stem(x)
    # after 40 steps at momentum 0.1 the running mean is within 1.5 % of the batch mean
    assert torch.allclose(stem.running_mean, x.mean(dim=(0, 2, 3)), rtol=0.02)


def test_every_parameter_receives_a_gradient():
    # smp's efficientnet encoder keeps an unused _conv_head/_bn1; DDP would reject them.
    m = create_model(1, 1)
    m(torch.randn(2, 1, 32, 32)).sum().backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
    assert not hasattr(m.encoder, "_conv_head") and not hasattr(m.encoder, "_bn1")


def test_decoder_is_kaiming_and_head_is_xavier(unet):
    convs = [m for m in unet.decoder.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        w = conv.weight.detach()
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)  # kaiming_uniform, ReLU gain
        assert w.abs().max() <= bound + 1e-6
        # uniform(-b, b) has std b / sqrt(3) = sqrt(2 / fan_in); PyTorch's default init
        # would give a std sqrt(6) times smaller
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert conv.bias is None or torch.all(conv.bias == 0)
    bns = [m for m in unet.decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)
    head = unet.segmentation_head[0]
    w = head.weight.detach()
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert w.abs().max() <= bound + 1e-6
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    assert torch.all(head.bias == 0)


def test_unknown_encoder_and_bad_sizes():
    with pytest.raises(SoftsegError, match="unknown encoder 'efficientnet-b99'"):
        create_model(1, 1, encoder="efficientnet-b99")
    with pytest.raises(SoftsegError, match="at least one input channel and one task"):
        create_model(1, 0)


def test_offline_imagenet_message_is_quick_and_says_what_to_do(monkeypatch):
    monkeypatch.setattr(model_module, "_cached_hub_file", lambda repo, rev: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(SoftsegError, match=r"not in the local cache and HF_HUB_OFFLINE is set.*--encoder-weights PATH.*--encoder-weights none"):
        create_model(1, 1, encoder_weights="imagenet")
    assert time.monotonic() - start < 5


def test_unreachable_hub_message(monkeypatch):
    monkeypatch.setattr(model_module, "_cached_hub_file", lambda repo, rev: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SOFTSEG_OFFLINE", raising=False)
    monkeypatch.setattr(model_module, "_reachable", lambda host, port, timeout: False)
    with pytest.raises(SoftsegError, match="huggingface.co cannot be reached.*--encoder-weights"):
        create_model(1, 1, encoder_weights="imagenet")


def test_reachable_probe():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert model_module._reachable("127.0.0.1", port, 2.0)
    server.close()
    assert not model_module._reachable("127.0.0.1", port, 2.0)


def test_local_encoder_weights_same_channels(tmp_path):
    torch.manual_seed(1)
    source = create_model(1, 1)
    torch.save(source.encoder.state_dict(), tmp_path / "enc.pt")
    loaded = create_model(1, 2, encoder_weights=tmp_path / "enc.pt")
    for (name, a), b in zip(source.encoder.state_dict().items(), loaded.encoder.state_dict().values()):
        assert torch.equal(a, b), name
    # a whole smp model's state_dict works too (its encoder part is used)
    torch.save(source.state_dict(), tmp_path / "whole.pt")
    whole = create_model(1, 1, encoder_weights=str(tmp_path / "whole.pt"))
    assert torch.equal(whole.encoder._conv_stem.weight, source.encoder._conv_stem.weight)


def test_local_three_channel_weights_are_adapted_like_smp(tmp_path):
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    torch.manual_seed(2)
    rgb = smp.encoders.get_encoder("efficientnet-b0", in_channels=3, weights=None)
    state = rgb.state_dict()  # still holds the unused _conv_head/_bn1: they are ignored
    save_file(state, str(tmp_path / "enc.safetensors"))
    grey = create_model(1, 1, encoder_weights=tmp_path / "enc.safetensors")
    assert torch.allclose(grey.encoder._conv_stem.weight, state["_conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(grey.encoder._blocks[3]._depthwise_conv.weight, state["_blocks.3._depthwise_conv.weight"])


def test_bad_weight_files(tmp_path):
    with pytest.raises(SoftsegError, match="no such file"):
        create_model(1, 1, encoder_weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SoftsegError, match="cannot read encoder weights"):
        create_model(1, 1, encoder_weights=tmp_path / "junk.pt")
    torch.save({"_conv_stem.weight": torch.zeros(32, 1, 3, 3)}, tmp_path / "part.pt")
    with pytest.raises(SoftsegError, match="does not fit the EfficientNetEncoder encoder.*missing"):
        create_model(1, 1, encoder_weights=tmp_path / "part.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(SoftsegError, match="expected a state_dict"):
        create_model(1, 1, encoder_weights=tmp_path / "list.pt")


def _fake_run(run_dir, seed=0):
    config = TrainConfig(tasks=("task01", "task02"), in_channels=1, seed=seed, precision="fp32")
    run_dir.mkdir(parents=True)
    save_config(config, run_dir / "config.json")
    torch.manual_seed(seed)
    m = _with_running_stats(create_model(1, 2), seed)
    save_checkpoint({"model": m.state_dict(), "config": to_dict(config)}, run_dir / "checkpoints" / "best.pt")
    return m


def _with_running_stats(model, seed=1):
    """``model`` with BatchNorm statistics far from their (0, 1) start, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            bn.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
            bn.weight.copy_(torch.randn(n, generator=generator) * 0.3 + 1)
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


def test_fold_batchnorm_keeps_the_function_and_removes_every_batchnorm():
    torch.manual_seed(0)
    model = _with_running_stats(create_model(2, 3))
    x = torch.randn(2, 2, 64, 96)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    assert folded is model and not folded.training
    assert [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)] == []
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_leaves_unknown_pairs_alone():
    # a BatchNorm that is not directly after a convolution, and one without running stats
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2),
                        nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    fold_batchnorm(seq)
    assert [type(m).__name__ for m in seq] == ["Conv2d", "ReLU", "BatchNorm2d", "Conv2d", "BatchNorm2d"]


def test_load_run_restores_the_model(tmp_path):
    source = _fake_run(tmp_path / "seed0")
    run = load_run(tmp_path / "seed0", checkpoint="best")
    assert run.tasks == ("task01", "task02") and not run.model.training
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():  # the checkpoint's function, computed by the folded model
        expected = source.eval()(x)
        got = run.model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert not [m for m in run.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not list((tmp_path / "seed0" / "checkpoints").glob(".*tmp*"))
    with pytest.raises(SoftsegError, match=r"last.pt: checkpoint not found; available: \['best'\]"):
        load_run(tmp_path / "seed0")  # the default is the last checkpoint


def test_save_checkpoint_replaces_atomically(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"a": 1}, path)
    save_checkpoint({"a": 2}, path)
    assert torch.load(path)["a"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_find_runs(tmp_path):
    for seed in (10, 2, 0):
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        save_config(TrainConfig(), d / "config.json")
    (tmp_path / "notes").mkdir()
    assert [p.name for p in find_runs(tmp_path)] == ["seed0", "seed2", "seed10"]
    assert find_runs(tmp_path / "seed2") == [tmp_path / "seed2"]
    with pytest.raises(SoftsegError, match="no softseg run found"):
        find_runs(tmp_path / "notes")


class _Planted:
    """Unpickling this would run code: it creates the file named in its argument."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class _Custom:
    pass


def test_checkpoints_load_weights_only_and_code_in_a_pickle_never_runs(tmp_path):
    marker = tmp_path / "planted"
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}, "payload": _Planted(marker)}, bad)
    with pytest.raises(SoftsegError, match=r"bad.pt: the checkpoint holds objects other than tensors "
                                           r"and plain types, which softseg does not load"):
        load_checkpoint(bad)
    assert not marker.exists()
    torch.save({"model": {}, "extra": _Custom()}, tmp_path / "custom.pt")
    with pytest.raises(SoftsegError, match=r"custom.pt: the checkpoint holds objects other than"):
        load_checkpoint(tmp_path / "custom.pt")
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "rng": torch.Generator().get_state(),
                     "history": [{"epoch": 1, "train_loss": 0.5}], "best": None}, good)
    back = load_checkpoint(good)
    assert back["history"] == [{"epoch": 1, "train_loss": 0.5}] and torch.equal(back["model"]["w"], torch.ones(2))
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(SoftsegError, match=r"cut.pt: cannot read checkpoint .*the file is damaged"):
        load_checkpoint(tmp_path / "cut.pt")


def test_checkpoints_get_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint({"a": 1}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o644
