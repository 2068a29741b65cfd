"""softseg.data.io: every format and quirk read and written on files made here."""

from __future__ import annotations

import io as io_bytes
import logging
import os
import stat
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from softseg.data import _encode, io
from softseg.errors import SoftsegError


def save_nifti(path, array, affine=None):
    affine = np.diag([0.5, 0.75, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_nifti_2d_image_channels_first_with_spacing_and_geometry(tmp_path):
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    path = save_nifti(tmp_path / "image.nii.gz", data)
    image, spacing, geometry = io.read_image(path)
    assert image.shape == (1, 3, 4) and image.dtype == np.float32
    np.testing.assert_array_equal(image[0], data)
    assert spacing == (0.5, 0.75)
    assert geometry.format == "nifti" and geometry.disk_shape == (3, 4)
    np.testing.assert_array_equal(geometry.affine, np.diag([0.5, 0.75, 2.0, 1.0]))


def test_channels_last_four_channel_image_becomes_channels_first(tmp_path):
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    path = save_nifti(tmp_path / "image.nii.gz", data)
    image, spacing, geometry = io.read_image(path)
    assert image.shape == (4, 6, 5)
    np.testing.assert_array_equal(image[2], data[..., 2])
    assert spacing == (0.5, 0.75) and geometry.disk_shape == (6, 5, 4)


def test_4d_volume_with_few_channels_reads_and_a_time_series_is_refused(tmp_path):
    data = np.random.default_rng(1).random((6, 5, 7, 2)).astype(np.float32)
    image, spacing, _ = io.read_image(save_nifti(tmp_path / "two.nii.gz", data))
    assert image.shape == (2, 6, 5, 7) and spacing == (0.5, 0.75, 2.0)
    np.testing.assert_array_equal(image[1], data[..., 1])
    frames = save_nifti(tmp_path / "fmri.nii.gz", np.zeros((6, 5, 7, 12), np.float32))
    with pytest.raises(SoftsegError, match=r"fmri.nii.gz: expected a 2D or 3D image.*found a 4D array "
                                           r"of shape \(6, 5, 7, 12\) \(12 frames"):
        io.read_image(frames)


def test_spatial_shape_decides_volume_versus_channels(tmp_path):
    data = np.zeros((6, 5, 3), np.float32)
    path = save_nifti(tmp_path / "image.nii.gz", data)
    assert io.read_image(path, spatial_shape=(6, 5, 3))[0].shape == (1, 6, 5, 3)
    assert io.read_image(path, spatial_shape=(6, 5))[0].shape == (3, 6, 5)
    volume = save_nifti(tmp_path / "volume.nii.gz", np.zeros((6, 5, 9), np.float32))
    image, spacing, _ = io.read_image(volume)
    assert image.shape == (1, 6, 5, 9) and spacing == (0.5, 0.75, 2.0)


def test_trailing_singleton_axis_mask_is_squeezed_and_restored(tmp_path):
    mask = np.zeros((7, 5, 1), np.uint8)
    mask[2:4, 1:3] = 1
    path = save_nifti(tmp_path / "task01_seg01.nii.gz", mask)
    read, geometry = io.read_mask(path)
    assert read.shape == (7, 5) and read.dtype == bool and read.sum() == 4
    assert geometry.disk_shape == (7, 5, 1)
    out = io.write_map(tmp_path / "out.nii.gz", read.astype(np.float32) * 0.5, geometry)
    back = nib.load(str(out))
    assert back.shape == (7, 5, 1) and back.get_data_dtype() == np.float32
    np.testing.assert_array_equal(back.affine, geometry.affine)


@pytest.mark.parametrize("values", [(0, 1), (0, 255)])
def test_mask_binary_value_conventions(tmp_path, values):
    data = np.array([[values[0], values[1]], [values[1], values[0]]], np.uint8)
    mask, _ = io.read_mask(save_nifti(tmp_path / "m.nii.gz", data))
    np.testing.assert_array_equal(mask, [[False, True], [True, False]])


def test_non_binary_mask_names_file_and_values(tmp_path):
    path = save_nifti(tmp_path / "task01_seg02.nii.gz", np.array([[0, 1], [2, 1]], np.uint8))
    with pytest.raises(SoftsegError, match=r"task01_seg02.nii.gz: expected a binary mask.*3 distinct values \(0, 1, 2\)"):
        io.read_mask(path)


def test_png_modes(tmp_path):
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, spacing, geometry = io.read_image(tmp_path / "g.png")
    assert image.shape == (1, 4, 5) and spacing == (1.0, 1.0)
    assert geometry.png_mode == "L" and geometry.bit_depth == 8
    deep = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    Image.fromarray(deep).save(tmp_path / "d.png")
    image, _, geometry = io.read_image(tmp_path / "d.png")
    assert geometry.bit_depth == 16 and image.max() == 57000
    rgb = np.stack([grey, grey + 1, grey + 2], -1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    image, _, geometry = io.read_image(tmp_path / "c.png")
    assert image.shape == (3, 4, 5) and geometry.disk_shape == (4, 5, 3)
    np.testing.assert_array_equal(image[1], grey + 1)


def test_rgba_png_drops_alpha_with_warning(tmp_path, caplog):
    rgba = np.full((3, 3, 4), 7, np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with caplog.at_level(logging.WARNING):
        image, _, _ = io.read_image(tmp_path / "a.png")
    assert image.shape == (3, 3, 3) and (image == 7).all()
    assert "alpha channel" in caplog.text


def test_png_masks_one_bit_and_colour(tmp_path):
    bits = np.zeros((4, 4), bool)
    bits[1:3, 1:3] = True
    Image.fromarray(bits).save(tmp_path / "b.png")
    mask, geometry = io.read_mask(tmp_path / "b.png")
    np.testing.assert_array_equal(mask, bits)
    grey_rgb = np.repeat((bits * 255).astype(np.uint8)[..., None], 3, -1)
    Image.fromarray(grey_rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(io.read_mask(tmp_path / "rgb.png")[0], bits)
    grey_rgb[0, 0, 1] = 255
    Image.fromarray(grey_rgb).save(tmp_path / "colour.png")
    with pytest.raises(SoftsegError, match=r"colour.png: expected a grey binary mask, found a colour PNG"):
        io.read_mask(tmp_path / "colour.png")


def test_unreadable_and_unsupported_files(tmp_path):
    broken = tmp_path / "image.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(SoftsegError, match=r"image.nii.gz: cannot read as NIfTI"):
        io.read_image(broken)
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(SoftsegError, match=r"x.png: cannot read as PNG"):
        io.read_mask(tmp_path / "x.png")
    with pytest.raises(SoftsegError, match=r"x.jpg: unsupported file type; expected NIfTI"):
        io.read_image(tmp_path / "x.jpg")


def test_probability_png_round_trip_is_16_bit(tmp_path):
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "src.png")
    _, _, geometry = io.read_image(tmp_path / "src.png")
    p = np.array([[0, 0.25, 0.5, 1.0], [1 / 3, 2 / 3, 0.1, 0.9], [0, 0, 0, 0]], np.float32)
    out = io.write_map(tmp_path / "p.png", p, geometry)
    raw = np.array(Image.open(out))
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, np.round(p.astype(np.float64) * 65535).astype(np.uint16))
    back, back_geometry = io.read_probability(out)
    np.testing.assert_allclose(back, p, atol=0.5 / 65535)
    assert back_geometry.bit_depth == 16


def test_binary_mask_png_is_8_bit_0_255(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "src.png")
    geometry = io.read_image(tmp_path / "src.png")[2]
    mask = np.array([[True, False], [False, True]])
    out = io.write_map(tmp_path / "m.png", mask, geometry)
    with Image.open(out) as img:
        assert img.mode == "L"
        np.testing.assert_array_equal(np.array(img), [[255, 0], [0, 255]])


@pytest.mark.parametrize("gzip_by", ["isal", "zlib"])
def test_nifti_probability_keeps_affine_header_and_drops_channels(tmp_path, monkeypatch, gzip_by):
    if gzip_by == "zlib":
        monkeypatch.setattr(_encode, "_isal_gzip", None)
    src = save_nifti(tmp_path / "image.nii.gz", np.zeros((6, 5, 4), np.int16))
    _, _, geometry = io.read_image(src)
    p = np.random.default_rng(1).random((6, 5)).astype(np.float32)
    out = io.write_map(tmp_path / "task01.nii.gz", p, geometry)
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # gzip, as .nii.gz promises
    back = nib.load(str(out))
    assert back.header["vox_offset"] == nib.load(str(src)).header["vox_offset"]
    assert back.shape == (6, 5)
    np.testing.assert_array_equal(back.affine, geometry.affine)
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), p)
    read, _ = io.read_probability(out)
    np.testing.assert_array_equal(read, p)


def test_write_refuses_overwrite_bad_values_and_wrong_shape(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "src.png")
    geometry = io.read_image(tmp_path / "src.png")[2]
    out = io.write_map(tmp_path / "p.png", np.zeros((2, 2)), geometry)
    with pytest.raises(SoftsegError, match=r"p.png: already exists"):
        io.write_map(out, np.ones((2, 2)), geometry)
    io.write_map(out, np.ones((2, 2)), geometry, overwrite=True)
    assert io.read_probability(out)[0].min() == 1.0
    with pytest.raises(SoftsegError, match=r"expected map values in \[0, 1\], found \[0, 1.5\]"):
        io.write_map(tmp_path / "q.png", np.array([[0, 1.5], [0, 0]]), geometry)
    with pytest.raises(SoftsegError, match=r"NaN or inf"):
        io.write_map(tmp_path / "q.png", np.full((2, 2), np.nan), geometry)
    with pytest.raises(SoftsegError, match=r"map of shape \(3, 2\) does not fit its source geometry \(stored shape \(2, 2\)\)"):
        io.write_map(tmp_path / "q.png", np.zeros((3, 2)), geometry)
    with pytest.raises(SoftsegError, match=r"q.nii.gz: suffix means nifti but the source geometry is png; use the suffix .png"):
        io.write_map(tmp_path / "q.nii.gz", np.zeros((2, 2)), geometry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "src.png"]  # no temp files left


def test_read_probability_rejects_out_of_range(tmp_path):
    path = save_nifti(tmp_path / "p.nii.gz", np.array([[0.0, 1.2]], np.float32))
    with pytest.raises(SoftsegError, match=r"p.nii.gz: expected probabilities in \[0, 1\], found values in \[0, 1.2\]"):
        io.read_probability(path)
    path = save_nifti(tmp_path / "h.nii.gz", np.full((2, 2), 1.5, np.float32))
    with pytest.raises(SoftsegError, match=r"h.nii.gz: .* found values in \[1.5, 1.5\]"):
        io.read_probability(path)
    path = save_nifti(tmp_path / "n.nii.gz", np.array([[0.0, np.nan]], np.float32))
    with pytest.raises(SoftsegError, match=r"n.nii.gz: expected finite probabilities"):
        io.read_probability(path)
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(io.read_probability(tmp_path / "a.png")[0], [[0.0, 1.0]])


def test_source_scaling_and_window_are_not_applied_to_written_maps(tmp_path):
    image = nib.Nifti1Image(np.zeros((2, 2), np.int16), np.eye(4))
    image.header.set_slope_inter(2.0, 10.0)
    image.header["cal_min"], image.header["cal_max"] = -100.0, 900.0
    nib.save(image, str(tmp_path / "image.nii.gz"))
    geometry = io.read_image(tmp_path / "image.nii.gz")[2]
    p = np.array([[0.25, 0.5], [0.75, 1.0]], np.float32)
    out = io.write_map(tmp_path / "p.nii.gz", p, geometry)
    np.testing.assert_array_equal(io.read_probability(out)[0], p)
    header = nib.load(str(out)).header
    assert (float(header["cal_min"]), float(header["cal_max"])) == (0.0, 1.0)


def test_stem_and_format_helpers():
    assert io.stem("a/case01.nii.gz") == "case01" and io.stem("x.PNG") == "x"
    assert io.file_format("x.NII") == "nifti" and io.is_supported("y.png")
    assert not io.is_supported("notes.txt")


def test_write_array_keeps_dtype_shape_and_refuses_overwrite(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    path = io.write_array(tmp_path / "x.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    back = nib.load(str(path))
    assert back.get_data_dtype() == np.int16 and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), data)
    with pytest.raises(SoftsegError, match=r"x.nii.gz: already exists"):
        io.write_array(path, data)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 1] = 9
    image, _, geometry = io.read_image(io.write_array(tmp_path / "c.png", rgb))
    assert geometry.png_mode == "RGB" and (image[1] == 9).all()
    with pytest.raises(SoftsegError, match=r"y.png: PNG holds 2D uint8/uint16/bool or \(H, W, 3\) uint8 arrays, got float32 \(2, 2\)"):
        io.write_array(tmp_path / "y.png", np.zeros((2, 2), np.float32))


