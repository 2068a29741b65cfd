"""ONNX export: onnxruntime must reproduce PyTorch (1e-4) and softseg's own prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F

from _runs import make_run  # tests/_runs.py
from softseg.cli import main
from softseg.errors import SoftsegError
from softseg.inference.export import export_onnx, sidecar_path
from softseg.inference.arrays import predict_images
from softseg.inference.runs import load_run
from softseg.inference import RunOptions


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "seeds"
    make_run(root / "seed0", seed=0)
    make_run(root / "seed1", seed=1)
    (root / "threshold.json").write_text(json.dumps({
        "runs": [str((root / s).resolve()) for s in ("seed0", "seed1")],
        "tasks": {"task01": {"threshold": 0.4}, "task02": {"threshold": 0.55}},
    }))
    return root


@pytest.fixture(scope="module")
def exported(seeds, tmp_path_factory):
    """seed0 exported once through the command line; (path, its printed output)."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("softseg.cli._COMMAND_MODULES", ("_predict",))
        import contextlib
        import io as _io

        printed = _io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["export", str(seeds / "seed0"), "--onnx", str(out), "--opset", "17"]) == 0
    return out, printed.getvalue()


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probability"], {"image": x.astype(np.float32)})[0]


def test_onnx_matches_pytorch_on_random_input(seeds, exported):
    path, _ = exported
    model = load_run(seeds / "seed0").model
    x = torch.randn(2, 1, 96, 64, generator=torch.Generator().manual_seed(5))  # not the traced size
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).numpy()
    got = run_onnx(path, x.numpy())
    assert got.shape == (2, 2, 96, 64)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert expected.std() > 0.05  # the comparison is not between two constant maps
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["tasks"] == ["task01", "task02"] and sidecar["in_channels"] == 1
    assert sidecar["operating_threshold"] is None  # the threshold belongs to the two-seed set
    assert 0 <= sidecar["verified_max_abs_difference"] <= 1e-4


def test_seed_folder_exports_the_average_and_its_threshold(seeds, tmp_path):
    path = export_onnx(seeds, tmp_path / "ensemble.onnx", height=64, width=96)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        probs = [torch.sigmoid(load_run(seeds / s).model(x)) for s in ("seed0", "seed1")]
    np.testing.assert_allclose(run_onnx(path, x.numpy()), ((probs[0] + probs[1]) / 2).numpy(),
                               atol=1e-4, rtol=0)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["operating_threshold"] == {"task01": 0.4, "task02": 0.55}
    assert len(sidecar["runs"]) == 2 and sidecar["example_size"] == [64, 96]


