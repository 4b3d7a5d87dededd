"""Image grids for TensorBoard and PNG files (numpy; optional captions rendered with Pillow)."""
import math

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[..., 3] float in [0,1] (or uint8) -> uint8, rounding to nearest (as a saved PNG would)."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return np.clip(np.rint(images.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
  """Tiles [N,H,W,3] images into one uint8 [rows*(H+p)+p, cols*(W+p)+p, 3] grid with white padding."""
  images = to_uint8(images)
  n, h, w, c = images.shape
  columns = columns or math.ceil(math.sqrt(n))
  rows = math.ceil(n / columns)
  grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    top, left = padding + r * (h + padding), padding + col * (w + padding)
    grid[top:top + h, left:left + w] = image
  return grid


def captioned_grid(images: np.ndarray, captions: list[str], columns: int | None = None,
                   cell_width: int = 192, text_lines: int = 5) -> np.ndarray:
  """A grid where every image (upscaled to `cell_width`, nearest) has its caption printed below it."""
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  import textwrap  # pylint: disable=g-import-not-at-top

  images = to_uint8(images)
  n, h, w, _ = images.shape
  columns = columns or min(n, 4)
  rows = math.ceil(n / columns)
  scale = max(1, cell_width // w)
  cw, ch = w * scale, h * scale
  font = ImageFont.load_default()
  line_h = 12
  text_h = text_lines * line_h + 4
  canvas = Image.new("RGB", (columns * (cw + 4) + 4, rows * (ch + text_h + 4) + 4), "white")
  draw = ImageDraw.Draw(canvas)
  chars = max(8, cw // 6)
  for i in range(n):
    r, col = divmod(i, columns)
    left, top = 4 + col * (cw + 4), 4 + r * (ch + text_h + 4)
    canvas.paste(Image.fromarray(images[i]).resize((cw, ch), Image.NEAREST), (left, top))
    lines = textwrap.wrap(captions[i] if i < len(captions) else "", chars)[:text_lines]
    for j, line in enumerate(lines):
      draw.text((left, top + ch + 2 + j * line_h), line, fill="black", font=font)
  return np.asarray(canvas)
