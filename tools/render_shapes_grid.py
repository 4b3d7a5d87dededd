"""Writes a PNG grid of captioned-shapes examples with their captions, to look at the dataset.

    python tools/render_shapes_grid.py --image_size=32 --num=16 --out=shapes_grid.png

Examples are exactly those of the TFDS builder (`shapes_builder.generate_example`) for the given seed and split;
each tile shows the image (upscaled with nearest neighbours) and its first `--captions` captions.
"""
import argparse
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xmc_gan_jax.data import shapes_builder


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow without FreeType: fixed bitmap font
    return ImageFont.load_default()


def render_grid(examples: list[dict], columns: int, tile_px: int, num_captions: int) -> Image.Image:
  """One tile per example: the image scaled to `tile_px` on top, its captions wrapped below."""
  font = _font(11)
  wrap = max(tile_px // 6, 20)  # ~6 px per character at size 11
  texts = ["\n".join(line for caption in ex["captions"][:num_captions]
                     for line in textwrap.wrap("- " + caption, wrap)) for ex in examples]
  line_height = 13
  text_px = line_height * max(t.count("\n") + 1 for t in texts) + 6
  rows = -(-len(examples) // columns)
  pad = 6
  grid = Image.new("RGB", (columns * (tile_px + pad) + pad, rows * (tile_px + text_px + pad) + pad), "white")
  draw = ImageDraw.Draw(grid)
  for k, (ex, text) in enumerate(zip(examples, texts)):
    x = pad + (k % columns) * (tile_px + pad)
    y = pad + (k // columns) * (tile_px + text_px + pad)
    grid.paste(Image.fromarray(ex["image"]).resize((tile_px, tile_px), Image.NEAREST), (x, y))
    draw.multiline_text((x, y + tile_px + 3), text, fill="black", font=font, spacing=2)
  return grid


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--num", type=int, default=16, help="examples to show")
  parser.add_argument("--columns", type=int, default=4)
  parser.add_argument("--tile_px", type=int, default=192, help="displayed size of each image")
  parser.add_argument("--captions", type=int, default=2, help="captions shown per example")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default="train", choices=["train", "validation"])
  parser.add_argument("--out", default="shapes_grid.png")
  args = parser.parse_args()
  config = shapes_builder.make_config(args.image_size, num_train=args.num, num_validation=args.num, seed=args.seed)
  examples = [shapes_builder.generate_example(config, args.split, i) for i in range(args.num)]
  render_grid(examples, args.columns, args.tile_px, args.captions).save(args.out)
  counts = np.bincount([len(ex["objects"]["color"]) for ex in examples], minlength=4)[1:]
  print(f"wrote {args.out}: {args.num} examples at {args.image_size} px; objects per image 1/2/3: {counts}")


if __name__ == "__main__":
  main()