def test_sidecar_preprocessing_reproduces_softseg_predict(seeds, exported):
    """Follow the sidecar by hand (z-score, zero-pad to 32, crop) and get predict's maps."""
    path, _ = exported
    steps = {s["step"]: s for s in json.loads(sidecar_path(path).read_text())["preprocessing"]}
    assert steps["normalize"]["kind"] == "zscore" and steps["pad"]["multiple"] == 32
    assert steps["resize"]["size"] is None
    image = (np.random.default_rng(7).random((1, 45, 70)) * 300).astype(np.float32)
    x = (image - image.mean()) / image.std()
    padded = F.pad(torch.from_numpy(x), (0, 96 - 70, 0, 64 - 45))[None]
    got = run_onnx(path, padded.numpy())[0, :, :45, :70]
    expected = predict_images([load_run(seeds / "seed0")], [image])[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_export_errors(seeds, tmp_path):
    with pytest.raises(SoftsegError, match=r"model.txt: the model file must end in .onnx"):
        export_onnx(seeds / "seed0", tmp_path / "model.txt")
    with pytest.raises(SoftsegError, match=r"--height must be a positive multiple of 32 .*got 50; use e.g. 64"):
        export_onnx(seeds / "seed0", tmp_path / "a.onnx", height=50)
    with pytest.raises(SoftsegError, match=r"--opset must be between"):
        export_onnx(seeds / "seed0", tmp_path / "a.onnx", opset=3)
    (tmp_path / "b.onnx").write_bytes(b"mine")
    with pytest.raises(SoftsegError, match=r"b.onnx: already exists; .*--overwrite"):
        export_onnx(seeds / "seed0", tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx").read_bytes() == b"mine"
    with pytest.raises(SoftsegError, match="no softseg run found"):
        export_onnx(tmp_path, tmp_path / "c.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.onnx"]  # nothing half-written


def test_command_line(seeds, exported, capsys, monkeypatch):
    monkeypatch.setattr("softseg.cli._COMMAND_MODULES", ("_predict",))
    out, printed = exported
    assert f"wrote {out}" in printed and "max |ONNX - PyTorch|" in printed
    assert out.is_file() and (out.parent / "model.json").is_file()
    before = out.read_bytes()
    assert main(["export", str(seeds / "seed0"), "--onnx", str(out)]) == 2
    assert "model.onnx: already exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_export_is_atomic_with_umask_permissions(seeds, tmp_path, monkeypatch):
    import os
    import stat

    path = export_onnx(seeds / "seed0", tmp_path / "m.onnx", verify=False)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600

    def broken(*args):
        raise SoftsegError("exported model differs from PyTorch")

    monkeypatch.setattr("softseg.inference.export.verify_onnx", broken)
    before = path.read_bytes()
    with pytest.raises(SoftsegError, match="differs from PyTorch"):
        export_onnx(seeds, path, overwrite=True)  # another model: other bytes
    assert path.read_bytes() == before  # the earlier model stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx"]  # no temporary file


def test_the_graph_divides_by_the_runs_temperatures_as_predict_does(tmp_path):
    from softseg.inference.runs import load_models
    from softseg.inference.run_files import write_temperature_file

    seeds = tmp_path / "seeds"
    make_run(seeds / "seed0", seed=0)
    make_run(seeds / "seed1", seed=1)
    t = {"seed0": (2.0, 0.5), "seed1": (1.5, 3.0)}  # per seed and task
    for seed, (t1, t2) in t.items():
        write_temperature_file(seeds / seed, {"checkpoint_file": "checkpoints/last.pt", "checkpoint_epoch": None,
                                              "tasks": {"task01": {"temperature": t1}, "task02": {"temperature": t2}}})
    path = export_onnx(seeds, tmp_path / "calibrated.onnx", height=64, width=64)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(9))
    expected = 0
    for seed, temps in t.items():
        with torch.no_grad():
            logits = load_run(seeds / seed, temperature="off").model(x)
        expected = expected + torch.sigmoid(logits / torch.tensor(temps)[None, :, None, None]) / 2
    got = run_onnx(path, x.numpy())
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=0)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["temperatures"] == {str((seeds / s).resolve()): {"task01": a, "task02": b}
                                       for s, (a, b) in t.items()}
    assert "temperature" in sidecar["output"]["values"]
    # what softseg predict makes of the same runs, through the sidecar's preprocessing
    image = np.random.default_rng(3).random((1, 64, 64)).astype(np.float32)
    z = (image - image.mean()) / image.std()
    loaded = load_models([seeds / "seed0", seeds / "seed1"])
    np.testing.assert_allclose(run_onnx(path, z[None])[0], predict_images(loaded, [image])[0], atol=1e-4)
    plain = export_onnx(seeds, tmp_path / "plain.onnx", height=64, width=64, verify=False, options=RunOptions(temperature="off"))
    assert json.loads(sidecar_path(plain).read_text())["temperatures"] is None
    assert np.abs(run_onnx(plain, x.numpy()) - got).max() > 1e-2
    with pytest.raises(SoftsegError, match=r"fitted for checkpoints/last.pt, not for .*best.pt"):
        export_onnx(seeds, tmp_path / "best.onnx", options=RunOptions(checkpoint="best"))
    assert not (tmp_path / "best.onnx").exists()
