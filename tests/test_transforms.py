"""transforms: normalisation, resize/pad/crop, joint augmentation alignment, growing batch."""

from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from softseg.training.config import TrainConfig
from softseg.training.augment import affine_matrices, augment_batch, growing_batch, random_crop, random_crops
from softseg.training.preprocess import normalize, pad_to_multiple, resize

PAPER = TrainConfig()  # translate 0.1, rotate 15, zoom 0.1, flips 0.5
NONE = SimpleNamespace(translate=0.0, rotate=0.0, zoom=0.0, hflip=0.0, vflip=0.0)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _smooth_batch(n=6, c=2, h=48, w=64, seed=0):
    """Images in [0, 1] with structure in every direction (so misalignment would show)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h // 8, w // 8, generator=g)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def test_normalize_per_channel_zscore():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(5, 3, (20, 30)), rng.normal(-2, 0.1, (20, 30)), np.full((20, 30), 7.0)])
    x = normalize(image.astype(np.float32))
    assert x.dtype == torch.float32 and x.shape == (3, 20, 30)
    np.testing.assert_allclose(x[:2].mean(dim=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x[:2].std(dim=(1, 2), unbiased=False), 1, atol=1e-5)
    assert torch.all(x[2] == 0)  # constant channel -> zeros, not NaN


def test_pad_to_multiple_keeps_pixels_in_place():
    x = torch.arange(2 * 33 * 40, dtype=torch.float32).reshape(2, 33, 40)
    y = pad_to_multiple(x)
    assert y.shape == (2, 64, 64)
    assert torch.equal(y[:, :33, :40], x) and y[:, 33:].abs().sum() == 0 and y[:, :, 40:].abs().sum() == 0
    assert pad_to_multiple(torch.zeros(1, 64, 32)).shape == (1, 64, 32)


def test_resize_keeps_soft_labels_in_unit_range_and_round_trips_shape():
    label = (torch.rand(1, 1, 101, 77, generator=_gen()) > 0.5).float() * 0.9 + 0.1
    small = resize(label, (32, 32), clamp01=True)
    assert small.shape == (1, 1, 32, 32) and small.min() >= 0 and small.max() <= 1
    # a constant map stays exactly that constant (weights sum to one)
    assert torch.allclose(resize(torch.full((1, 50, 50), 0.3), (20, 20)), torch.tensor(0.3))
    assert resize(small[0], (101, 77)).shape == (1, 101, 77)


def test_random_crop_is_the_same_window_and_pads_small_images():
    image = torch.arange(3 * 40 * 50, dtype=torch.float32).reshape(3, 40, 50)
    label = image[:1] / image.max()
    ci, cl = random_crop(image, label, 32, _gen(3))
    assert ci.shape == (3, 32, 32) and cl.shape == (1, 32, 32)
    torch.testing.assert_close(cl, ci[:1] / image.max())
    # smaller than the crop: padded with zeros around, every original pixel kept
    small = torch.ones(1, 20, 10)
    pi, pl = random_crop(small, small[:1] * 0.5, 32, _gen())
    assert pi.shape == (1, 32, 32) and pi.sum() == 200 and pl.sum() == 100
    bi, bl = random_crops([image, image], [label, label], 32, _gen())
    assert bi.shape == (2, 3, 32, 32) and bl.shape == (2, 1, 32, 32)


def test_label_that_is_a_function_of_the_image_stays_that_function():
    images = _smooth_batch()
    labels = images[:, :1] * 0.5 + images[:, 1:] * 0.5  # a linear function of the image, in [0, 1]
    out_i, out_l = augment_batch(images, labels, PAPER, _gen(7))
    assert not torch.allclose(out_i, images)  # something happened
    torch.testing.assert_close(out_l, out_i[:, :1] * 0.5 + out_i[:, 1:] * 0.5, atol=1e-6, rtol=0)
    assert out_l.min() >= 0 and out_l.max() <= 1


def test_soft_values_stay_in_unit_range_and_are_not_thresholded():
    labels = torch.full((4, 1, 32, 32), 1 / 3)
    labels[:, :, 8:24, 8:24] = 1.0
    images = torch.zeros(4, 1, 32, 32)
    _, out = augment_batch(images, labels, PAPER, _gen(1))
    assert out.min() >= 0 and out.max() <= 1
    interior = out[:, :, 12:20, 12:20]
    assert torch.allclose(interior, torch.tensor(1.0), atol=1e-5)
    values = torch.unique(out.round(decimals=4))
    assert len(values) > 3  # bilinear blends, not {0, 1/3, 1}


def test_flips_are_exact():
    images = _smooth_batch(n=64)
    labels = images[:, :1].clone()
    cfg = SimpleNamespace(translate=0.0, rotate=0.0, zoom=0.0, hflip=0.5, vflip=0.5)
    out_i, out_l = augment_batch(images, labels, cfg, _gen(5))
    kinds = []
    for k in range(64):
        options = {
            "none": images[k], "h": images[k].flip(-1), "v": images[k].flip(-2), "hv": images[k].flip(-1).flip(-2),
        }
        match = [name for name, o in options.items() if torch.equal(out_i[k], o)]
        assert len(match) == 1
        kinds.append(match[0])
        assert torch.equal(out_l[k], out_i[k, :1])
    assert set(kinds) == {"none", "h", "v", "hv"}  # each outcome occurs with p = 0.5, 0.5


def test_kidney_has_no_vertical_flip():
    images = _smooth_batch(n=32)
    out, _ = augment_batch(images, images[:, :1], SimpleNamespace(**{**vars(NONE), "hflip": 0.5}), _gen(2))
    assert all(torch.equal(out[k], images[k]) or torch.equal(out[k], images[k].flip(-1)) for k in range(32))
    assert any(not torch.equal(out[k], images[k]) for k in range(32))


def test_pure_translation_shifts_by_the_drawn_amount():
    # two ramps (column index, row index): bilinear sampling reproduces a shifted ramp exactly
    h, w = 40, 48
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    image = torch.stack([cols, rows])[None]
    cfg = SimpleNamespace(translate=0.1, rotate=0.0, zoom=0.0, hflip=0.0, vflip=0.0)
    theta = affine_matrices(1, h, w, cfg, _gen(11))
    tx, ty = -theta[0, 0, 2].item() * w / 2, -theta[0, 1, 2].item() * h / 2  # pixels
    assert 0.5 < abs(tx) <= 4.8 and abs(ty) <= 4.0  # within +-10 % of each side
    out, _ = augment_batch(image, torch.zeros(1, 1, h, w), cfg, _gen(11))
    inner = (slice(6, h - 6), slice(6, w - 6))  # away from the zero-filled border
    torch.testing.assert_close(out[0, 0][inner], cols[inner] - tx, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, 1][inner], rows[inner] - ty, atol=1e-4, rtol=0)


def test_rotation_and_zoom_ranges():
    n = 2000
    cfg = SimpleNamespace(translate=0.1, rotate=15.0, zoom=0.1, hflip=0, vflip=0)
    theta = affine_matrices(n, 64, 64, cfg, _gen(0)).double()
    a = theta[:, :2, :2]
    scale = 1 / torch.sqrt(torch.det(a))
    angle = torch.rad2deg(torch.atan2(a[:, 0, 1], a[:, 0, 0]))
    assert scale.min() >= 0.9 - 1e-6 and scale.max() <= 1.1 + 1e-6 and scale.max() > 1.09 and scale.min() < 0.91
    assert angle.abs().max() <= 15 + 1e-4 and angle.abs().max() > 14.5
    shift = theta[:, :, 2].abs() * 32
    assert shift.max() <= 6.4 + 1e-4 and shift.max() > 6.0  # +-10 % of 64 px


def test_identity_settings_change_nothing():
    images = _smooth_batch()
    out_i, out_l = augment_batch(images, images[:, :1], NONE, _gen())
    assert torch.equal(out_i, images) and torch.equal(out_l, images[:, :1])


def test_growing_batch_shape_and_originals_kept():
    images = _smooth_batch(n=8, c=1, h=32, w=32)
    labels = images.clone()
    bi, bl = growing_batch(images, labels, 3, PAPER, _gen())
    assert bi.shape == (32, 1, 32, 32) and bl.shape == (32, 1, 32, 32)
    assert torch.equal(bi[:8], images) and torch.equal(bl[:8], labels)
    # copies differ from each other and from the originals, and stay aligned
    assert not torch.allclose(bi[8:16], bi[16:24])
    torch.testing.assert_close(bl[8:], bi[8:], atol=1e-6, rtol=0)
    same_i, _ = growing_batch(images, labels, 0, PAPER, _gen())
    assert same_i.shape == (8, 1, 32, 32)


def test_augmentation_is_reproducible_from_the_seed():
    images = _smooth_batch()
    a = augment_batch(images, images[:, :1], PAPER, _gen(9))[0]
    b = augment_batch(images, images[:, :1], PAPER, _gen(9))[0]
    assert torch.equal(a, b)
