"""transforms: normalisation, resize/pad/crop, joint augmentation alignment, growing batch."""

import math
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from softseg.model.config import TrainConfig
from softseg.training.augment import (
    augmented_crops,
    copy_transforms,
    growing_batch,
    random_crop,
    random_crops,
    sampling_grid,
)
from softseg.model.preprocess import normalize, pad_to_multiple, resize

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


def _sources(n=6, c=2, h=48, w=64, seed=0):
    images = _smooth_batch(n, c, h, w, seed)
    return list(images), list(images[:, :1] * 0.5 + images[:, 1:] * 0.5)  # label: a function of the image


def test_label_that_is_a_function_of_the_image_stays_that_function():
    images, labels = _sources()
    out_i, out_l = augmented_crops(images, labels, 32, PAPER, _gen(7))
    assert out_i.shape == (6, 2, 32, 32) and out_l.shape == (6, 1, 32, 32)
    torch.testing.assert_close(out_l, out_i[:, :1] * 0.5 + out_i[:, 1:] * 0.5, atol=1e-6, rtol=0)
    assert out_l.min() >= 0 and out_l.max() <= 1


def test_soft_values_stay_in_unit_range_and_are_not_thresholded():
    labels = torch.full((4, 1, 40, 40), 1 / 3)
    labels[:, :, 8:32, 8:32] = 1.0
    images = torch.zeros(4, 1, 40, 40)
    _, out = augmented_crops(list(images), list(labels), 32, PAPER, _gen(1))
    assert out.min() >= 0 and out.max() <= 1
    values = torch.unique(out.round(decimals=4))
    assert len(values) > 3  # bilinear blends, not {1/3, 1}
    assert out.min() >= 1 / 3 - 1e-6  # reflection brings in label values, never a 0 fill


def test_no_constant_wedges_translation_and_rotation_bring_in_image_content():
    # every source value lies in [0.1, 1]: a fill (the old zero wedges) would show as values < 0.1
    noise = torch.rand(64, 1, 40, 40, generator=_gen(8))  # no constant patch anywhere in the sources
    images = [0.1 + 0.8 * x + 0.1 * e for x, e in zip(_smooth_batch(n=64, c=1, h=40, w=40), noise)]
    cfg = SimpleNamespace(translate=0.1, rotate=15.0, zoom=0.1, hflip=0.0, vflip=0.0)
    out_i, out_l = augmented_crops(images, images, 32, cfg, _gen(4))
    assert out_i.min() >= 0.1 - 1e-6 and out_l.min() >= 0.1 - 1e-6
    # no block of the output is constant (a wedge of fill would be)
    blocks = out_i.unfold(2, 4, 4).unfold(3, 4, 4)
    assert blocks.flatten(-2).std(-1).min() > 0


def test_rotation_about_the_window_centre_by_hand():
    # ramps of the column and row index are reproduced exactly by bilinear sampling
    h, w = 40, 48
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    image = torch.stack([cols, rows])[None].float()
    angle, scale, top, left = math.radians(10.0), 1.05, 4.0, 6.0
    grid = sampling_grid((h, w), 24, top, left, 1.5, -2.0, angle, scale)
    out = F.grid_sample(image, grid[None], mode="bilinear", padding_mode="reflection", align_corners=False)[0]
    o = torch.arange(24, dtype=torch.float64) - 11.5
    oy, ox = torch.meshgrid(o, o, indexing="ij")
    x = left + 11.5 + (math.cos(angle) * ox + math.sin(angle) * oy) / scale - 1.5
    y = top + 11.5 + (-math.sin(angle) * ox + math.cos(angle) * oy) / scale + 2.0
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(out[0].double()[inside], x[inside], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[1].double()[inside], y[inside], atol=1e-3, rtol=0)


def test_flips_and_windows_are_exact_without_warp():
    images = list(_smooth_batch(n=64, h=40, w=40))
    labels = [x[:1].clone() for x in images]
    cfg = SimpleNamespace(translate=0.0, rotate=0.0, zoom=0.0, hflip=0.5, vflip=0.5)
    out_i, out_l = augmented_crops(images, labels, 32, cfg, _gen(5))
    kinds, corners = [], set()
    for k in range(64):
        found = []
        for top in range(9):
            for left in range(9):
                window = images[k][:, top:top + 32, left:left + 32]
                options = {"none": window, "h": window.flip(-1), "v": window.flip(-2), "hv": window.flip(-1).flip(-2)}
                found += [(name, top, left) for name, o in options.items() if torch.equal(out_i[k], o)]
        assert len(found) == 1
        kinds.append(found[0][0])
        corners.add(found[0][1:])
        assert torch.equal(out_l[k], out_i[k, :1])
    assert set(kinds) == {"none", "h", "v", "hv"}  # each flip occurs with p = 0.5
    assert len(corners) > 20  # every copy draws its own window


