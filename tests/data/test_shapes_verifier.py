"""Tests for the shapes verifier: near-perfect on the dataset's images (also blurred and noisy), near zero on noise,
blank and mismatched images, each attribute checked separately, and independent hand-drawn images."""
import numpy as np
import pytest

from xmc_gan_jax.data import shapes_scene as ss
from xmc_gan_jax.data import shapes_verifier as sv

NUM = 240


def _dataset(image_size, seed=0, num=NUM):
  rng = np.random.default_rng(seed)
  scenes = [ss.sample_scene(rng) for _ in range(num)]
  return np.stack([ss.render_scene(s, image_size) for s in scenes]), ss.pad_objects(scenes)


@pytest.fixture(scope="module", params=[32, pytest.param(64, marks=pytest.mark.slow)])
def dataset(request):
  return _dataset(request.param)


def _align(images, objects):
  return sv.summarize(sv.score_images(images, objects), objects["num_objects"])


def test_own_images_pass(dataset):
  summary = _align(*dataset)
  assert summary["align_all"] >= 0.99, summary
  for k in (1, 2, 3):
    assert summary[f"align_all_{k}obj"] >= 0.98, summary


@pytest.mark.slow
def test_noise_blank_and_shuffled_are_near_zero(dataset):
  # 120 of the scenes: six cases x 120 images keep each threshold below ~1/20 of its failures' count.
  images, objects = dataset[0][:120], {k: v[:120] for k, v in dataset[1].items()}
  rng = np.random.default_rng(1)
  cases = {
      "noise": rng.integers(0, 256, images.shape, dtype=np.uint8),
      "blank_grey": np.full_like(images, 128),
      "blank_background": np.full_like(images, 200),
      "blank_black": np.zeros_like(images),
      "blank_white": np.full_like(images, 255),
      "shuffled": images[np.roll(np.arange(len(images)), 1)],  # each image judged against another's objects
  }
  for name, bad in cases.items():
    summary = _align(bad, objects)
    assert summary["align_all"] <= 0.05, (name, summary)
    assert summary["align_color_position"] <= 0.1, (name, summary)


def _modified(objects, key, change):
  out = {k: v.copy() for k, v in objects.items()}
  valid = out[f"objects/{key}"] >= 0
  out[f"objects/{key}"][valid] = change(out[f"objects/{key}"][valid])
  return out


def test_each_attribute_is_checked(dataset):
  images, objects = dataset
  wrong_shape = _align(images, _modified(objects, "shape", lambda s: (s + 1) % 3))
  assert wrong_shape["align_color_position"] >= 0.99 and wrong_shape["align_shape"] <= 0.02, wrong_shape
  assert wrong_shape["align_size"] >= 0.95 and wrong_shape["align_all"] <= 0.02, wrong_shape
  wrong_size = _align(images, _modified(objects, "size", lambda s: 1 - s))
  assert wrong_size["align_color_position"] >= 0.99 and wrong_size["align_size"] <= 0.02, wrong_size
  assert wrong_size["align_all"] <= 0.02, wrong_size
  wrong_color = _align(images, _modified(objects, "color", lambda c: (c + 3) % 8))
  assert wrong_color["align_color_position"] <= 0.02, wrong_color
  # Move every object to its mirrored column; objects already in the middle column stay, so use 1-object scenes.
  single = objects["num_objects"] == 1
  off_centre = single & (objects["objects/col"][:, 0] != 1)
  moved = _modified(objects, "col", lambda c: 2 - c)
  moved_scores = sv.score_images(images, moved)
  assert moved_scores["color_position"][off_centre].mean() <= 0.02


def _blur_rows_cols(images):
  padded = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  rows = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
  return 0.25 * rows[:, :, :-2] + 0.5 * rows[:, :, 1:-1] + 0.25 * rows[:, :, 2:]


@pytest.mark.parametrize("image_size,minimum", [(32, 0.85), (64, 0.97)])
def test_robust_to_blur_noise_and_colour_shift(image_size, minimum):
  images, objects = _dataset(image_size, seed=2, num=160)
  rng = np.random.default_rng(3)
  noisy = _blur_rows_cols(images) + rng.normal(0, 8, images.shape) + rng.uniform(-15, 15, (len(images), 1, 1, 3))
  summary = _align(np.clip(np.round(noisy), 0, 255).astype(np.uint8), objects)
  assert summary["align_all"] >= minimum, summary
  assert summary["align_color_position"] >= 0.99, summary


def _hand_drawn(shape, size, row, col, color, image_size=60):
  """Draws one object without the dataset's renderer: hard pixel-centre test, colour shifted by +12."""
  image = np.full((image_size, image_size, 3), 200, np.uint8)
  cell = image_size // 3
  half = (0.5, 0.85)[size] * cell / 2
  cx, cy = (col + 0.5) * cell + 0.7, (row + 0.5) * cell - 0.6
  ys, xs = np.mgrid[:image_size, :image_size] + 0.5
  if shape == 0:
    inside = (xs - cx)**2 + (ys - cy)**2 <= half**2
  elif shape == 1:
    inside = (abs(xs - cx) <= half) & (abs(ys - cy) <= half)
  else:  # apex up: the half-width grows linearly from 0 at the top to `half` at the base
    inside = (ys >= cy - half) & (ys <= cy + half) & (abs(xs - cx) <= (ys - cy + half) / 2)
  image[inside] = np.clip(ss.COLOR_RGB[color].astype(int) + 12, 0, 255)
  return image


