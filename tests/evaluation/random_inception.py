"""Random FID-Inception variables for tests that must not depend on the real weights."""
import jax
import numpy as np

from xmc_gan_jax.evaluation import inception


def random_inception_variables(seed: int, with_logits: bool, random_batch_norm: bool = True) -> dict:
  """He-scaled random kernels (features differ between images) and, with `random_batch_norm`, randomised BN
  statistics so that every layer's parameters matter; without it BN is the identity (larger, better-conditioned
  features)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      return (rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))).astype(np.float32)
    if not random_batch_norm:
      return np.full(leaf.shape, 1.0 if ("scale" in name or "'var'" in name) else 0.0, np.float32)
    if "'var'" in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return ((1.0 if "scale" in name else 0.0) + 0.1 * rng.normal(size=leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, inception.abstract_variables(with_logits))