def test_nifti_intensity_scaling_is_applied_like_nibabel(tmp_path):
    image = nib.Nifti1Image(np.array([[0, 1], [2, 3]], np.int16), np.eye(4))
    image.header.set_slope_inter(2.0, 10.0)
    nib.save(image, str(tmp_path / "s.nii.gz"))
    read, _, _ = io.read_image(tmp_path / "s.nii.gz")
    oracle = nib.load(str(tmp_path / "s.nii.gz")).get_fdata()
    np.testing.assert_array_equal(read[0], oracle)
    np.testing.assert_array_equal(read[0], [[10, 12], [14, 16]])


def test_16_bit_png_mask_and_float_mask(tmp_path):
    Image.fromarray(np.array([[0, 65535], [65535, 0]], np.uint16)).save(tmp_path / "m16.png")
    np.testing.assert_array_equal(io.read_mask(tmp_path / "m16.png")[0], [[False, True], [True, False]])
    path = save_nifti(tmp_path / "f.nii.gz", np.array([[0.0, 0.5]], np.float32))
    with pytest.raises(SoftsegError, match=r"f.nii.gz: expected a binary mask .* found 2 distinct values \(0, 0.5\)"):
        io.read_mask(path)


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    src = save_nifti(tmp_path / "image.nii.gz", np.zeros((2, 2), np.float32))
    geometry = io.read_image(src)[2]
    out = io.write_map(tmp_path / "p.nii.gz", np.full((2, 2), 0.25), geometry)

    def broken_write(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(io.Path, "write_bytes", broken_write)
    with pytest.raises(OSError, match="disk full"):
        io.write_map(out, np.full((2, 2), 0.75), geometry, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz", "p.nii.gz"]
    np.testing.assert_array_equal(io.read_probability(out)[0], np.full((2, 2), 0.25, np.float32))


def test_palette_png_mask_reads_indices_and_palette_image_reads_colours(tmp_path):
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    pal = Image.new("P", (2, 2))
    pal.putdata(indices.flatten().tolist())
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 drawn red
    pal.save(tmp_path / "label.png")
    with Image.open(tmp_path / "label.png") as check:
        assert check.mode == "P"
    np.testing.assert_array_equal(io.read_mask(tmp_path / "label.png")[0], indices.astype(bool))
    image, _, geometry = io.read_image(tmp_path / "label.png")
    assert image.shape == (3, 2, 2) and geometry.png_mode == "RGB"
    np.testing.assert_array_equal(image[0], indices * 255)
    np.testing.assert_array_equal(image[1], 0)


def test_shapes_that_are_not_images_or_maps(tmp_path):
    path = save_nifti(tmp_path / "line.nii.gz", np.zeros((5,), np.float32))
    with pytest.raises(SoftsegError, match=r"line.nii.gz: expected a 2D or 3D image \(optionally with a last channel axis\), found an array of shape \(5,\)"):
        io.read_image(path)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(SoftsegError, match=r"rgb.png: expected a grey probability map, found PNG mode RGB with shape \(2, 2, 3\)"):
        io.read_probability(tmp_path / "rgb.png")
    geometry = io.read_image(tmp_path / "rgb.png")[2]
    with pytest.raises(SoftsegError, match=r"p.png: PNG maps must be 2D, got shape \(2, 2, 3\)"):
        io.write_map(tmp_path / "p.png", np.zeros((2, 2, 3)), geometry)


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_png_maps_are_exact_for_any_size_and_read_by_pillow(tmp_path, monkeypatch, deflate):
    # write_map encodes PNGs itself (Up filter, ISA-L or zlib deflate): Pillow must read
    # every value back
    if deflate == "zlib":
        monkeypatch.setattr(_encode, "_isal_zlib", None)
    else:
        assert _encode._isal_zlib is not None, "isal is a dependency on this platform"
    rng = np.random.default_rng(7)
    for shape in [(1, 1), (3, 7), (33, 65), (64, 48)]:
        Image.fromarray(np.zeros(shape, np.uint8)).save(tmp_path / "src.png")
        _, _, geometry = io.read_image(tmp_path / "src.png")
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        smooth = np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 3) ** 2) / 50.0)
        for prob in (rng.random(shape).astype(np.float32), smooth.astype(np.float32)):
            io.write_map(tmp_path / "p.png", prob, geometry, overwrite=True)
            stored = np.array(Image.open(tmp_path / "p.png"))
            np.testing.assert_array_equal(stored, np.round(prob.astype(np.float64) * 65535))
            assert Image.open(tmp_path / "p.png").mode.startswith("I;16")
        prob = rng.random(shape).astype(np.float32)
        mask = prob >= 0.5
        io.write_map(tmp_path / "m.png", mask, geometry, overwrite=True)
        with Image.open(tmp_path / "m.png") as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.array(image), np.where(mask, 255, 0))


