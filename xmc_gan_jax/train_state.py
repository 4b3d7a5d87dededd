"""The training state pytree and its creation under jit with its shardings.

The frozen text encoder's parameters are not part of the state: they are loaded from the BERT folder at start-up
and passed to the steps as a separate (replicated) argument, so checkpoints hold only what training changes.
"""
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from xmc_gan_jax import sharding
from xmc_gan_jax.model_factory import GANModules


@flax.struct.dataclass
class TrainState:
  """Everything training updates. Shapes follow the modules; `step` is a scalar int32 (train steps done)."""
  step: jax.Array
  g_params: Any
  g_batch_stats: Any
  d_params: Any
  d_sn_stats: Any
  ema_params: Any
  g_opt_state: Any
  d_opt_state: Any


def _init_batch_size(config: ml_collections.ConfigDict) -> int:
  return max(2, int(config.model.batch_norm_group_size))


def init_state(modules: GANModules, config: ml_collections.ConfigDict, rng: jax.Array) -> TrainState:
  """Initialises G, D, EMA and both optimizers from `rng` (pure; jit it)."""
  g_rng, d_rng = jax.random.split(rng)
  n = _init_batch_size(config)
  size, length, width = config.model.image_size, config.text_encoder.max_length, modules.text_dim
  z = jnp.zeros((n, config.model.z_dim), jnp.float32)
  sentence = jnp.zeros((n, width), jnp.float32)
  words = jnp.zeros((n, length, width), jnp.float32)
  mask = jnp.ones((n, length), jnp.int32)
  g_vars = modules.generator.init({"params": g_rng}, z, sentence, words, mask, train=False)
  images = jnp.zeros((n, size, size, 3), jnp.float32)
  d_vars = modules.discriminator.init({"params": d_rng}, images, sentence, train=False)
  g_params = g_vars["params"]
  d_params = d_vars["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      g_batch_stats=g_vars.get("batch_stats", {}),
      d_params=d_params,
      d_sn_stats=d_vars.get("spectral_norm_stats", {}),
      ema_params=jax.tree.map(jnp.copy, g_params),
      g_opt_state=modules.g_tx.init(g_params),
      d_opt_state=modules.d_tx.init(d_params),
  )


def abstract_state(modules: GANModules, config: ml_collections.ConfigDict) -> TrainState:
  """Shapes and dtypes of the state, computed without allocating it."""
  return jax.eval_shape(lambda r: init_state(modules, config, r), jax.random.key(0))


def create_state(modules: GANModules, config: ml_collections.ConfigDict, mesh: Mesh,
                 rng: jax.Array) -> tuple[TrainState, Any]:
  """Creates the state directly in its shardings (no host copy). Returns (state, state shardings)."""
  shardings = sharding.state_shardings(abstract_state(modules, config), mesh)
  state = jax.jit(lambda r: init_state(modules, config, r), out_shardings=shardings)(rng)
  return state, shardings


def count_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))
