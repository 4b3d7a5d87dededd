"""Checks whether captioned-shapes images show their objects (pure numpy).

For every object the verifier looks only at the object's grid cell:
1. Each pixel is unmixed as a blend of the background and one palette colour (`coverage_maps`): the colour whose
   background blend line passes nearest to the pixel (within `COLOR_THRESHOLD`) wins, and the position along
   that line is the colour's coverage of the pixel, in [0, 1]. Plain nearest-colour labelling fails on edges:
   an anti-aliased or blurred pixel, half red and half grey, is nearer to pink than to red, but it lies on the
   red-grey line. This tolerates anti-aliasing, blur and colour shifts of generated images.
2. The object's colour counts as present at its cell (`color_position`) when its coverage sums to at least
   `MIN_AREA_FRACTION` of the cell, reaches `MIN_PEAK_COVERAGE` somewhere, and forms a compact blob: soft
   intersection-over-union (sum of minima / sum of maxima) >= `MIN_IOU` with the best shape template (3 shapes x
   `TEMPLATE_EXTENTS` box sides, each also blurred), rendered like the dataset at the coverage's centroid.
3. The best template gives the judged shape, and its box side the size (small below `SIZE_BOUNDARY`).
4. Cells the caption leaves empty must stay empty (`no_extra`): no palette colour may form an object there by the
   test of step 2. Without this, an image flooded with the caption's colour would pass colour-and-position for
   every one-object caption (it covers the right cell with the right colour) while placing nothing.
An example passes an attribute only when it holds for all its objects; `color_position` and `all` also need
`no_extra`, and `all` needs every attribute.
"""
from typing import Mapping

import numpy as np

from xmc_gan_jax.data import shapes_scene

COLOR_THRESHOLD = 50.0    # max RGB distance (0..255 units) of a pixel from a colour's blend line
MIN_LABEL_COVERAGE = 0.15  # pixels nearer the background than this stay unlabelled
MAX_COVERAGE = 1.6        # tolerates over-saturated generated colours; coverage is clipped to 1 afterwards
MIN_AREA_FRACTION = 0.05  # min summed coverage, as a fraction of the cell (a small triangle covers 0.125)
MIN_PEAK_COVERAGE = 0.7   # the colour must cover some pixel of the cell almost fully (not just tint it)
MIN_IOU = 0.4             # min soft IoU with the best template for the colour to count as an object
TEMPLATE_SUPERSAMPLE = 4  # as the renderer
TEMPLATE_BLUR_PASSES = 2  # each template is also tried blurred by 1..this many [1, 2, 1] passes (blurry images)
# Template box sides tried, in cell sides (rendered objects use 0.5 and 0.85). The best one decides the size:
# small below the geometric mean of the two rendered sides, large above.
TEMPLATE_EXTENTS = tuple(float(x) for x in np.round(np.arange(0.30, 1.001, 0.05), 2))
SIZE_BOUNDARY = float(np.sqrt(shapes_scene.SIZE_EXTENT[0] * shapes_scene.SIZE_EXTENT[1]))
SCORE_KEYS = ("color_position", "size", "shape", "no_extra", "all")
_ATTRS = ("color", "shape", "size", "row", "col")