def _objects(color, shape, size, row, col):
  out = {f"objects/{k}": np.array([[v, -1, -1]], np.int32)
         for k, v in zip(("color", "shape", "size", "row", "col"), (color, shape, size, row, col))}
  out["num_objects"] = np.array([1], np.int32)
  return out


@pytest.mark.parametrize("shape", [0, 1, 2])
@pytest.mark.parametrize("size", [0, 1])
def test_hand_drawn_objects(shape, size):
  image = _hand_drawn(shape, size, row=2, col=0, color=5)[None]
  scores = sv.score_images(image, _objects(5, shape, size, 2, 0))
  assert all(bool(scores[k][0]) for k in sv.SCORE_KEYS), scores
  for other in {0, 1, 2} - {shape}:
    assert not sv.score_images(image, _objects(5, other, size, 2, 0))["shape"][0]
  assert not sv.score_images(image, _objects(5, shape, 1 - size, 2, 0))["size"][0]
  assert not sv.score_images(image, _objects(5, shape, size, 2, 1))["color_position"][0]


def test_extra_objects_and_colour_floods_fail(dataset):
  images, objects = dataset
  assert sv.score_images(images, objects)["no_extra"].mean() >= 0.99
  # The whole image in the first object's colour covers the right cell with the right colour, and places nothing.
  flood = ss.COLOR_RGB[objects["objects/color"][:, 0]][:, None, None, :] * np.ones_like(images)
  flooded = _align(flood.astype(np.uint8), objects)
  assert flooded["align_color_position_1obj"] == 0.0 and flooded["align_no_extra"] == 0.0, flooded
  # An undescribed second object: the described one is still found, but colour-and-position and all fail.
  first, second = _hand_drawn(1, 1, row=2, col=0, color=5), _hand_drawn(0, 0, row=0, col=2, color=1)
  both = np.where((second != 200).any(axis=-1, keepdims=True), second, first)[None]
  scores = sv.score_images(both, _objects(5, 1, 1, 2, 0))
  assert scores["shape"][0] and scores["size"][0]
  assert not (scores["no_extra"][0] or scores["color_position"][0] or scores["all"][0])
  two = {k: np.array([[a[0, 0], b[0, 0], -1]], np.int32) for (k, a), b in
         zip(_objects(5, 1, 1, 2, 0).items(), _objects(1, 0, 0, 0, 2).values()) if k != "num_objects"}
  two["num_objects"] = np.array([2], np.int32)
  assert all(bool(v[0]) for v in sv.score_images(both, two).values())


def test_unmixing_of_single_pixels():
  background = np.array(ss.BACKGROUND_RGB, np.float64)
  red = ss.COLOR_RGB[0].astype(np.float64)
  pixels = np.array([0.3 * red + 0.7 * background, background, red, [255, 255, 255],
                     0.5 * red + 0.5 * background])
  labels, coverage = sv.coverage_maps(np.round(pixels).astype(np.uint8))
  np.testing.assert_array_equal(labels, [0, -1, 0, -1, 0])
  np.testing.assert_allclose(coverage, [0.3, 0.0, 1.0, 0.0, 0.5], atol=0.01)
  # A half red / half grey edge pixel is nearer to pink than to red in plain RGB, but unmixes to red.
  half = 0.5 * red + 0.5 * background
  assert np.argmin(np.linalg.norm(np.concatenate([ss.COLOR_RGB, [ss.BACKGROUND_RGB]]) - half, axis=-1)) == 6


def test_summarize_fractions_and_suffixes():
  scores = {"color_position": np.array([1, 1, 0, 1], bool), "size": np.array([1, 0, 0, 1], bool),
            "shape": np.array([1, 1, 0, 0], bool), "no_extra": np.array([1, 1, 1, 1], bool),
            "all": np.array([1, 0, 0, 0], bool)}
  summary = sv.summarize(scores, np.array([1, 1, 3, 3]))
  assert summary["align_color_position"] == 0.75 and summary["align_all"] == 0.25
  assert summary["align_size_1obj"] == 0.5 and summary["align_shape_3obj"] == 0.0
  assert summary["align_all_1obj"] == 0.5 and summary["align_color_position_3obj"] == 0.5
  assert not any(key.endswith("_2obj") for key in summary)
  assert summary["align_no_extra_3obj"] == 1.0 and len(summary) == 5 * 3


def test_bare_keys_accepted_and_bad_inputs_rejected():
  images, objects = _dataset(32, seed=4, num=6)
  bare = {k.replace("objects/", ""): v for k, v in objects.items()}
  for key in sv.SCORE_KEYS:
    np.testing.assert_array_equal(sv.score_images(images, bare)[key], sv.score_images(images, objects)[key])
  with pytest.raises(ValueError, match="uint8"):
    sv.score_images(images.astype(np.float32) / 255, objects)
  with pytest.raises(ValueError, match="square"):
    sv.score_images(images[:, :, :20], objects)
  with pytest.raises(KeyError, match="objects/shape"):
    sv.score_images(images, {k: v for k, v in objects.items() if k != "objects/shape"})
  with pytest.raises(ValueError, match=r"objects/row must have shape \[6, 3\]"):
    sv.score_images(images, {**objects, "objects/row": objects["objects/row"][:, :2]})
  with pytest.raises(ValueError, match="num_objects"):
    sv.score_images(images, {**objects, "num_objects": np.zeros(6, np.int32)})
  with pytest.raises(ValueError, match="objects/color must lie in 0..7"):
    sv.score_images(images, {**objects, "objects/color": np.full((6, 3), 9, np.int32)})
