"""The 3D demo release: QUBIQ pancreas layout, anisotropic voxels, an oblique affine with a
non-zero origin, 2 raters; read back by the loaders, soft labels exact, geometry kept."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from softseg.cli import main
from softseg.data.datasets import load_dataset
from softseg.data.labels import soft_label
from softseg.data.synthetic3d import DATASET, SPACING, demo_affine, write_demo_volumes
from softseg.errors import SoftsegError

SHAPE = (24, 20, 10)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return write_demo_volumes(tmp_path_factory.mktemp("vol"), seed=2, shape=SHAPE, n_train=3, n_val=1, n_test=1)


def test_layout_and_geometry_on_disk(volumes):
    root = volumes / DATASET
    cases = sorted(p.relative_to(root).as_posix() for p in root.glob("*/case*"))
    assert cases == ["Testing/case05", "Training/case01", "Training/case02", "Training/case03", "Validation/case04"]
    assert sorted(p.name for p in (root / "Training" / "case01").iterdir()) == [
        "image.nii.gz", "task01_seg01.nii.gz", "task01_seg02.nii.gz"]
    assert [p.name for p in (root / "Testing" / "case05").iterdir()] == ["image.nii.gz"]
    image = nib.load(root / "Training" / "case01" / "image.nii.gz")
    assert image.shape == SHAPE and image.get_data_dtype() == np.int16
    np.testing.assert_allclose(image.affine, demo_affine(), atol=1e-5)
    np.testing.assert_allclose(image.header.get_zooms(), SPACING, rtol=1e-6)
    rotation = image.affine[:3, :3] / np.asarray(SPACING)
    assert not np.allclose(rotation, np.eye(3), atol=1e-3)  # oblique
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)  # a rotation
    assert np.linalg.norm(image.affine[:3, 3]) > 100  # origin far from 0
    assert np.argmax(image.header.get_zooms()) == 2  # the through-plane axis has the largest spacing


def test_loaded_as_volumes_with_exact_soft_labels(volumes):
    dataset = load_dataset(volumes / DATASET)
    assert dataset.layout == "qubiq" and dataset.tasks == ("task01",)
    labelled = [c for c in dataset.cases if c.is_labelled("task01")]
    assert len(labelled) == 4 and all(c.n_raters["task01"] == 2 for c in labelled)
    for case in labelled:
        assert case.image.shape == (1, *SHAPE) and case.spacing == pytest.approx(SPACING)
        masks = case.masks["task01"]
        p = soft_label(case, "task01")
        np.testing.assert_array_equal(p, (masks[0].astype(np.float32) + masks[1]) / 2)
        assert set(np.unique(p)) == {0.0, 0.5, 1.0}  # both raters mark, and disagree somewhere
        # the first rater is generous, the second tight, and they agree on most of the organ
        assert masks[0].sum() > masks[1].sum() > 0
        both = (masks[0] & masks[1]).sum()
        assert 2 * both / (masks[0].sum() + masks[1].sum()) > 0.7
        # the organ is brighter than the background
        assert case.image[0][masks[1]].mean() > case.image[0][~masks[0]].mean() + 60


def test_deterministic_and_seeded(tmp_path):
    a = write_demo_volumes(tmp_path / "a", seed=1, shape=SHAPE, n_train=1, n_val=0, n_test=0)
    b = write_demo_volumes(tmp_path / "b", seed=1, shape=SHAPE, n_train=1, n_val=0, n_test=0)
    c = write_demo_volumes(tmp_path / "c", seed=2, shape=SHAPE, n_train=1, n_val=0, n_test=0)
    path = f"{DATASET}/Training/case01/task01_seg01.nii.gz"
    assert np.array_equal(nib.load(a / path).get_fdata(), nib.load(b / path).get_fdata())
    assert not np.array_equal(nib.load(a / path).get_fdata(), nib.load(c / path).get_fdata())


def test_bad_arguments(tmp_path):
    with pytest.raises(SoftsegError, match=r"expected a volume shape \(X, Y, Z\) of at least \(16, 16, 8\).*\(64, 64, 4\)"):
        write_demo_volumes(tmp_path / "x", shape=(64, 64, 4))
    with pytest.raises(SoftsegError, match="at least 1 training case"):
        write_demo_volumes(tmp_path / "x", n_train=0)
    assert not (tmp_path / "x").exists()


def test_cli_writes_checks_and_labels_volumes(tmp_path, capsys):
    out = tmp_path / "demo3d"
    assert main(["demo-data", str(out), "--dims", "3d", "--size", "20", "--slices", "8",
                 "--cases", "2", "1", "0"]) == 0
    assert f"wrote {out / DATASET}" in capsys.readouterr().out
    assert nib.load(out / DATASET / "Training" / "case01" / "image.nii.gz").shape == (20, 20, 8)
    assert main(["check", str(out / DATASET)]) == 0
    assert "cases: 3" in capsys.readouterr().out
    assert main(["labels", str(out / DATASET), str(tmp_path / "labels")]) == 0
    written = nib.load(tmp_path / "labels" / "case01" / "task01.nii.gz")
    source = nib.load(out / DATASET / "Training" / "case01" / "image.nii.gz")
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert written.shape == (20, 20, 8) and set(np.unique(written.get_fdata())) <= {0.0, 0.5, 1.0}
    assert main(["demo-data", str(tmp_path / "y"), "--slices", "8"]) == 2
    assert "--slices is for volumes: pass --dims 3d" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad volumes


def _volume_case(root, mask_affine=None, zooms=None, codes=(2, 0)):
    """A QUBIQ-layout case01 with one image and two raters; the second rater's mask may have
    another affine, the image other zooms, and the mask other qform/sform codes."""
    folder = root / "Training" / "case01"
    folder.mkdir(parents=True)
    affine = demo_affine()
    image = nib.Nifti1Image(np.zeros((12, 10, 6), np.int16), affine)
    if zooms is not None:
        image.header.set_zooms(zooms)
    nib.save(image, folder / "image.nii.gz")
    mask = np.zeros((12, 10, 6), np.uint8)
    mask[3:8, 3:7, 2:4] = 1
    nib.save(nib.Nifti1Image(mask, affine), folder / "task01_seg01.nii.gz")
    other = nib.Nifti1Image(mask, affine if mask_affine is None else mask_affine)
    other.set_sform(other.affine, code=codes[0])
    other.set_qform(other.affine, code=codes[1])
    nib.save(other, folder / "task01_seg02.nii.gz")
    return root


def test_a_rater_on_another_grid_is_refused(tmp_path, capsys):
    shifted = demo_affine()
    shifted[:3, 3] += (0.0, 0.0, 2.5)  # one slice further: another series
    root = _volume_case(tmp_path / "shifted", mask_affine=shifted)
    with pytest.raises(SoftsegError, match=r"task01_seg02.nii.gz: case01 task01 rater 'seg02': expected the "
                                           r"image's grid \(image.nii.gz\), found an affine that places "
                                           r"voxels up to 2.5 mm away"):
        load_dataset(root)
    assert main(["check", str(root)]) == 2
    assert "expected the image's grid" in capsys.readouterr().out
    # float32 rounding of a header is not another grid
    nudged = demo_affine()
    nudged[:3, :3] *= 1 + 1e-7
    assert len(load_dataset(_volume_case(tmp_path / "nudged", mask_affine=nudged)).cases) == 1
    # a mask that declares no world space (both codes 0) cannot be on another grid
    undeclared = _volume_case(tmp_path / "undeclared", mask_affine=np.eye(4), codes=(0, 0))
    assert load_dataset(undeclared).cases[0].masks["task01"].shape == (2, 12, 10, 6)


def test_a_volume_without_spacing_is_refused(tmp_path):
    root = _volume_case(tmp_path / "flat", zooms=(0.8, 0.8, 0.0))
    with pytest.raises(SoftsegError, match=r"image.nii.gz: expected positive voxel sizes "
                                           r"\(NIfTI pixdim\), found \(0.8, 0.8, 0.0\)"):
        load_dataset(root)


def test_a_2d_image_without_spacing_is_read_in_pixels(tmp_path):
    from softseg.data import io

    image = nib.Nifti1Image(np.ones((6, 5), np.float32), np.eye(4))
    image.header.set_zooms((0.0, 0.7))
    nib.save(image, tmp_path / "flat.nii.gz")
    _, spacing, _ = io.read_image(tmp_path / "flat.nii.gz")
    assert spacing == (1.0, 0.7)
