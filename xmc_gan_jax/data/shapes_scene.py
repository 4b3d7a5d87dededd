"""Captioned shapes: scene sampling, rendering and caption generation (pure numpy, no TensorFlow).

A scene is 1-3 objects on distinct cells of a 3x3 grid over a plain light-grey square image. Each object has a
colour (8), a shape (circle, square, triangle), a size (small, large) and a cell (row, col in 0..2, row 0 = top,
col 0 = left). Its bounding box is `SIZE_EXTENT[size]` of the cell side, centred in the cell up to a small random
offset (`jitter`), so it never leaves its cell. Every caption describes every object (colour, size, shape and
cell), with synonyms, varied word order and, for neighbouring objects, relations ("directly above", "to the
left of"). The words are all single MiniLM/BERT-uncased wordpieces; commas are their own wordpiece.

Geometry is in pixels of the final image: pixel (y, x) covers [y, y+1) x [x, x+1); cell r spans rows
[r*S/3, (r+1)*S/3). Rendering is anti-aliased by supersampling.
"""
from typing import NamedTuple, Sequence

import numpy as np

GRID = 3
MAX_OBJECTS = 3
BACKGROUND_RGB = (200, 200, 200)
COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "brown")
# Chosen far apart from each other and from the background (smallest distance: pink-background, 86).
COLOR_RGB = np.array([
    (220, 40, 40),    # red
    (40, 170, 60),    # green
    (40, 80, 220),    # blue
    (240, 220, 40),   # yellow
    (140, 60, 190),   # purple
    (250, 140, 30),   # orange
    (250, 130, 200),  # pink
    (130, 80, 40),    # brown
], dtype=np.uint8)
SHAPE_NAMES = ("circle", "square", "triangle")
SIZE_NAMES = ("small", "large")
SIZE_EXTENT = (0.5, 0.85)  # side of the object's bounding box, as a fraction of the cell side
DEFAULT_OBJECT_COUNT_PROBS = (0.4, 0.4, 0.2)  # P(1 object), P(2 objects), P(3 objects)
DEFAULT_JITTER = 0.5  # fraction of the free room in the cell that the centre may move
MAX_WORDS_TWO_OBJECTS = 20  # keeps two-object captions COCO-like (<= 20 wordpieces without [CLS]/[SEP])

SIZE_WORDS = (("small", "little", "tiny"), ("large", "big"))
SHAPE_WORDS = (("circle", "disk"), ("square", "box"), ("triangle",))
_ROW_WORDS = (("top", "upper"), ("middle",), ("bottom", "lower"))
# Relations of object b to its neighbour a, keyed by (b.row - a.row, b.col - a.col).
_RELATIONS = {
    (1, 0): ("directly below", "just below", "beneath"),
    (-1, 0): ("directly above", "just above"),
    (0, -1): ("to the left of", "just left of"),
    (0, 1): ("to the right of", "just right of"),
}


class SceneObject(NamedTuple):
  """One object. `dx`, `dy`: offset of its box centre from the cell centre, in cell sides (x right, y down)."""
  color: int
  shape: int
  size: int
  row: int
  col: int
  dx: float = 0.0
  dy: float = 0.0


def validate_count_probs(object_count_probs: Sequence[float]) -> np.ndarray:
  """Returns the probabilities of 1..k objects as float64 [k]; raises ValueError if they are not a distribution."""
  probs = np.asarray(object_count_probs, dtype=np.float64)
  if probs.ndim != 1 or not 1 <= probs.size <= MAX_OBJECTS:
    raise ValueError(f"object_count_probs must list P(1 object) .. P(k objects) for k <= {MAX_OBJECTS}, "
                     f"got {object_count_probs!r}.")
  if np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-6:
    raise ValueError(f"object_count_probs must be non-negative and sum to 1, got {object_count_probs!r}.")
  return probs


