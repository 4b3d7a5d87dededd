"""Eval batches shaped like the captioned-shapes pipeline's, built from rendered scenes (no TFDS)."""
import numpy as np

from xmc_gan_jax.data import shapes_scene


def shapes_batches(scenes, images, batch_size):
  """Eval batches like the shapes pipeline: objects/*, num_objects, caption, valid (padding rows at the end)."""
  n = len(scenes)
  padded = -(-n // batch_size) * batch_size
  objects = shapes_scene.pad_objects(scenes)
  for start in range(0, padded, batch_size):
    rows = np.arange(start, start + batch_size)
    real = rows < n
    safe = np.where(real, rows, 0)
    ids = np.zeros((batch_size, 12), np.int32)
    ids[:, 0], ids[:, 1], ids[:, 2] = 101, safe, 102
    batch = {"image": np.where(real[:, None, None, None], images[safe], 0).astype(np.uint8),
             "token_ids": ids, "token_mask": np.broadcast_to(np.arange(12) < 3, ids.shape).astype(np.int32),
             "caption": np.array([f"scene {i}".encode() if ok else b"" for i, ok in zip(safe, real)]),
             "valid": real.astype(np.int32)}
    for key, value in objects.items():
      batch[key] = np.where(real.reshape((-1,) + (1,) * (value.ndim - 1)), value[safe], 0).astype(np.int32)
    yield batch