def coverage_maps(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Unmixes RGB pixels [..., 3] (0..255) into (label int8 [...], coverage float32 [...] in [0, 1]).

  Pixel p is read as bg + a * (colour - bg) for each palette colour: a is the colour's coverage and
  |p - bg - a (colour - bg)| the residual. The label is the colour with the smallest residual among those with
  a in [MIN_LABEL_COVERAGE, MAX_COVERAGE], if that residual is <= COLOR_THRESHOLD; else -1 with coverage 0.
  """
  background = np.array(shapes_scene.BACKGROUND_RGB, np.float32)
  directions = shapes_scene.COLOR_RGB.astype(np.float32) - background  # [K, 3]
  offset = pixels.astype(np.float32) - background
  coverage = offset @ directions.T / np.sum(directions**2, axis=-1)  # [..., K]
  residual = np.linalg.norm(offset[..., None, :] - coverage[..., None] * directions, axis=-1)
  residual = np.where((coverage >= MIN_LABEL_COVERAGE) & (coverage <= MAX_COVERAGE), residual, np.inf)
  nearest = np.argmin(residual, axis=-1)
  found = np.take_along_axis(residual, nearest[..., None], -1)[..., 0] <= COLOR_THRESHOLD
  labels = np.where(found, nearest, -1).astype(np.int8)
  best_coverage = np.take_along_axis(coverage, nearest[..., None], -1)[..., 0]
  return labels, np.where(found, np.clip(best_coverage, 0.0, 1.0), 0.0).astype(np.float32)


def _blur(values: np.ndarray) -> np.ndarray:
  """One pass of the separable [1, 2, 1] / 4 kernel over the last two axes of [..., h, w] (zero outside)."""
  padded = np.pad(values, [(0, 0)] * (values.ndim - 2) + [(1, 1), (1, 1)])
  rows = 0.25 * padded[..., :-2, :] + 0.5 * padded[..., 1:-1, :] + 0.25 * padded[..., 2:, :]
  return 0.25 * rows[..., :-2] + 0.5 * rows[..., 1:-1] + 0.25 * rows[..., 2:]


def judge_object(image: np.ndarray, color: int, row: int, col: int) -> tuple[bool, int, int, float]:
  """Judges one object in one uint8 image [S, S, 3].

  Returns (present, shape, size, iou): whether the colour forms an object at cell (row, col), and the shape and
  size of the best-matching template with its soft IoU (shape = size = -1 when absent).
  """
  return _judge_in_cell(image.shape[0], _cell_maps(image, row, col), color, row, col)


def _cell_maps(image: np.ndarray, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
  """`coverage_maps` of the pixels of cell (row, col) of a uint8 image [S, S, 3]."""
  y0, y1 = shapes_scene.cell_bounds(row, image.shape[0])
  x0, x1 = shapes_scene.cell_bounds(col, image.shape[0])
  return coverage_maps(image[y0:y1, x0:x1])


def has_extra_object(image: np.ndarray, occupied: set[tuple[int, int]]) -> bool:
  """Whether any palette colour forms an object (the test of `judge_object`) in a cell not in `occupied`."""
  size_px = image.shape[0]
  for row in range(shapes_scene.GRID):
    for col in range(shapes_scene.GRID):
      if (row, col) in occupied:
        continue
      maps = _cell_maps(image, row, col)
      for color in np.unique(maps[0][maps[0] >= 0]):
        if _judge_in_cell(size_px, maps, int(color), row, col)[0]:
          return True
  return False


def _judge_in_cell(size_px: int, maps: tuple[np.ndarray, np.ndarray], color: int, row: int,
                   col: int) -> tuple[bool, int, int, float]:
  """`judge_object` on the cell's precomputed `coverage_maps`."""
  labels, coverage = maps
  y0, y1 = shapes_scene.cell_bounds(row, size_px)
  x0, x1 = shapes_scene.cell_bounds(col, size_px)
  mass = np.where(labels == color, coverage, 0.0)
  total = float(mass.sum())
  if total <= 0.0 or total < MIN_AREA_FRACTION * mass.size or mass.max() < MIN_PEAK_COVERAGE:
    return False, -1, -1, 0.0
  ys, xs = np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5
  cy = float(mass.sum(axis=1) @ ys) / total  # centroid in pixel coordinates
  cx = float(mass.sum(axis=0) @ xs) / total
  cell = size_px / shapes_scene.GRID
  extents = np.array(TEMPLATE_EXTENTS) * cell
  ious = []  # [shape][blur passes, extent]
  for shape in range(len(shapes_scene.SHAPE_NAMES)):
    templates = shapes_scene.shape_coverage(shape, cx, cy - shapes_scene.centroid_offset(shape, extents),
                                            extents, (y0, y1), (x0, x1), TEMPLATE_SUPERSAMPLE)  # [E, h, w]
    per_blur = []
    for _ in range(TEMPLATE_BLUR_PASSES + 1):
      per_blur.append(np.minimum(templates, mass).sum(axis=(1, 2)) / np.maximum(templates, mass).sum(axis=(1, 2)))
      templates = _blur(templates)
    ious.append(per_blur)
  ious = np.array(ious)  # [shape, blur, extent]
  shape, _, extent_index = np.unravel_index(np.argmax(ious), ious.shape)
  iou, fraction = float(ious.max()), TEMPLATE_EXTENTS[extent_index]
  if iou < MIN_IOU:
    return False, -1, -1, iou
  return True, int(shape), int(fraction >= SIZE_BOUNDARY), iou


def _get(objects: Mapping[str, np.ndarray], key: str) -> np.ndarray:
  for name in (f"objects/{key}", key):
    if name in objects:
      return np.asarray(objects[name])
  raise KeyError(f"objects needs 'objects/{key}' (or '{key}'): int [N, 3] padded with -1; got keys "
                 f"{sorted(objects)}.")


def _check_inputs(images: np.ndarray,
                  objects: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
  if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError("images must be a uint8 numpy array [N, H, W, 3]; convert [0, 1] floats with "
                     "np.clip(np.round(x * 255), 0, 255).astype(np.uint8). Got "
                     f"{type(images).__name__} {getattr(images, 'dtype', None)} {getattr(images, 'shape', None)}.")
  n, height, width, _ = images.shape
  if height != width or height < 2 * shapes_scene.GRID:
    raise ValueError(f"images must be square and at least {2 * shapes_scene.GRID} px, got {height}x{width}.")
  arrays = {key: _get(objects, key) for key in _ATTRS}
  if "num_objects" not in objects:
    raise KeyError(f"objects needs 'num_objects': int [N]; got keys {sorted(objects)}.")
  num_objects = np.asarray(objects["num_objects"])
  for key, value in arrays.items():
    if value.shape != (n, shapes_scene.MAX_OBJECTS):
      raise ValueError(f"objects/{key} must have shape [{n}, {shapes_scene.MAX_OBJECTS}], got {value.shape}.")
  if num_objects.shape != (n,) or np.any(num_objects < 1) or np.any(num_objects > shapes_scene.MAX_OBJECTS):
    raise ValueError(f"num_objects must be int [{n}] with values in 1..{shapes_scene.MAX_OBJECTS}, got "
                     f"shape {num_objects.shape} and values {np.unique(num_objects)[:10]}.")
  valid = np.arange(shapes_scene.MAX_OBJECTS)[None, :] < num_objects[:, None]
  limits = {"color": len(shapes_scene.COLOR_NAMES), "shape": len(shapes_scene.SHAPE_NAMES),
            "size": len(shapes_scene.SIZE_NAMES), "row": shapes_scene.GRID, "col": shapes_scene.GRID}
  for key, limit in limits.items():
    values = arrays[key][valid]
    if values.size and (values.min() < 0 or values.max() >= limit):
      raise ValueError(f"objects/{key} must lie in 0..{limit - 1} for the first num_objects entries, got "
                       f"values {np.unique(values)}.")
  return arrays, num_objects


def score_images(images: np.ndarray, objects: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Scores images against their structured objects.

  Args:
    images: uint8 [N, H, W, 3], square.
    objects: `objects/color`, `objects/shape`, `objects/size`, `objects/row`, `objects/col` int [N, 3] padded
      with -1 (the input pipeline's batch keys; the bare names `color`, ... are accepted too), and
      `num_objects` int [N].
  Returns:
    bool [N] arrays under `color_position`, `size`, `shape`, `no_extra`, `all`; True only if it holds for every
    object (`no_extra`: no object in a cell the caption leaves empty; `color_position` and `all` include it).
  """
  arrays, num_objects = _check_inputs(images, objects)
  n = images.shape[0]
  scores = {key: np.ones(n, bool) for key in SCORE_KEYS}
  for i in range(n):
    for j in range(int(num_objects[i])):
      present, shape, size, _ = judge_object(images[i], int(arrays["color"][i, j]), int(arrays["row"][i, j]),
                                             int(arrays["col"][i, j]))
      shape_ok = present and shape == arrays["shape"][i, j]
      size_ok = present and size == arrays["size"][i, j]
      scores["color_position"][i] &= present
      scores["shape"][i] &= shape_ok
      scores["size"][i] &= size_ok
      scores["all"][i] &= present and shape_ok and size_ok
    occupied = {(int(arrays["row"][i, j]), int(arrays["col"][i, j])) for j in range(int(num_objects[i]))}
    scores["no_extra"][i] = not has_extra_object(images[i], occupied)
  scores["color_position"] &= scores["no_extra"]
  scores["all"] &= scores["no_extra"]
  return scores


def summarize(scores: Mapping[str, np.ndarray], num_objects: np.ndarray) -> dict[str, float]:
  """Fractions in [0, 1]: `align_{key}` over all examples and `align_{key}_{k}obj` over examples with k objects
  (only for counts k that occur)."""
  num_objects = np.asarray(num_objects)
  out = {}
  for key in SCORE_KEYS:
    values = np.asarray(scores[key], bool)
    if values.shape != num_objects.shape:
      raise ValueError(f"scores[{key!r}] has shape {values.shape} but num_objects has {num_objects.shape}.")
    out[f"align_{key}"] = float(values.mean()) if values.size else float("nan")
    for k in range(1, shapes_scene.MAX_OBJECTS + 1):
      selected = num_objects == k
      if selected.any():
        out[f"align_{key}_{k}obj"] = float(values[selected].mean())
  return out
