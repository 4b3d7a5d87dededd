"""Chooses the host-batch source named by `config.dataset.name`; TensorFlow is imported only for real datasets."""
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from xmc_gan_jax.data import random_source

DEVICE_KEYS = ("image", "token_ids", "token_mask")


def local_batch_size(global_batch: int) -> int:
  if global_batch % jax.process_count():
    raise ValueError(f"batch size {global_batch} must be divisible by the process count {jax.process_count()}.")
  return global_batch // jax.process_count()


def train_source(config: ml_collections.ConfigDict, vocab_path: str, vocab_size: int,
                 start_step: int) -> Iterator[dict[str, np.ndarray]]:
  """Infinite host batches of `config.batch_size // process_count` examples, resumable at `start_step`.

  Random data: this process's rows of global batches that do not depend on the process count, laid out for the
  runtime's split into `config.optim.d_steps_per_g_step` sub-batches (see random_source)."""
  if config.dataset.name == "random":
    local_batch_size(config.batch_size)  # the process-count error of real datasets
    return random_source.RandomBatches(
        seed=config.seed, batch_size=int(config.batch_size), image_size=config.model.image_size,
        max_length=config.text_encoder.max_length, vocab_size=vocab_size, start_step=start_step,
        process_index=jax.process_index(), process_count=jax.process_count(),
        sub_batches=int(config.optim.d_steps_per_g_step))
  from xmc_gan_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.create_train_iterator(config, vocab_path, start_step=start_step)


def eval_source(config: ml_collections.ConfigDict, vocab_path: str, vocab_size: int, num_examples: int,
                batch_size: int, seed_offset: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Finite host batches from the eval split (`num_examples` in total, global); rows with `valid == 0` pad.

  Random data: process p of P gets rows [p b/P, (p+1) b/P) of global batches (b = `batch_size`) that do not
  depend on the process count."""
  if config.dataset.name == "random":
    local_batch_size(batch_size)
    steps = -(-num_examples // batch_size)
    source = random_source.RandomBatches(
        seed=config.seed + 1_000_003 + seed_offset, batch_size=int(batch_size),
        image_size=config.model.image_size, max_length=config.text_encoder.max_length, vocab_size=vocab_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    return (next(source) for _ in range(steps))
  from xmc_gan_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  return input_pipeline.create_eval_iterator(config, vocab_path, num_examples=num_examples, batch_size=batch_size,
                                            seed_offset=seed_offset)
