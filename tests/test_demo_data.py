"""Demo data: the QUBIQ layout and its quirks, determinism, realistic rater disagreement."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from softseg.data.datasets import find_qubiq_datasets, scan_dataset
from softseg.data.synthetic import DEMO_DATASETS, write_demo_dataset
from softseg.errors import SoftsegError
from softseg.data.labels import soft_label


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "out", seed=3, size=48,
                              n_train=4, n_val=2, n_test=1)


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_quirks(demo):
    assert find_qubiq_datasets(demo) == [demo / n for n in sorted(DEMO_DATASETS)]
    shapes = scan_dataset(demo / "demo-shapes")
    assert shapes.problems == ()
    assert len(shapes.warnings) == 2 and all("case03 task0" in w and "missing seg03" in w for w in shapes.warnings)
    data = shapes.dataset
    assert data.tasks == ("task01", "task02")
    assert [(c.case_id, c.split) for c in data.cases] == [
        ("case01", "Training"), ("case02", "Training"), ("case03", "Training"), ("case04", "Training"),
        ("case05", "Validation"), ("case06", "Validation"), ("case07", "Testing"),
    ]
    assert [c.n_raters.get("task01") for c in data.cases] == [5, 5, 4, 5, 5, 5, None]
    assert data.cases[4].masks["task01"].shape == (5, 48, 48)  # stored (48, 48, 1), read 2D
    assert nib.load(str(demo / "demo-shapes/Validation/case05/task01_seg01.nii.gz")).shape == (48, 48, 1)
    assert data.cases[0].image.shape == (1, 48, 48) and data.cases[0].spacing == (0.8, 0.8)

    multi = scan_dataset(demo / "demo-multichannel")
    assert multi.problems == () and multi.warnings == ()
    case = multi.dataset.cases[0]
    assert case.image.shape == (4, 48, 48) and case.geometry.disk_shape == (48, 48, 4)
    assert case.masks["task02"].shape == (3, 48, 48)


def test_raters_disagree_only_along_boundaries(demo):
    data = scan_dataset(demo / "demo-shapes").dataset
    for case in data.cases[:6]:
        organ, inner = case.masks["task01"], case.masks["task02"]
        assert (inner <= organ).all()  # the inner structure lies inside each rater's organ
        soft = soft_label(case, "task01")
        dices = [2 * (a & b).sum() / (a.sum() + b.sum()) for a, b in itertools.combinations(organ, 2)]
        assert 0.75 < np.mean(dices) < 0.995  # real but moderate disagreement
        uncertain = (soft > 0) & (soft < 1)
        assert uncertain.any() and (soft == 1).sum() > uncertain.sum()  # a band, not noise
        # the generous rater covers more than the tight one
        assert organ[0].sum() > organ[-1].sum()


def test_images_show_the_structures(demo):
    data = scan_dataset(demo / "demo-multichannel").dataset
    for case in data.cases[:4]:
        soft = soft_label(case, "task01")
        inside, outside = soft == 1, soft == 0
        assert np.isfinite(case.image).all()
        # channel 0 is brighter inside the lesion; channel 2 (negative organ contrast) is not
        assert case.image[0][inside].mean() > case.image[0][outside].mean() + 100
        assert not np.allclose(case.image[0], case.image[1])


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = write_demo_dataset(tmp_path / "a", seed=1, size=32, n_train=2, n_val=1, n_test=1)
    b = write_demo_dataset(tmp_path / "b", seed=1, size=32, n_train=2, n_val=1, n_test=1)
    c = write_demo_dataset(tmp_path / "c", seed=2, size=32, n_train=2, n_val=1, n_test=1)
    assert files(a) == files(b)
    assert files(a).keys() == files(c).keys()
    assert files(a)["demo-shapes/Training/case01/image.nii.gz"] != files(c)["demo-shapes/Training/case01/image.nii.gz"]


def test_refuses_non_empty_out_and_bad_arguments(tmp_path):
    out = write_demo_dataset(tmp_path / "o", size=32, n_train=1, n_val=0, n_test=0)
    with pytest.raises(SoftsegError, match=r"o: output folder is not empty \(an earlier demo-data run\?\); choose another OUT or pass --overwrite"):
        write_demo_dataset(out, size=32, n_train=1, n_val=0, n_test=0)
    write_demo_dataset(out, size=32, n_train=1, n_val=0, n_test=0, overwrite=True)
    with pytest.raises(SoftsegError, match=r"demo data size must be at least 16 pixels, got 8"):
        write_demo_dataset(tmp_path / "p", size=8)
    with pytest.raises(SoftsegError, match=r"demo data needs at least 1 training case\(s\), got 0"):
        write_demo_dataset(tmp_path / "p", n_train=0)


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SoftsegError, match=r"file: expected an output folder, found a file; choose another OUT"):
        write_demo_dataset(tmp_path / "file", size=16, n_train=1, n_val=0, n_test=0)