def sample_scene(rng: np.random.Generator,
                 object_count_probs: Sequence[float] = DEFAULT_OBJECT_COUNT_PROBS,
                 jitter: float = DEFAULT_JITTER) -> list[SceneObject]:
  """Samples 1-3 objects on distinct cells, sorted row-major by cell."""
  probs = validate_count_probs(object_count_probs)
  if not 0.0 <= jitter <= 1.0:
    raise ValueError(f"jitter must be in [0, 1] (fraction of the free room in a cell), got {jitter}.")
  num = int(rng.choice(probs.size, p=probs)) + 1
  cells = np.sort(rng.choice(GRID * GRID, size=num, replace=False))
  objects = []
  for cell in cells:
    size = int(rng.integers(len(SIZE_NAMES)))
    room = 0.5 * (1.0 - SIZE_EXTENT[size]) * jitter
    dx, dy = rng.uniform(-room, room, size=2)
    objects.append(SceneObject(color=int(rng.integers(len(COLOR_NAMES))), shape=int(rng.integers(len(SHAPE_NAMES))),
                               size=size, row=int(cell // GRID), col=int(cell % GRID), dx=float(dx), dy=float(dy)))
  return objects


def cell_bounds(index: int, image_size: int) -> tuple[int, int]:
  """Pixel range [start, stop) of grid row/column `index`: the pixels whose centres lie inside the cell."""
  cell = image_size / GRID
  return int(np.ceil(index * cell - 0.5)), int(np.ceil((index + 1) * cell - 0.5))


def shape_coverage(shape: int, cx, cy, extent, y_range: tuple[int, int], x_range: tuple[int, int],
                   supersample: int = 4) -> np.ndarray:
  """Fraction of each pixel covered by a shape, float32 [..., rows, cols] over the given pixel ranges.

  (cx, cy): centre of the shape's bounding box in pixels; extent: side of the bounding box in pixels; scalars or
  broadcastable arrays (their shape leads the output). The triangle points up, with base and height `extent`.
  """
  cx, cy, extent = (np.asarray(v, np.float64)[..., None, None] for v in np.broadcast_arrays(cx, cy, extent))
  offsets = (np.arange(supersample) + 0.5) / supersample
  ys = (np.arange(*y_range)[:, None] + offsets[None, :]).reshape(-1)
  xs = (np.arange(*x_range)[:, None] + offsets[None, :]).reshape(-1)
  y, x = ys[:, None] - cy, xs[None, :] - cx
  half = extent / 2
  if shape == 0:
    inside = x * x + y * y <= half * half
  elif shape == 1:
    inside = (np.abs(x) <= half) & (np.abs(y) <= half)
  elif shape == 2:
    inside = (y <= half) & (np.abs(x) <= (y + half) / 2)
  else:
    raise ValueError(f"shape must be in 0..{len(SHAPE_NAMES) - 1}, got {shape}.")
  rows, cols = y_range[1] - y_range[0], x_range[1] - x_range[0]
  inside = inside.reshape(inside.shape[:-2] + (rows, supersample, cols, supersample))
  return inside.mean(axis=(-3, -1), dtype=np.float32)


def centroid_offset(shape: int, extent):
  """Vertical distance (pixels, down) from the bounding-box centre to the area centroid of the shape."""
  return extent / 6 if shape == 2 else 0.0 * extent


def object_box(obj: SceneObject, image_size: int) -> tuple[float, float, float]:
  """(cx, cy, extent) in pixels of the object's bounding box."""
  cell = image_size / GRID
  return (cell * (obj.col + 0.5 + obj.dx), cell * (obj.row + 0.5 + obj.dy), cell * SIZE_EXTENT[obj.size])


def render_scene(objects: Sequence[SceneObject], image_size: int, supersample: int = 4) -> np.ndarray:
  """Renders objects on the background; returns uint8 [image_size, image_size, 3]."""
  if image_size < 2 * GRID:
    raise ValueError(f"image_size must be at least {2 * GRID} pixels, got {image_size}.")
  canvas = np.empty((image_size, image_size, 3), np.float32)
  canvas[:] = BACKGROUND_RGB
  for obj in objects:
    cx, cy, extent = object_box(obj, image_size)
    # The box stays inside the cell, so the cell's pixels (plus one for anti-aliased edges) hold all of it.
    y0, y1 = cell_bounds(obj.row, image_size)
    x0, x1 = cell_bounds(obj.col, image_size)
    y_range = (max(y0 - 1, 0), min(y1 + 1, image_size))
    x_range = (max(x0 - 1, 0), min(x1 + 1, image_size))
    cover = shape_coverage(obj.shape, cx, cy, extent, y_range, x_range, supersample)[..., None]
    region = canvas[y_range[0]:y_range[1], x_range[0]:x_range[1]]
    region[:] = region * (1 - cover) + COLOR_RGB[obj.color].astype(np.float32) * cover
  return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def location_phrases(row: int, col: int) -> list[str]:
  """Paraphrases of "in cell (row, col)" as prepositional phrases, e.g. "in the top left corner"."""
  if row == 1 and col == 1:
    return ["in the center", "in the middle", "at the center"]
  if row == 1:
    side = ("left", "", "right")[col]
    return [f"on the {side}", f"in the middle {side}", f"on the {side} side"]
  rows = _ROW_WORDS[row]
  if col == 1:
    return [f"at the {rows[0]}", f"in the {rows[0]} middle", f"at the {rows[0]} center"]
  side = ("left", "", "right")[col]
  phrases = [f"in the {word} {side}" for word in rows] + [f"at the {rows[0]} {side}"]
  return phrases + [f"in the {rows[0]} {side} corner"]


def noun_phrase(obj: SceneObject, rng: np.random.Generator) -> str:
  """E.g. "a small red circle", with a random synonym for size and shape."""
  size = SIZE_WORDS[obj.size][rng.integers(len(SIZE_WORDS[obj.size]))]
  shape = SHAPE_WORDS[obj.shape][rng.integers(len(SHAPE_WORDS[obj.shape]))]
  return f"a {size} {COLOR_NAMES[obj.color]} {shape}"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
  return options[rng.integers(len(options))]


def _placed(obj: SceneObject, rng: np.random.Generator) -> str:
  """An object with its location: "a small red circle in the top left"."""
  return f"{noun_phrase(obj, rng)} {_pick(rng, location_phrases(obj.row, obj.col))}"


def _join(clauses: Sequence[str]) -> str:
  """["A"] -> "A"; ["A", "B"] -> "A and B"; ["A", "B", "C"] -> "A, B and C"."""
  return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _adjacent_pairs(objects: Sequence[SceneObject]) -> list[tuple[int, int]]:
  """Ordered index pairs (a, b) whose cells share a side (both orders are listed)."""
  return [(a, b) for a, oa in enumerate(objects) for b, ob in enumerate(objects)
          if (ob.row - oa.row, ob.col - oa.col) in _RELATIONS]


def make_caption(objects: Sequence[SceneObject], rng: np.random.Generator) -> str:
  """One random caption that describes every object's colour, size, shape and cell."""
  if not objects:
    raise ValueError("A scene needs at least one object to caption.")
  if len(objects) == 1:
    obj = objects[0]
    np_, loc = noun_phrase(obj, rng), _pick(rng, location_phrases(obj.row, obj.col))
    return _pick(rng, (f"{np_} {loc}", f"there is {np_} {loc}", f"{loc} there is {np_}", f"{np_} is {loc}"))
  pairs = _adjacent_pairs(objects)
  if pairs and rng.random() < 0.5:
    a, b = pairs[rng.integers(len(pairs))]
    oa, ob = objects[a], objects[b]
    relation = _pick(rng, _RELATIONS[(ob.row - oa.row, ob.col - oa.col)])
    joiner = _pick(rng, ("with", "and"))
    related = f"{_placed(oa, rng)} {joiner} {noun_phrase(ob, rng)} {relation} it"
    rest = [_placed(objects[i], rng) for i in rng.permutation(len(objects)) if i not in (a, b)]
    if not rest:
      return related
    return f"{related} and {rest[0]}" if rng.random() < 0.5 else f"{rest[0]} and {related}"
  caption = _join([_placed(objects[i], rng) for i in rng.permutation(len(objects))])
  if len(objects) == 2 and rng.random() < 0.3 and len(caption.split()) <= MAX_WORDS_TWO_OBJECTS - 2:
    caption = "there is " + caption
  return caption


def make_captions(objects: Sequence[SceneObject], rng: np.random.Generator, num_captions: int = 5,
                  max_tries: int = 50) -> list[str]:
  """`num_captions` captions of the scene, distinct whenever `max_tries` random draws allow."""
  if num_captions < 1:
    raise ValueError(f"num_captions must be >= 1, got {num_captions}.")
  captions: list[str] = []
  for _ in range(max_tries):
    caption = make_caption(objects, rng)
    if caption not in captions:
      captions.append(caption)
    if len(captions) == num_captions:
      return captions
  while len(captions) < num_captions:  # tiny phrase space: repeat draws rather than return fewer captions
    captions.append(make_caption(objects, rng))
  return captions


def objects_to_arrays(objects: Sequence[SceneObject]) -> dict[str, np.ndarray]:
  """Structured form: int64 [num_objects] arrays under keys color, shape, size, row, col."""
  return {key: np.array([getattr(o, key) for o in objects], np.int64) for key in ("color", "shape", "size", "row",
                                                                                   "col")}


def pad_objects(scenes: Sequence[Sequence[SceneObject]]) -> dict[str, np.ndarray]:
  """Batch form of the input pipeline, read by the verifier: `objects/{color,shape,size,row,col}` int32 [N, 3]
  padded with -1, and `num_objects` int32 [N]."""
  keys = ("color", "shape", "size", "row", "col")
  out = {f"objects/{key}": np.full((len(scenes), MAX_OBJECTS), -1, np.int32) for key in keys}
  for i, scene in enumerate(scenes):
    for j, obj in enumerate(scene):
      for key in keys:
        out[f"objects/{key}"][i, j] = getattr(obj, key)
  out["num_objects"] = np.array([len(s) for s in scenes], np.int32)
  return out
