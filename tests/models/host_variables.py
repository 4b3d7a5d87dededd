"""Model variables filled on the host, shaped like `module.init(..., train=False)` (no initialiser compiles)."""
import jax
import jax.numpy as jnp
import numpy as np


def host_variables(module, *args, seed: int = 0):
  """N(0, 1/fan_in) kernels, zero biases, N(0, 1) spectral-norm vectors `u`, fresh BN statistics (var 1, mean 0).

  Compiling the real initialisers is slow on CPU; the modules' own init is covered by their `test_init_values`.
  """
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, train=False))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])), leaf.dtype)
    if name == "u":
      return jnp.asarray(rng.normal(size=leaf.shape), leaf.dtype)
    return (jnp.ones if name == "var" else jnp.zeros)(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)
