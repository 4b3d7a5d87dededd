"""A TensorFlow-free random data source with the batch contract of DESIGN.md §5 (tests, benchmarks, GPU checks).

Batch at step s is a pure function of (seed, s, process index), so a resumed run sees the same batches.
"""
from collections.abc import Iterator

import numpy as np

CLS_ID, SEP_ID = 101, 102
_FIRST_WORDPIECE = 1000   # skip [PAD]/[unused]/[CLS]/[SEP]/[MASK] in BERT vocabularies


def random_batch(seed: int, step: int, batch_size: int, image_size: int, max_length: int, vocab_size: int,
                 process_index: int = 0) -> dict[str, np.ndarray]:
  """One host batch: `image` uint8 [B,S,S,3]; `token_ids`/`token_mask` int32 [B,T] ([CLS] words [SEP], 0-pad)."""
  rng = np.random.default_rng([seed, step, process_index])
  # Smooth colour fields rather than white noise: closer to images, still cheap.
  coarse = rng.integers(0, 256, size=(batch_size, 4, 4, 3), dtype=np.uint8)
  image = np.repeat(np.repeat(coarse, -(-image_size // 4), axis=1), -(-image_size // 4), axis=2)
  image = image[:, :image_size, :image_size]
  lengths = rng.integers(3, max_length + 1, size=batch_size)  # includes [CLS] and [SEP]
  positions = np.arange(max_length)[None, :]
  token_mask = (positions < lengths[:, None]).astype(np.int32)
  words = rng.integers(_FIRST_WORDPIECE, vocab_size, size=(batch_size, max_length))
  token_ids = np.where(token_mask == 1, words, 0)
  token_ids[:, 0] = CLS_ID
  token_ids[np.arange(batch_size), lengths - 1] = SEP_ID
  return {"image": np.ascontiguousarray(image), "token_ids": token_ids.astype(np.int32), "token_mask": token_mask}


class RandomBatches(Iterator):
  """Infinite iterator of `random_batch`es starting at `start_step`."""

  def __init__(self, seed: int, batch_size: int, image_size: int, max_length: int, vocab_size: int,
               start_step: int = 0, process_index: int = 0):
    self._args = dict(seed=seed, batch_size=batch_size, image_size=image_size, max_length=max_length,
                      vocab_size=vocab_size, process_index=process_index)
    self._step = start_step

  def __next__(self) -> dict[str, np.ndarray]:
    batch = random_batch(step=self._step, **self._args)
    self._step += 1
    return batch

  def stats(self) -> dict[str, int]:
    return {}
