"""The public API: every exported name resolves, importing softseg stays light, and the
README's Python example runs as written (on generated data and an untrained run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import softseg
from tests._runs import make_run

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", [n for n in softseg.__all__ if n != "__version__"])
def test_every_public_name_resolves_to_its_definition(name):
    value = getattr(softseg, name)
    if name in softseg._MODULES:
        assert value.__name__ == softseg._MODULES[name]
    else:
        # defined where the export table says, not a copy or a wrapper
        assert value.__module__ == softseg._EXPORTS[name], name
        assert value.__name__ == name


def test_unknown_name_is_an_attribute_error():
    old = "train" + "_run"  # softseg 0.1's name, gone
    with pytest.raises(AttributeError, match=f"no attribute '{old}'"):
        getattr(softseg, old)


def test_import_softseg_does_not_import_torch():
    code = "import sys, softseg; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _readme_example() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def test_readme_python_example_runs(tmp_path):
    code = _readme_example()
    assert "from softseg import" in code and "softseg._" not in code  # public imports only
    data_dir = softseg.write_demo_dataset(tmp_path / "data", size=64, n_train=2, n_val=1, n_test=0) / "demo-shapes"
    run = make_run(tmp_path / "runs" / "mymodel" / "seed0", tasks=("task01", "task02"))
    code = code.replace('"data/bubil"', repr(str(data_dir))).replace(
        '"runs/mymodel"', repr(str(run.parent)))
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    probs, data = namespace["probs"], namespace["data"]
    assert len(probs) == len(data.cases)
    for prob, case in zip(probs, data.cases):
        assert prob.shape == (2, *case.spatial_shape)
        assert np.all((prob >= 0) & (prob <= 1))
    assert 0.0 <= namespace["score"] <= 1.0