def test_uncompressed_nifti_is_written_uncompressed(tmp_path):
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    out = io.write_array(tmp_path / "a.nii", array)
    assert out.read_bytes()[344:348] == b"n+1\x00"  # the single-file NIfTI-1 magic, not gzip
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(back.dataobj), array)


def test_written_files_get_the_umask_permissions(tmp_path):
    # mkstemp alone makes 0600 files: colleagues on a shared server could not read them
    src = save_nifti(tmp_path / "image.nii.gz", np.zeros((6, 5), np.int16))
    _, _, geometry = io.read_image(src)
    old = os.umask(0o022)
    try:
        nifti = io.write_map(tmp_path / "p.nii.gz", np.full((6, 5), 0.5, np.float32), geometry)
        os.umask(0o027)
        png = io.write_array(tmp_path / "m.png", np.zeros((4, 4), np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(nifti.stat().st_mode) == 0o644
    assert stat.S_IMODE(png.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz", "m.png", "p.nii.gz"]


def test_damaged_files_are_named_but_programming_errors_are_not_hidden(tmp_path, monkeypatch):
    broken = tmp_path / "broken.nii.gz"
    good = save_nifti(tmp_path / "good.nii.gz", np.zeros((6, 5), np.int16))
    broken.write_bytes(good.read_bytes()[:40])  # truncated gzip
    with pytest.raises(SoftsegError, match=r"broken.nii.gz: cannot read as NIfTI"):
        io.read_image(broken)
    (tmp_path / "garbage.png").write_bytes(b"not a png at all")
    with pytest.raises(SoftsegError, match=r"garbage.png: cannot read as PNG"):
        io.read_image(tmp_path / "garbage.png")

    def bug(*args, **kwargs):
        raise TypeError("a bug, not a damaged file")

    monkeypatch.setattr(io.nib, "load", bug)
    with pytest.raises(TypeError, match="a bug"):
        io.read_image(good)
    monkeypatch.setattr(io.Image, "open", bug)
    with pytest.raises(TypeError, match="a bug"):
        io.read_image(tmp_path / "garbage.png")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def damaged_files(folder):
    """{file: the exception nibabel/Pillow raise for it}: real files truncated or corrupted."""
    array = np.random.default_rng(3).random((20, 20, 4)).astype(np.float32)  # incompressible
    gz = save_nifti(folder / "ok.nii.gz", array).read_bytes()
    raw = save_nifti(folder / "ok.nii", array).read_bytes()
    buffer = io_bytes.BytesIO()
    Image.fromarray((array[..., 0] * 255).astype(np.uint8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    bad_dtype, negative_dim = bytearray(raw), bytearray(raw)
    bad_dtype[70:72] = (255).to_bytes(2, "little")  # header field datatype: no such code
    negative_dim[42:44] = (-3).to_bytes(2, "little", signed=True)  # dim[1]
    broken_stream = bytearray(gz)
    broken_stream[10:12] = b"\xff\xff"  # the first bytes of the deflate stream
    broken_idat = bytearray(png)
    broken_idat[60:64] = b"\xff\xff\xff\xff"
    # a valid header claiming 20000 x 20000 pixels, more than Pillow agrees to decode
    bomb = b"".join((b"\x89PNG\r\n\x1a\n",
                     _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)),
                     _png_chunk(b"IDAT", zlib.compress(b"")), _png_chunk(b"IEND", b"")))
    files = {
        "header-cut.nii.gz": (gz[:40], "ImageFileError"),
        "data-cut.nii.gz": (gz[: 3 * len(gz) // 4], "EOFError"),
        "stream.nii.gz": (bytes(broken_stream), "error"),  # zlib.error
        "data-cut.nii": (raw[:400], "OSError"),
        "dtype.nii": (bytes(bad_dtype), "HeaderDataError"),
        "dim.nii": (bytes(negative_dim), "OverflowError"),
        "garbage.png": (b"garbage", "UnidentifiedImageError"),
        "cut.png": (png[: len(png) // 2], "OSError"),
        "idat.png": (bytes(broken_idat), "OSError"),
        "bomb.png": (bomb, "DecompressionBombError"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {folder / name: error for name, (_, error) in files.items()}


def test_every_kind_of_damage_gives_the_cannot_read_message(tmp_path):
    for path, error in damaged_files(tmp_path).items():
        kind, valid = ("PNG", r"\.png") if path.suffix == ".png" else ("NIfTI", r"\.nii/\.nii\.gz")
        for read in (io.read_image, io.read_mask, io.read_probability):
            pattern = rf"(?s){path.name}: cannot read as {kind} \({error}: .*\); expected a valid {valid} file"
            with pytest.raises(SoftsegError, match=pattern):
                read(path)