def test_kidney_has_no_vertical_flip():
    images = list(_smooth_batch(n=32, h=32, w=32))
    out, _ = augmented_crops(images, [x[:1] for x in images], 32, SimpleNamespace(**{**vars(NONE), "hflip": 0.5}), _gen(2))
    assert all(torch.equal(out[k], images[k]) or torch.equal(out[k], images[k].flip(-1)) for k in range(32))
    assert any(not torch.equal(out[k], images[k]) for k in range(32))


def test_pure_translation_shifts_by_the_drawn_amount():
    h, w = 40, 48
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    image = torch.stack([cols, rows])
    cfg = SimpleNamespace(translate=0.1, rotate=0.0, zoom=0.0, hflip=0.0, vflip=0.0)
    draw = copy_transforms([(h, w)], 32, cfg, _gen(11))
    tx, ty, top, left = (float(draw[key][0]) for key in ("tx", "ty", "top", "left"))
    assert 0.5 < abs(tx) <= 4.8 and abs(ty) <= 4.0  # within +-10 % of each side of the image
    out, _ = augmented_crops([image], [torch.zeros(1, h, w)], 32, cfg, _gen(11))
    expect_x = left + torch.arange(32.0)[None, :] - tx
    expect_y = top + torch.arange(32.0)[:, None] - ty
    inside = (expect_x >= 0) & (expect_x <= w - 1) & (expect_y >= 0) & (expect_y <= h - 1)
    torch.testing.assert_close(out[0, 0][inside], expect_x.expand(32, 32)[inside], atol=1e-3, rtol=0)
    torch.testing.assert_close(out[0, 1][inside], expect_y.expand(32, 32)[inside], atol=1e-3, rtol=0)


def test_rotation_zoom_and_translation_ranges():
    n = 2000
    cfg = SimpleNamespace(translate=0.1, rotate=15.0, zoom=0.1, hflip=0, vflip=0)
    draw = copy_transforms([(64, 80)] * n, 32, cfg, _gen(0))
    scale, angle = draw["scale"], torch.rad2deg(draw["angle"])
    assert scale.min() >= 0.9 and scale.max() <= 1.1 and scale.max() > 1.09 and scale.min() < 0.91
    assert angle.abs().max() <= 15 and angle.abs().max() > 14.5
    assert draw["tx"].abs().max() <= 8.0 and draw["tx"].abs().max() > 7.5  # +-10 % of 80 px
    assert draw["ty"].abs().max() <= 6.4 and draw["ty"].abs().max() > 6.0  # +-10 % of 64 px
    assert set(draw["top"].tolist()) == set(range(33)) and set(draw["left"].tolist()) == set(range(49))


def test_identity_settings_change_nothing():
    images = list(_smooth_batch(h=32, w=32))
    out_i, out_l = augmented_crops(images, [x[:1] for x in images], 32, NONE, _gen())
    assert torch.equal(out_i, torch.stack(images)) and torch.equal(out_l, torch.stack(images)[:, :1])


def test_small_images_are_centred_and_reflected():
    image = 0.5 + torch.rand(1, 20, 24, generator=_gen())
    out, _ = augmented_crops([image], [image.clamp(0, 1)], 32, NONE, _gen())
    torch.testing.assert_close(out[0, :, 6:26, 4:28], image, atol=1e-5, rtol=0)
    assert out.min() >= 0.5  # filled from the image, not with 0


def test_growing_batch_shape_and_originals_kept():
    sources = list(_smooth_batch(n=8, c=1, h=40, w=40))
    crops, labels = random_crops(sources, sources, 32, _gen())
    bi, bl = growing_batch(crops, labels, (sources, sources), 3, PAPER, _gen())
    assert bi.shape == (32, 1, 32, 32) and bl.shape == (32, 1, 32, 32)
    assert torch.equal(bi[:8], crops) and torch.equal(bl[:8], labels)
    # copies differ from each other and from the originals, and stay aligned
    assert not torch.allclose(bi[8:16], bi[16:24])
    torch.testing.assert_close(bl[8:], bi[8:], atol=1e-6, rtol=0)
    same_i, _ = growing_batch(crops, labels, (sources, sources), 0, PAPER, _gen())
    assert same_i.shape == (8, 1, 32, 32)


def test_augmentation_is_reproducible_from_the_seed():
    images, labels = _sources()
    a = augmented_crops(images, labels, 32, PAPER, _gen(9))[0]
    b = augmented_crops(images, labels, 32, PAPER, _gen(9))[0]
    assert torch.equal(a, b)
