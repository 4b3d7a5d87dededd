"""Throughput of the training input pipeline (images/s) on this machine's CPUs, from a local TFDS/TFRecord dataset.

Writes (once, into --data_dir) a COCO-like TFDS dataset of --num_images synthetic photo-like 640x480 JPEGs
(smooth gradients, soft blobs, texture noise; JPEG quality 95: ~165 KiB each, like COCO-2014 images) with 5
captions each, then times the real training pipeline (read, shuffle, decode, resize, flip, caption choice,
tokenise, batch) at --image_size px after a warm-up: wall-clock images/s, and CPU time per image, which does not
depend on other load and scales to other core counts. Also times a resume that must skip almost one epoch.

    .venv/bin/python tools/bench_input_pipeline.py                    # 256 px, host batch 64
    .venv/bin/python tools/bench_input_pipeline.py --image_size=128 --batch_size=32
"""
import argparse
import os
import resource
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from xmc_gan_jax.data import input_pipeline as ip
from xmc_gan_jax.data import tokenizer as tokenizer_lib

_SUBJECTS = ("a man", "a woman", "two dogs", "a red bus", "a cat", "a group of people", "a kitchen", "a giraffe")
_PLACES = ("on a street", "in a field", "next to a table", "near the water", "in front of a building")


def _photo(rng: np.random.Generator, height: int = 480, width: int = 640) -> np.ndarray:
  """A photo-like uint8 [H, W, 3] image: colour gradients, a few soft blobs and fine texture noise."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  corners = rng.uniform(0, 255, size=(4, 3)).astype(np.float32)
  fy, fx = (y / height)[..., None], (x / width)[..., None]
  image = (corners[0] * (1 - fy) * (1 - fx) + corners[1] * (1 - fy) * fx + corners[2] * fy * (1 - fx)
           + corners[3] * fy * fx)
  for _ in range(int(rng.integers(3, 8))):
    cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(20, 160)
    weight = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))[..., None]
    image = image * (1 - weight) + rng.uniform(0, 255, size=3).astype(np.float32) * weight
  image += rng.normal(0, 12, size=image.shape).astype(np.float32)
  return np.clip(image, 0, 255).astype(np.uint8)


def _captions(rng: np.random.Generator) -> list[str]:
  return [f"{rng.choice(_SUBJECTS)} {rng.choice(['standing', 'sitting', 'walking'])} {rng.choice(_PLACES)}"
          for _ in range(5)]


def write_dataset(data_dir: str, num_images: int, seed: int = 0):
  """A prepared TFDS builder `bench_photos` (train split) with image (JPEG bytes), image/id and captions."""
  rng = np.random.default_rng(seed)
  jpegs, captions = [], []
  for _ in range(num_images):
    jpegs.append(tf.io.encode_jpeg(_photo(rng), quality=95).numpy())
    captions.append(_captions(rng))
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": jpegs, "image/id": np.arange(num_images, dtype=np.int64), "captions": captions})
  builder = tfds.dataset_builders.TfDataBuilder(
      name="bench_photos", version="1.0.0", data_dir=data_dir, split_datasets={"train": ds},
      features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "image/id": tfds.features.Scalar(dtype=np.int64),
          "captions": tfds.features.Sequence(tfds.features.Text())}))
  builder.download_and_prepare()
  print(f"dataset: {num_images} JPEGs, mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB, in {data_dir}")
  return builder


def _spec() -> ip.DatasetSpec:
  decoders = tfds.decode.PartialDecoding({"image": True, "image/id": True, "captions": True},
                                         decoders={"image": tfds.decode.SkipDecoding()})
  return ip.DatasetSpec("bench_photos", decoders, lambda ex: {
      "image": ex["image"], "captions": ex["captions"], "image_id": tf.strings.as_string(ex["image/id"])})


def _cpu_seconds() -> float:
  """User + system CPU time of this process, all threads (tf.data's included)."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "xmc_bench_tfds"))
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=64, help="process-local batch")
  parser.add_argument("--max_length", type=int, default=17)
  parser.add_argument("--warmup_batches", type=int, default=4)
  parser.add_argument("--batches", type=int, default=24)
  args = parser.parse_args()

  affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  print(f"cores: os.cpu_count()={os.cpu_count()}, usable by this process={affinity}")
  prepared = os.path.join(args.data_dir, "bench_photos", "1.0.0")
  builder = None
  if tf.io.gfile.exists(os.path.join(prepared, "dataset_info.json")):
    builder = tfds.builder_from_directory(prepared)
    if builder.info.splits["train"].num_examples != args.num_images:
      tf.io.gfile.rmtree(prepared)
      builder = None
  if builder is None:
    builder = write_dataset(args.data_dir, args.num_images)
  records, num_records = ip.read_records(builder, _spec(), "train", 0, 1)
  tokenizer = tokenizer_lib.BertTextTokenizer(tokenizer_lib.default_vocab_path(), args.max_length)
  settings = ip.PipelineSettings(batch_size=args.batch_size, image_size=args.image_size, seed=0)

  iterator = ip.DataIterator(ip.train_dataset(records, num_records, settings, tokenizer), "bench")
  for _ in range(args.warmup_batches):
    next(iterator)
  start, cpu_start = time.perf_counter(), _cpu_seconds()
  for _ in range(args.batches):
    batch = next(iterator)
  elapsed, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
  images = args.batches * args.batch_size
  print(f"train pipeline at {args.image_size} px, batch {args.batch_size}: {images / elapsed:.0f} images/s "
        f"({elapsed / args.batches * 1000:.0f} ms/batch over {args.batches} batches; image "
        f"{batch['image'].shape} {batch['image'].dtype})")
  print(f"CPU time: {cpu / images * 1000:.2f} ms per image (all threads), i.e. about "
        f"{images / cpu:.0f} images/s per fully used core; load average now {os.getloadavg()[0]:.1f}")

  steps_per_epoch = num_records // args.batch_size
  start = time.perf_counter()
  resumed = ip.DataIterator(ip.train_dataset(records, num_records, settings, tokenizer,
                                             start_step=steps_per_epoch - 1), "bench")
  next(resumed)
  skipped = (steps_per_epoch - 1) * args.batch_size
  print(f"resume at step {steps_per_epoch - 1} (skips {skipped} examples): first batch after "
        f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  main()
