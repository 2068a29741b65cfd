"""Soft labels: hand-computed means over the raters present, variance, baselines, files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from softseg.data import io
from softseg.data.cases import Case, Dataset
from softseg.data.io import Geometry
from softseg.errors import SoftsegError
from softseg.data.labels import (
    majority_label,
    staple_label,
    staple_probability,
    random_rater_label,
    soft_label,
    soft_variance,
    write_soft_labels,
)

PNG = Geometry(format="png", disk_shape=(2, 3), png_mode="L", bit_depth=8)


def case_with(masks=None, agreement=None, case_id="c1", geometry=PNG, shape=(2, 3)):
    masks = {t: np.asarray(m, bool) for t, m in (masks or {}).items()}
    n = {t: m.shape[0] for t, m in masks.items()}
    n.update({t: a[1] for t, a in (agreement or {}).items()})
    return Case(
        case_id=case_id,
        image=np.zeros((1, *shape), np.float32),
        spacing=(1.0, 1.0),
        geometry=geometry,
        image_path=Path("x.png"),
        masks=masks,
        raters={t: tuple(f"r{i}" for i in range(m.shape[0])) for t, m in masks.items()},
        agreement={t: np.asarray(a[0], np.float32) for t, a in (agreement or {}).items()},
        n_raters=n,
    )


# Three raters on a 2x3 image: pixel (0,0) has 3 votes, (0,1) 2, (0,2) 1, (1,*) 0.
THREE = [
    [[1, 1, 1], [0, 0, 0]],
    [[1, 1, 0], [0, 0, 0]],
    [[1, 0, 0], [0, 0, 0]],
]


def test_soft_label_is_mean_of_raters_hand_computed():
    p = soft_label(case_with({"t": THREE}), "t")
    assert p.dtype == np.float32 and p.shape == (2, 3)
    np.testing.assert_array_equal(p, np.array([[1, 2 / 3, 1 / 3], [0, 0, 0]], np.float32))


def test_fewer_raters_average_those_present():
    five = np.zeros((5, 1, 6), bool)
    for k in range(6):
        five[:k, 0, k] = True  # pixel k has k of the 5 votes
    p = soft_label(case_with({"t": five}, shape=(1, 6)), "t")
    np.testing.assert_array_equal(p, (np.arange(6) / 5).astype(np.float32)[None])
    assert set(np.unique(p * 5).round(5)) == {0, 1, 2, 3, 4, 5}


def test_agreement_map_is_the_soft_label():
    a = np.array([[0.5, 1.0, 0.0], [0.25, 0.75, 0.0]], np.float32)
    case = case_with(agreement={"t": (a, 4)})
    np.testing.assert_array_equal(soft_label(case, "t"), a)
    np.testing.assert_array_equal(majority_label(case, "t"), a >= 0.5)
    with pytest.raises(SoftsegError, match=r"c1: task 't' has only an agreement map, no individual rater masks"):
        random_rater_label(case, "t", np.random.default_rng(0))


def test_variance_is_p_times_one_minus_p():
    p = np.array([0, 0.25, 0.5, 2 / 3, 1], np.float32)
    np.testing.assert_allclose(soft_variance(p), [0, 0.1875, 0.25, 2 / 9, 0], rtol=1e-6)
    assert soft_variance(p).dtype == np.float32 and soft_variance(p).max() <= 0.25


def test_majority_ties_go_to_foreground():
    two = [[[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 1]]]
    np.testing.assert_array_equal(
        majority_label(case_with({"t": two}), "t"), [[True, True, False], [False, False, True]]
    )
    np.testing.assert_array_equal(
        majority_label(case_with({"t": THREE}), "t"), [[True, True, False], [False, False, False]]
    )


def test_random_rater_is_one_of_the_raters_and_seeded():
    case = case_with({"t": THREE})
    rng = np.random.default_rng(3)
    picks = [random_rater_label(case, "t", rng) for _ in range(60)]
    indices = {next(i for i, m in enumerate(np.asarray(THREE, bool)) if (m == p).all()) for p in picks}
    assert indices == {0, 1, 2}
    again = [random_rater_label(case, "t", np.random.default_rng(3)) for _ in range(1)]
    np.testing.assert_array_equal(again[0], picks[0])
    picks[0][:] = False  # a copy: the case is untouched
    assert case.masks["t"].sum() == 6


def test_unlabelled_case_errors():
    case = case_with({"t": THREE})
    with pytest.raises(SoftsegError, match=r"c1: no label for task 'other' \(labelled tasks: t\)"):
        soft_label(case, "other")
    with pytest.raises(SoftsegError, match=r"c1: no label for task 't' \(labelled tasks: none\)"):
        random_rater_label(case_with(), "t", np.random.default_rng(0))


def test_write_labels_png_and_nifti_in_source_geometry(tmp_path):
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "img.png")
    png_geometry = io.read_image(tmp_path / "img.png")[2]
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.float32), affine), str(tmp_path / "img.nii.gz"))
    nifti_geometry = io.read_image(tmp_path / "img.nii.gz")[2]
    assert nifti_geometry.disk_shape == (2, 3, 4)  # channels-last source
    a = case_with({"t": THREE}, case_id="a", geometry=png_geometry)
    b = case_with({"t": THREE}, case_id="b", geometry=nifti_geometry)
    c = case_with({}, case_id="c")  # unlabelled: skipped
    data = Dataset(tmp_path, "d", "raters", ("t",), (a, b, c))
    out = tmp_path / "out"
    written = write_soft_labels(data, out, variance=True)
    assert [p.relative_to(out).as_posix() for p in written] == [
        "a/t.png", "a/t_variance.png", "b/t.nii.gz", "b/t_variance.nii.gz"
    ]
    expected = soft_label(a, "t")
    raw = np.array(Image.open(out / "a/t.png"))
    np.testing.assert_array_equal(raw, np.round(expected.astype(np.float64) * 65535))
    back = nib.load(str(out / "b/t.nii.gz"))
    assert back.shape == (2, 3) and back.get_data_dtype() == np.float32
    np.testing.assert_array_equal(back.affine, affine)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), expected)
    np.testing.assert_allclose(io.read_probability(out / "a/t_variance.png")[0], soft_variance(expected), atol=1e-5)

    with pytest.raises(SoftsegError, match=r"out: output folder is not empty \(an earlier labels run\?\); choose another OUT or pass --overwrite"):
        write_soft_labels(data, out)
    assert len(write_soft_labels(data, out, overwrite=True)) == 2
    (tmp_path / "file").write_text("x")
    with pytest.raises(SoftsegError, match=r"file: expected an output folder, found a file"):
        write_soft_labels(data, tmp_path / "file")


# ----------------------------------------------------------------------------- STAPLE


def _sitk_staple(masks: np.ndarray) -> np.ndarray:
    """The oracle: SimpleITK's filter called directly, with nothing of ours in between."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(
        sitk.STAPLEImageFilter().Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    )


@pytest.mark.parametrize("shape", [(24, 20), (5, 12, 10)])
def test_staple_equals_simpleitk_in_2d_and_3d(shape):
    rng = np.random.default_rng(1)
    truth = np.zeros(shape, bool)
    truth[(slice(1, -1),) * len(shape)] = True
    # five raters: the truth with some pixels flipped, one rater much noisier than the rest
    masks = np.stack([truth ^ (rng.random(shape) < noise) for noise in (0.02, 0.03, 0.05, 0.05, 0.3)])
    case = case_with({"t": masks}, shape=shape)
    prob = staple_probability(case, "t")
    oracle = _sitk_staple(masks)
    assert prob.shape == shape and not np.isnan(oracle).any()
    np.testing.assert_array_equal(prob, oracle)
    np.testing.assert_array_equal(staple_label(case, "t"), oracle >= 0.5)
    assert 0 <= prob.min() and prob.max() <= 1


def test_staple_of_identical_raters_is_their_mask_and_empty_stays_empty():
    one = np.asarray(THREE[1], bool)
    np.testing.assert_array_equal(staple_label(case_with({"t": [one, one, one]}), "t"), one)
    empty = np.zeros((3, 2, 3), bool)
    # SimpleITK returns NaN everywhere here; the consensus of nobody's marks is empty
    assert np.isnan(_sitk_staple(empty)).all()
    consensus = staple_label(case_with({"t": empty}), "t")
    assert consensus.dtype == bool and not consensus.any()


def test_staple_needs_rater_masks():
    case = case_with(agreement={"t": (np.zeros((2, 3), np.float32), 4)})
    with pytest.raises(SoftsegError, match=r"c1: task 't' has only an agreement map.*STAPLE baseline"):
        staple_label(case, "t")
